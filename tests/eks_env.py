"""A reusable EKS test world: moto (server mode) + the fake Kubernetes API + daemons configured for them.

Use from a test module::

    from tests.eks_env import eks_world, EksWorld, eks_daemon, leftovers

    @pytest.fixture(scope="module", autouse=True)
    def world():
        with eks_world() as w:          # moto, the fake, a launch template and a provisioner role
            yield w

    def test_something(world, recc_dirs):
        d = eks_daemon(world, recc_dirs)                   # a started tests.harness.Daemon
        try:
            ...                                            # d.client(), d.env (for subprocesses)
        finally:
            d.cleanup()
        assert leftovers(world, user=USER) == EMPTY

The fake runs in this process (a thread), so pod processes are children of the test process
and the leak check sees them; start `eks_world` from a module-scoped autouse fixture (it is set
up before the first test's leak snapshot). The daemon is a real ``reccd`` subprocess whose
environment points boto3 at moto (``AWS_ENDPOINT_URL``, static ``testing`` keys) and whose
``config.yaml`` has EKS contexts pointing at moto and the fake (``kubernetes_api_url``).
"""

from __future__ import annotations

import getpass
import json
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import boto3
import yaml

from recc import manifests as M
from tests.fakekube import FakeKube, make_token
from tests.harness import Daemon
from tests.servers import moto_and_kube

