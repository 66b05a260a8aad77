"""Helpers for the EKS operations tests (reaper, orphans, exact costs, kubeconfig, data from pods):
moto + the fake Kubernetes API, a context written to config.yaml as a user (or the reaper's
ConfigMap) would, and what a namespace left behind in AWS and Kubernetes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests import eks_env

CLUSTER = "research-eks"
REGION = "us-east-1"
AWS = dict(region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
USER = "arathe"
ROOT = Path(__file__).resolve().parent.parent


def setup_aws(moto_url: str) -> dict[str, str]:
    """The context's launch template and provisioner role, made in moto (`tests.eks_env.setup_aws`)."""
    role_arn, template = eks_env.setup_aws(moto_url)
    return {"role_arn": role_arn, "template": template}


def context_settings(url: str, aws: dict[str, str], **kw: Any) -> dict[str, Any]:
    """A context block as in config.yaml."""
    base = {"region": REGION, "eks_cluster": CLUSTER, "kubernetes_api_url": url,
            "provisioner_role_arn": aws["role_arn"], "launch_template_name": aws["template"],
            "availability_zones": [f"{REGION}a"], "max_nodes": 3, "timeouts": {"capacity": 60, "workers": 120}}
    base.update(kw)
    return base


def write_config(folder: Path, name: str, settings: dict[str, Any], **extra: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"contexts": {name: settings}, **extra}))
    return folder


def use_aws(monkeypatch, moto_url: str, tmp_path: Path) -> None:
    """This process and its children talk to moto, with their own RECC folders."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "RECC_CONTEXT", "RECC_JOB_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RECC_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("RECC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RECC_RUNTIME_DIR", str(tmp_path / "run"))
    for var in ("LOGNAME", "USER"):  # getpass.getuser(): the commands act as the test's user
        monkeypatch.setenv(var, USER)


def recc(*argv: str, timeout: float = 240, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    """``recc ARGS`` as a person (or the CronJob) runs it."""
    done = subprocess.run([sys.executable, "-m", "recc.cli", *argv], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, input=input)
    if check and done.returncode != 0:
        raise AssertionError(f"recc {' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


# shared with the daemon-level EKS tests (tests/eks_env.py): a Kubernetes client on the fake, and what a
# namespace left behind (its clients are made once)
kube = eks_env.kube
leftovers = eks_env.namespace_leftovers


NOTHING = {"groups": [], "instances": [], "namespaces": [], "templates": []}
