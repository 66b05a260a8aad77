"""Expert access: ``recc kubeconfig NAME`` and its exec plugin ``recc eks-token`` (docs/eks-operations.md).

The kubeconfig names the EKS API server, its CA, and the cluster's namespace as the context's
default namespace; its credentials come from ``recc eks-token``, which prints an ExecCredential
with an EKS token made from *your own* AWS identity (profile or standard chain), not the
provisioner role: what you may do is what your access entry's Kubernetes group may do, which
RECC binds only inside your clusters' namespaces (the ``recc-user`` Role).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from recc import manifests as M
from recc.errors import run_for_a_person
from recc.paths import data_dir

EXEC_API = "client.authentication.k8s.io/v1beta1"


def exec_credential(token: str, expires_at: float, api_version: str = EXEC_API) -> dict[str, Any]:
    """What ``aws eks get-token`` prints: the token and when to ask again (UTC, seconds)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires_at))
    return {"kind": "ExecCredential", "apiVersion": api_version, "spec": {},
            "status": {"expirationTimestamp": stamp, "token": token}}


def _exec_api_version() -> str:
    # kubectl passes the version it wants in KUBERNETES_EXEC_INFO (v1 and v1beta1 are both current)
    try:
        return json.loads(os.environ.get("KUBERNETES_EXEC_INFO", "{}")).get("apiVersion") or EXEC_API
    except ValueError:
        return EXEC_API


def eks_token(cluster: str, region: str | None, profile: str | None = None, role_arn: str | None = None) -> dict:
    import boto3
    import getpass

    from reccd.ekstoken import assume_provisioner, make_token

    session = boto3.Session(profile_name=profile, region_name=region)
    if role_arn:
        session = assume_provisioner(session, role_arn, getpass.getuser(), region=region)
    token, expires = make_token(session, cluster, region=region)
    return exec_credential(token, expires, _exec_api_version())


def recc_command() -> list[str]:
    """How a kubeconfig's exec plugin runs ``recc`` (an absolute path: kubectl's PATH may lack the venv)."""
    beside = Path(sys.executable).parent / "recc"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("recc")
    return [found] if found else [sys.executable, "-m", "recc.cli"]


def kubeconfig(*, cluster_name: str, server: str, namespace: str, region: str, ca_data: str | None = None,
               insecure: bool = False, profile: str | None = None, command: list[str] | None = None) -> dict:
    """A kubeconfig for one namespace, credentials from ``recc eks-token`` (pure)."""
    command = command or ["recc"]
    args = [*command[1:], "eks-token", "--cluster-name", cluster_name, "--region", region]
    if profile:
        args += ["--profile", profile]
    cluster: dict[str, Any] = {"server": server}
    if ca_data:
        cluster["certificate-authority-data"] = ca_data
    if insecure:
        cluster["insecure-skip-tls-verify"] = True
    name = f"recc-{namespace}"
    return {"apiVersion": "v1", "kind": "Config", "current-context": name, "preferences": {},
            "clusters": [{"name": cluster_name, "cluster": cluster}],
            "users": [{"name": name, "user": {"exec": {"apiVersion": EXEC_API, "command": command[0], "args": args,
                                                       "interactiveMode": "Never", "provideClusterInfo": False}}}],
            "contexts": [{"name": name, "context": {"cluster": cluster_name, "user": name, "namespace": namespace}}]}


def write_kubeconfig(name: str, context_name: str | None, output: str | None, user: str | None) -> Path:
    import getpass

    from reccd.contexts import load_context
    from reccd.providers.eks.apis import EksApis

    ctx = load_context(context_name)
    ctx.require("eks_cluster")
    namespace = M.namespace_name(user or getpass.getuser(), name)
    server, ca_data = ctx.kubernetes_api_url, None
    if ctx.kubernetes_ca_file:
        ca_data = base64.b64encode(Path(ctx.kubernetes_ca_file).read_bytes()).decode()
    if not server or (not ca_data and ctx.kubernetes_verify_ssl and server.startswith("https")):
        info = EksApis(None, ctx).client("eks").describe_cluster(name=ctx.eks_cluster)["cluster"]
        server = server or info["endpoint"]
        ca_data = ca_data or (info.get("certificateAuthority") or {}).get("data")
    doc = kubeconfig(cluster_name=ctx.eks_cluster, server=server, namespace=namespace, region=ctx.region,  # type: ignore[arg-type]
                     ca_data=ca_data, insecure=not ctx.kubernetes_verify_ssl, profile=ctx.profile,
                     command=recc_command())
    path = Path(output) if output else data_dir() / "kubeconfig" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it names a server and how to log in
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recc")
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("kubeconfig")
    p.add_argument("name")
    p.add_argument("--context")
    p.add_argument("--output", "-o")
    p.add_argument("--user")
    p = sub.add_parser("eks-token")
    p.add_argument("--cluster-name", required=True)
    p.add_argument("--region")
    p.add_argument("--profile")
    p.add_argument("--role-arn")
    args = parser.parse_args(argv)

    def run() -> int:
        if args.what == "eks-token":
            print(json.dumps(eks_token(args.cluster_name, args.region, args.profile, args.role_arn)))
            return 0
        path = write_kubeconfig(args.name, args.context, args.output, args.user)
        print(f"wrote {path}\n  export KUBECONFIG={path}    # then: kubectl get pods")
        return 0

    return run_for_a_person(run)


if __name__ == "__main__":
    sys.exit(main())