CLUSTER = "research-eks"
REGION = "us-east-1"
AWS = dict(region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
USER = getpass.getuser()  # the daemon's user: namespaces are recc-<USER>-<cluster>
EMPTY = {"groups": [], "instances": [], "namespaces": [], "templates": []}
# environment for anything that talks to moto (the daemon, boto3 in the test)
AWS_ENV = {"AWS_ENDPOINT_URL": "", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": REGION}


@dataclass
class EksWorld:
    """What `eks_world` started: moto's URL, the fake (in this process), its URL, the context's role and template."""

    moto_url: str
    fake: FakeKube
    url: str
    role_arn: str
    template: str

    def aws_env(self) -> dict[str, str]:
        return dict(AWS_ENV, AWS_ENDPOINT_URL=self.moto_url)

    def context(self, **overrides: Any) -> dict[str, Any]:
        """Settings of one context (a ``contexts:`` entry) pointing at moto and the fake."""
        base: dict[str, Any] = {
            "region": REGION, "eks_cluster": CLUSTER, "kubernetes_api_url": self.url,
            "provisioner_role_arn": self.role_arn, "launch_template_name": self.template,
            "availability_zones": [f"{REGION}a"], "max_nodes": 3, "route": "portforward",
            "timeouts": {"capacity": 60, "workers": 120}}
        base.update(overrides)
        return base

    def boto(self, service: str) -> Any:
        return boto(self.moto_url, service)

    def kube(self) -> Any:
        """An ApiClient on the fake (a context manager's ApiClient is closed by the caller: use `namespaces`)."""
        return kube(self.url)

    def namespaces(self, prefix: str = "recc-") -> list[str]:
        from kubernetes import client as k8s

        with self.kube() as c:
            return sorted(n.metadata.name for n in k8s.CoreV1Api(c).list_namespace().items
                          if n.metadata.name.startswith(prefix))


_clients: dict[tuple[str, str], Any] = {}
_clients_lock = threading.Lock()


def boto(moto_url: str, service: str) -> Any:
    """A boto3 client of ``service`` on moto at ``moto_url``, made once and shared (boto3 clients are
    thread-safe once made; making one costs ~0.1-0.3 s of CPU, which every leftovers check paid twice)."""
    key = (moto_url, service)
    with _clients_lock:  # making clients (a shared default session) is not thread-safe
        made = _clients.get(key)
        if made is None:
            made = _clients[key] = boto3.session.Session().client(service, endpoint_url=moto_url, **AWS)
    return made


def kube(url: str) -> Any:
    """A Kubernetes ApiClient on the fake at ``url`` with a fresh EKS token (close it: ``with kube(url) as c``)."""
    from kubernetes import client as k8s

    cfg = k8s.Configuration(host=url)
    cfg.api_key = {"authorization": "Bearer " + make_token(CLUSTER, boto3.Session(**AWS))}
    return k8s.ApiClient(cfg)


def read_lease(url: str, namespace: str) -> Any:
    """The namespace's heartbeat Lease (a V1Lease), or None when it has none."""
    from kubernetes import client as k8s

    with kube(url) as c:
        try:
            return k8s.CoordinationV1Api(c).read_namespaced_lease(M.HEARTBEAT_LEASE, namespace)
        except k8s.ApiException:
            return None


def create_lease(url: str, names: M.Names, holder: str, ttl: float) -> None:
    """A heartbeat Lease of ``names``' namespace renewed now for ``ttl`` seconds, as a daemon's heartbeat makes it."""
    from kubernetes import client as k8s

    now = time.strftime("%Y-%m-%dT%H:%M:%S.123456Z", time.gmtime())
    with kube(url) as c:
        k8s.CoordinationV1Api(c).create_namespaced_lease(names.namespace, M.heartbeat_lease(names, holder, ttl, now))


def setup_aws(moto_url: str) -> tuple[str, str]:
    """The context's launch template and provisioner role, made in moto: (role ARN, template name)."""
    ec2 = boto3.client("ec2", endpoint_url=moto_url, **AWS)
    template = f"nodes-{uuid.uuid4().hex[:8]}"
    ec2.create_launch_template(LaunchTemplateName=template,
                               LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "m5.large"})
    iam = boto3.client("iam", endpoint_url=moto_url, **AWS)
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"},
                                                     "Action": ["sts:AssumeRole", "sts:TagSession"]}]}
    role = iam.create_role(RoleName=f"recc-provisioner-{uuid.uuid4().hex[:8]}",
                           AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    return role["Arn"], template


@contextmanager
def eks_world() -> Iterator[EksWorld]:
    """moto + the fake Kubernetes API (in this process) + a launch template and a provisioner role."""
    with moto_and_kube(CLUSTER, REGION) as (moto_url, fake, url):
        role_arn, template = setup_aws(moto_url)
        yield EksWorld(moto_url, fake, url, role_arn, template)


def write_contexts(dirs: dict[str, str], contexts: dict[str, dict[str, Any]], **settings: Any) -> Path:
    """``config.yaml`` in the daemon's config folder with these ``contexts:`` (and other settings)."""
    folder = Path(dirs["RECC_CONFIG_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({"contexts": contexts, **settings}))
    return path


def eks_daemon(world: EksWorld, dirs: dict[str, str], contexts: dict[str, dict[str, Any]] | None = None,
               start: bool = True, **env: str) -> Daemon:
    """A `Daemon` whose environment points at moto and whose config.yaml has EKS contexts.

    ``contexts`` defaults to ``{"adhoc": world.context()}`` (``adhoc`` is the default context);
    ``env`` adds to the daemon's environment (e.g. ``RECC_CONTEXT``, ``RECC_FAULT``). The same
    environment (``d.env``) is what a library or CLI subprocess should run with.
    """
    write_contexts(dirs, contexts if contexts is not None else {"adhoc": world.context()})
    d = Daemon(dirs)
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "RECC_CONTEXT", "RECC_JOB_ID", "RECC_FAULT"):
        d.env.pop(var, None)
    # no warm spare interpreters for the local provider: these daemons make EKS clusters only
    d.env.update(world.aws_env(), RECC_HEARTBEAT_INTERVAL="1", RECC_LOCAL_SPARES="0", **env)
    return d.start() if start else d


def namespace_leftovers(moto_url: str, url: str, namespace: str) -> dict[str, list[str]]:
    """Everything of ``namespace`` that still exists (and could cost money): its groups, pending or running
    instances and launch templates (by tag ``recc:namespace``) and the namespace itself."""
    asg, ec2 = boto(moto_url, "autoscaling"), boto(moto_url, "ec2")
    groups = [g["AutoScalingGroupName"] for g in asg.describe_auto_scaling_groups()["AutoScalingGroups"]
              if any(t["Key"] == "recc:namespace" and t["Value"] == namespace for t in g.get("Tags", []))]
    running = [i["InstanceId"] for r in ec2.describe_instances(
        Filters=[{"Name": "tag:recc:namespace", "Values": [namespace]},
                 {"Name": "instance-state-name", "Values": ["pending", "running"]}])["Reservations"]
        for i in r["Instances"]]
    templates = [t["LaunchTemplateName"] for t in ec2.describe_launch_templates(
        Filters=[{"Name": "tag:recc:namespace", "Values": [namespace]}])["LaunchTemplates"]]
    from kubernetes import client as k8s

    with kube(url) as c:
        namespaces = [n.metadata.name for n in k8s.CoreV1Api(c).list_namespace().items if n.metadata.name == namespace]
    return {"groups": groups, "instances": running, "namespaces": namespaces, "templates": templates}


def leftovers(world: EksWorld, namespace: str | None = None, user: str = USER) -> dict[str, list[str]]:
    """RECC's AWS resources and namespaces still there: of one namespace, or of every cluster of ``user``.

    Groups, instances and launch templates are found by tag (``recc:namespace`` / ``recc:user``),
    namespaces by listing the fake's (only pending or running instances count).
    """
    key, value = ("recc:namespace", namespace) if namespace else ("recc:user", user)
    asg, ec2 = world.boto("autoscaling"), world.boto("ec2")
    groups = [g["AutoScalingGroupName"] for g in asg.describe_auto_scaling_groups()["AutoScalingGroups"]
              if any(t["Key"] == key and t["Value"] == value for t in g.get("Tags", []))]
    running = [i["InstanceId"] for r in ec2.describe_instances(
        Filters=[{"Name": f"tag:{key}", "Values": [value]},
                 {"Name": "instance-state-name", "Values": ["pending", "running"]}])["Reservations"]
        for i in r["Instances"]]
    prefix = namespace or M.namespace_name(user, "x")[:-1]
    namespaces = [n for n in world.namespaces(prefix) if namespace is None or n == namespace]
    templates = [t["LaunchTemplateName"] for t in ec2.describe_launch_templates(
        Filters=[{"Name": f"tag:{key}", "Values": [value]}])["LaunchTemplates"]]
    return {"groups": groups, "instances": running, "namespaces": namespaces, "templates": templates}
