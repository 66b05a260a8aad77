"""The fake Kubernetes API server (tests/fakekube), driven only through the official
``kubernetes`` client and boto3 against a moto server."""

from __future__ import annotations

import base64
import json
import socket
import sys
import time
import urllib.request
import uuid
from types import SimpleNamespace

import boto3
import psutil
import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException
from kubernetes.stream import portforward

from recc.catalog import load_catalog
from recc.plan import allocatable
from tests.fakekube import FakeKubeProcess, make_token
from tests.servers import moto_and_kube

CLUSTER = "research-eks"
REGION = "us-east-1"
AWS = dict(region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
PY = sys.executable


# ---- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def servers():
    """moto and the fake, started before the first test's leak snapshot, stopped at the end."""
    with moto_and_kube(CLUSTER, REGION) as (moto_url, fake, url):
        yield SimpleNamespace(moto_url=moto_url, fake=fake, url=url)


def session() -> boto3.Session:
    return boto3.Session(**AWS)


def k8s_client(url: str, token: str | None) -> client.ApiClient:
    cfg = client.Configuration(host=url)
    if token is not None:
        cfg.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(cfg)


@pytest.fixture(scope="module")
def api(servers):
    c = k8s_client(servers.url, make_token(CLUSTER, session()))
    return SimpleNamespace(client=c, core=client.CoreV1Api(c), apps=client.AppsV1Api(c),
                           coord=client.CoordinationV1Api(c), rbac=client.RbacAuthorizationV1Api(c),
                           net=client.NetworkingV1Api(c))


@pytest.fixture(scope="module")
def aws(servers):
    return SimpleNamespace(ec2=boto3.client("ec2", endpoint_url=servers.moto_url, **AWS),
                           asg=boto3.client("autoscaling", endpoint_url=servers.moto_url, **AWS))


def make_group(aws, name: str, instance_type: str, count: int, labels: dict, taints: dict | None = None) -> None:
    template = f"lt-{name}"
    aws.ec2.create_launch_template(LaunchTemplateName=template,
                                   LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": instance_type})
    prefix = "k8s.io/cluster-autoscaler/node-template/"
    tags = {"recc:managed": "true", "recc:cluster": name, f"kubernetes.io/cluster/{CLUSTER}": "owned"}
    tags.update({f"{prefix}label/{k}": v for k, v in labels.items()})
    tags.update({f"{prefix}taint/{k}": v for k, v in (taints or {}).items()})
    aws.asg.create_auto_scaling_group(
        AutoScalingGroupName=name, LaunchTemplate={"LaunchTemplateName": template, "Version": "$Latest"},
        MinSize=0, MaxSize=count, DesiredCapacity=count, AvailabilityZones=[f"{REGION}a"],
        Tags=[{"Key": k, "Value": v, "PropagateAtLaunch": True, "ResourceId": name,
               "ResourceType": "auto-scaling-group"} for k, v in tags.items()])


def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def pool(servers, api, aws):
    """Two t3.xlarge nodes labelled recc/pool=work, from an Auto Scaling group in moto."""
    make_group(aws, "recc-pool-work", "t3.xlarge", 2, {"recc/pool": "work"})
    servers.fake.sync_nodes()
    return wait_for(lambda: [n for n in api.core.list_node(label_selector="recc/pool=work").items] or None,
                    what="pool nodes")


@pytest.fixture
def ns(api):
    """A fresh namespace, deleted (and waited for, so its pod processes are gone) afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    api.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    try:
        api.core.delete_namespace(name)
    except ApiException:
        pass
    wait_for(lambda: not any(n.metadata.name == name for n in api.core.list_namespace().items), 20,
             f"namespace {name} to go")


def status_of(exc: ApiException) -> dict:
    return json.loads(exc.body)


def raw_get(url: str, path: str) -> dict:
    """The JSON exactly as the server wrote it (the client's models would parse the times)."""
    req = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {make_token(CLUSTER, session())}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def pod_of(api, ns: str, selector: str, phase: str = "Running", count: int = 1):
    def ready():
        pods = api.core.list_namespaced_pod(ns, label_selector=selector).items
        pods = [p for p in pods if p.status.phase == phase and not p.metadata.deletion_timestamp]
        return pods if len(pods) == count else None
    return wait_for(ready, what=f"{count} {phase} pod(s) {selector}")


def logs_with(api, ns: str, pod: str, text: str) -> str:
    def read():
        try:
            log = api.core.read_namespaced_pod_log(pod, ns)
        except ApiException as exc:   # 400 while the container is waiting to start
            assert exc.status == 400, exc
            return None
        return text in log and log
    return wait_for(read, what=f"{text!r} in the log of {pod}")


def deployment(name: str, command: list[str], *, replicas: int = 1, env=None, mounts=None, volumes=None,
               resources=None, ports=None) -> client.V1Deployment:
    container = client.V1Container(name="main", image="python:3.11", command=command, env=env,
                                   volume_mounts=mounts, resources=resources, ports=ports)
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=replicas, selector=client.V1LabelSelector(match_labels={"app": name}),
            template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels={"app": name}),
                                              spec=client.V1PodSpec(containers=[container], volumes=volumes))))


# ---- authentication and discovery --------------------------------------------------------------
def test_discovery(api):
    assert client.VersionApi(api.client).get_code().git_version.startswith("v1.")
    groups = {g.name for g in client.ApisApi(api.client).get_api_versions().groups}
    assert {"apps", "coordination.k8s.io", "rbac.authorization.k8s.io", "networking.k8s.io"} <= groups
    core = {r.name for r in api.core.get_api_resources().resources}
    assert {"pods", "pods/log", "pods/portforward", "secrets", "nodes", "namespaces"} <= core
    assert "deployments/scale" in {r.name for r in api.apps.get_api_resources().resources}
    assert client.CoreApi(api.client).get_api_versions().versions == ["v1"]


def test_token_accepted_expired_and_malformed(servers, api):
    core = api.core
    assert core.list_namespace().items
    good = make_token(CLUSTER, session())
    url = base64.urlsafe_b64decode(good[len("k8s-aws-v1."):] + "==").decode()
    assert "x-k8s-aws-id" in url and url.startswith("https://sts.us-east-1.amazonaws.com/")

    def status_with(token):
        try:
            client.CoreV1Api(k8s_client(servers.url, token)).list_namespace()
        except ApiException as exc:
            return exc.status, status_of(exc)
        return 200, None

    encode = lambda u: "k8s-aws-v1." + base64.urlsafe_b64encode(u.encode()).decode().rstrip("=")  # noqa: E731
    bad = {
        "missing": None,
        "no prefix": "abc",
        "not base64url": "k8s-aws-v1.!!!",
        "padded": good + "==",
        "http scheme": encode(url.replace("https://", "http://")),
        "not sts": encode(url.replace("sts.us-east-1.amazonaws.com", "127.0.0.1:1")),
        "other action": encode(url.replace("Action=GetCallerIdentity", "Action=GetSessionToken")),
        "extra key": encode(url + "&Foo=bar"),
        "expires too long": encode(url.replace("X-Amz-Expires=60", "X-Amz-Expires=901")),
        "header not signed": encode(url.replace("host%3Bx-k8s-aws-id", "host")),
        "other cluster": make_token("another-cluster", session()),
        "too long": "k8s-aws-v1." + "A" * 5000,
    }
    for what, token in bad.items():
        code, body = status_with(token)
        assert code == 401, what
        assert body["kind"] == "Status" and body["reason"] == "Unauthorized" and body["code"] == 401, what
    # Expiry follows the fake's injectable clock: 15 minutes after X-Amz-Date.
    servers.fake.clock.advance(14 * 60)
    try:
        assert status_with(good)[0] == 200
        servers.fake.clock.advance(2 * 60)
        code, body = status_with(good)
        assert code == 401 and "expired" in body["message"]
    finally:
        servers.fake.clock.set_offset(0)
    assert status_with(good)[0] == 200
    # expire_tokens: the tokens made so far are refused, a token made later works (what a test of
    # "the client refreshes its token after a 401" needs; advancing the clock would refuse both).
    servers.fake.expire_tokens()
    try:
        code, body = status_with(good)
        assert code == 401 and "expired" in body["message"]
        time.sleep(1.05)   # X-Amz-Date has whole seconds
        assert status_with(make_token(CLUSTER, session()))[0] == 200
    finally:
        servers.fake.verifier.not_before = None   # the module's client keeps its token


def test_subprocess_mode(servers):
    with FakeKubeProcess(cluster_name="sub-cluster", moto_endpoint=servers.moto_url) as fake:
        assert fake.url.startswith("http://127.0.0.1:")
        c = k8s_client(fake.url, make_token("sub-cluster", session()))
        assert "default" in {n.metadata.name for n in client.CoreV1Api(c).list_namespace().items}
        assert fake.control("clock", {"advance_seconds": 3600})["clock_offset_seconds"] == 3600
        with pytest.raises(ApiException) as err:
            client.CoreV1Api(c).list_namespace()
        assert err.value.status == 401


# ---- objects ----------------------------------------------------------------------------------
def test_namespace_secret_configmap_crud(api, ns):
    core = api.core
    assert core.read_namespace(ns).status.phase == "Active"
    secret = core.create_namespaced_secret(ns, client.V1Secret(
        metadata=client.V1ObjectMeta(name="tls", labels={"app": "recc"}), string_data={"ca.pem": "PEM"}))
    assert base64.b64decode(secret.data["ca.pem"]) == b"PEM" and secret.type == "Opaque"
    assert secret.metadata.uid and secret.metadata.creation_timestamp.tzinfo is not None
    with pytest.raises(ApiException) as err:
        core.create_namespaced_secret(ns, client.V1Secret(metadata=client.V1ObjectMeta(name="tls")))
    body = status_of(err.value)
    assert err.value.status == 409 and body["reason"] == "AlreadyExists" and body["apiVersion"] == "v1"
    assert body["status"] == "Failure" and body["code"] == 409

    cm = core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="conf"),
                                                                    data={"a": "1"}))
    cm.data["a"] = "2"
    updated = core.replace_namespaced_config_map("conf", ns, cm)
    assert updated.data == {"a": "2"}
    assert int(updated.metadata.resource_version) > int(cm.metadata.resource_version)
    cm.data["a"] = "3"  # still carries the old resourceVersion
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("conf", ns, cm)
    assert err.value.status == 409 and status_of(err.value)["reason"] == "Conflict"
    patched = core.patch_namespaced_config_map("conf", ns, {"data": {"b": "x"}})
    assert patched.data == {"a": "2", "b": "x"}
    assert {c.metadata.name for c in core.list_namespaced_config_map(ns).items} == {"conf", "kube-root-ca.crt"}

    core.delete_namespaced_secret("tls", ns)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_secret("tls", ns)
    assert err.value.status == 404 and status_of(err.value)["reason"] == "NotFound"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_secret("no-such-namespace", client.V1Secret(metadata=client.V1ObjectMeta(name="x")))
    assert err.value.status == 404
    with pytest.raises(ApiException) as err:   # label values are validated like the real API
        core.create_namespaced_config_map(ns, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="bad", labels={"user": "a@b.com"})))
    assert err.value.status == 422

    # The policy objects a cluster namespace carries.
    api.core.create_namespaced_service_account(ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="sa")))
    api.core.create_namespaced_resource_quota(ns, client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="q"), spec=client.V1ResourceQuotaSpec(hard={"pods": "1"})))
    api.rbac.create_namespaced_role(ns, client.V1Role(metadata=client.V1ObjectMeta(name="r"), rules=[
        client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get"])]))
    api.rbac.create_namespaced_role_binding(ns, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="rb"), role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io",
                                                                             kind="Role", name="r"),
        subjects=[client.RbacV1Subject(kind="Group", name="researchers", api_group="rbac.authorization.k8s.io")]))
    api.net.create_namespaced_network_policy(ns, client.V1NetworkPolicy(
        metadata=client.V1ObjectMeta(name="np"), spec=client.V1NetworkPolicySpec(pod_selector=client.V1LabelSelector(),
                                                                                   policy_types=["Ingress"])))
    assert [r.metadata.name for r in api.rbac.list_namespaced_role_binding(ns).items] == ["rb"]
    assert [p.metadata.name for p in api.net.list_namespaced_network_policy(ns).items] == ["np"]
    pod = client.V1Pod(metadata=client.V1ObjectMeta(generate_name="p-"), spec=client.V1PodSpec(
        containers=[client.V1Container(name="c", image="x", command=["true"])]))
    api.core.create_namespaced_pod(ns, pod)
    with pytest.raises(ApiException) as err:
        api.core.create_namespaced_pod(ns, pod)
    assert err.value.status == 403 and "exceeded quota: q" in status_of(err.value)["message"]
    quota = wait_for(lambda: (q := api.core.read_namespaced_resource_quota("q", ns)).status
                     and q.status.used == {"pods": "1"} and q, what="quota status")
    assert quota.status.hard == {"pods": "1"}


def test_label_selectors(api, ns):
    for name, labels in {"a": {"tier": "web", "env": "prod"}, "b": {"tier": "db", "env": "prod"},
                         "c": {"tier": "web", "env": "dev", "canary": "yes"}, "d": {}}.items():
        api.core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(
            name=name, labels=labels)))

    def names(selector):
        items = api.core.list_namespaced_config_map(ns, label_selector=selector).items
        return {i.metadata.name for i in items} - {"kube-root-ca.crt"}
    assert names("tier=web") == {"a", "c"}
    assert names("tier==web,env=prod") == {"a"}
    assert names("tier!=web") == {"b", "d"}
    assert names("env in (prod, dev)") == {"a", "b", "c"}
    assert names("tier notin (web),env") == {"b"}
    assert names("canary") == {"c"}
    assert names("!canary,tier") == {"a", "b"}
    assert {i.metadata.name for i in api.core.list_namespaced_config_map(ns, field_selector="metadata.name=b").items} \
        == {"b"}
    with pytest.raises(ApiException) as err:
        api.core.list_namespaced_config_map(ns, label_selector="tier in web")
    assert err.value.status == 400
    # Watch: existing objects arrive as ADDED events.
    events = []
    for event in watch.Watch().stream(api.core.list_namespaced_config_map, ns, label_selector="tier=web",
                                      timeout_seconds=2):
        events.append((event["type"], event["object"].metadata.name))
        if len(events) == 2:
            break
    assert sorted(events) == [("ADDED", "a"), ("ADDED", "c")]


def test_lease_create_and_renew(servers, api, ns):
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc).replace(microsecond=123456)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lease = api.coord.create_namespaced_lease(ns, client.V1Lease(
        metadata=client.V1ObjectMeta(name="recc-heartbeat"),
        spec=client.V1LeaseSpec(holder_identity="reccd@laptop", lease_duration_seconds=60, acquire_time=stamp,
                                renew_time=stamp)))
    assert lease.spec.renew_time == now and lease.spec.holder_identity == "reccd@laptop"
    raw = raw_get(servers.url, f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/recc-heartbeat")
    assert raw["spec"]["renewTime"] == stamp and raw["metadata"]["creationTimestamp"].endswith("Z")
    assert len(raw["metadata"]["creationTimestamp"]) == len("2026-08-01T12:00:00Z")
    later = now.replace(microsecond=654321)
    lease.spec.renew_time = later.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    renewed = api.coord.replace_namespaced_lease("recc-heartbeat", ns, lease)
    assert renewed.spec.renew_time == later
    with pytest.raises(ApiException) as err:   # the old resourceVersion again
        api.coord.replace_namespaced_lease("recc-heartbeat", ns, lease)
    assert err.value.status == 409
    for bad in ("2026-08-01T12:00:00.123Z", "2026-08-01T12:00:00Z"):
        with pytest.raises(ApiException) as err:
            api.coord.patch_namespaced_lease("recc-heartbeat", ns, {"spec": {"renewTime": bad}})
        assert err.value.status == 400


# ---- nodes from moto, scheduling ----------------------------------------------------------------
def test_asg_instances_become_nodes(servers, api, aws, pool, ns):
    make_group(aws, "recc-gpu-c9", "g4dn.xlarge", 1, {"recc/cluster": "c9"}, {"recc/cluster": "c9:NoSchedule"})
    servers.fake.sync_nodes()
    node = wait_for(lambda: api.core.list_node(label_selector="recc/cluster=c9").items, what="gpu node")[0]
    instance = aws.ec2.describe_instances(Filters=[{"Name": "tag:recc:cluster", "Values": ["recc-gpu-c9"]}])
    instance = instance["Reservations"][0]["Instances"][0]
    assert node.metadata.name == instance["PrivateDnsName"]
    assert node.metadata.labels["node.kubernetes.io/instance-type"] == "g4dn.xlarge"
    assert [(t.key, t.value, t.effect) for t in node.spec.taints] == [("recc/cluster", "c9", "NoSchedule")]
    alloc = allocatable(load_catalog().instance("g4dn.xlarge"), daemonsets=False)
    assert node.status.allocatable["cpu"] == f"{alloc.cpu_millis}m"
    assert node.status.allocatable["memory"] == f"{alloc.memory_mib}Mi"
    assert node.status.allocatable["nvidia.com/gpu"] == "1" and node.status.capacity["cpu"] == "4"
    assert [c.status for c in node.status.conditions if c.type == "Ready"] == ["True"]

    def pod(name, tolerate):
        return client.V1Pod(metadata=client.V1ObjectMeta(name=name), spec=client.V1PodSpec(
            node_selector={"recc/cluster": "c9"},
            tolerations=[client.V1Toleration(key="recc/cluster", operator="Equal", value="c9",
                                             effect="NoSchedule")] if tolerate else None,
            containers=[client.V1Container(name="c", image="x", command=[PY, "-c", "import time; time.sleep(60)"],
                                           resources=client.V1ResourceRequirements(limits={"nvidia.com/gpu": "1"}))]))
    api.core.create_namespaced_pod(ns, pod("tolerates", True))
    api.core.create_namespaced_pod(ns, pod("intolerant", False))
    assert wait_for(lambda: api.core.read_namespaced_pod("tolerates", ns).spec.node_name) == node.metadata.name

    def unschedulable():
        cond = [c for c in api.core.read_namespaced_pod("intolerant", ns).status.conditions or []
                if c.type == "PodScheduled"]
        return cond and cond[0].reason == "Unschedulable" and cond[0].message
    message = wait_for(unschedulable, what="Unschedulable")
    assert message == ("0/3 nodes are available: 1 node(s) had untolerated taint {recc/cluster: c9}, "
                       "2 node(s) didn't match Pod's node affinity/selector.")
    # The instance goes away: its Node goes, and so do the pods bound to it.
    aws.asg.delete_auto_scaling_group(AutoScalingGroupName="recc-gpu-c9", ForceDelete=True)
    servers.fake.sync_nodes()
    wait_for(lambda: not api.core.list_node(label_selector="recc/cluster=c9").items, what="node removal")
    wait_for(lambda: "tolerates" not in {p.metadata.name for p in api.core.list_namespaced_pod(ns).items},
             what="pod removal")


def test_too_large_pod_stays_pending(api, pool, ns):
    big = client.V1ResourceRequirements(requests={"cpu": "1", "memory": "64Gi"})
    api.apps.create_namespaced_deployment(ns, deployment("huge", [PY, "-c", "pass"], resources=big))
    pod = pod_of(api, ns, "app=huge", phase="Pending")[0]

    def reason():
        p = api.core.read_namespaced_pod(pod.metadata.name, ns)
        cond = [c for c in p.status.conditions or [] if c.type == "PodScheduled"]
        return cond and cond[0].status == "False" and cond[0]
    cond = wait_for(reason, what="PodScheduled=False")
    assert cond.reason == "Unschedulable"
    assert cond.message == "0/2 nodes are available: 2 Insufficient memory."
    events = api.core.list_namespaced_event(ns, field_selector=f"involvedObject.name={pod.metadata.name}").items
    assert any(e.reason == "FailedScheduling" and e.type == "Warning" for e in events)
    dep = api.apps.read_namespaced_deployment("huge", ns)
    assert not dep.status.ready_replicas


# ---- the stand-in kubelet ----------------------------------------------------------------------
PRINTER = """
import os, sys
print("FOO=" + os.environ["FOO"])
print("PASSWORD=" + os.environ["PASSWORD"])
print("TOKEN=" + open("/etc/recc/creds/token").read())
print("ARGFILE=" + open(sys.argv[1]).read())
print("ENVFILE=" + open(os.environ["CREDS_DIR"] + "/token").read())
print("DONE", flush=True)
"""


def test_deployment_runs_local_process_with_env_and_secret(api, pool, ns):
    api.core.create_namespaced_secret(ns, client.V1Secret(metadata=client.V1ObjectMeta(name="creds"),
                                                          string_data={"token": "s3cr3t", "password": "hunter2"}))
    env = [client.V1EnvVar(name="FOO", value="bar"),
           client.V1EnvVar(name="CREDS_DIR", value="/etc/recc/creds"),
           client.V1EnvVar(name="PASSWORD", value_from=client.V1EnvVarSource(
               secret_key_ref=client.V1SecretKeySelector(name="creds", key="password")))]
    mounts = [client.V1VolumeMount(name="creds", mount_path="/etc/recc/creds", read_only=True)]
    volumes = [client.V1Volume(name="creds", secret=client.V1SecretVolumeSource(secret_name="creds"))]
    command = [PY, "-c", PRINTER, "/etc/recc/creds/token"]
    api.apps.create_namespaced_deployment(ns, deployment("printer", command, env=env, mounts=mounts, volumes=volumes))
    pod = pod_of(api, ns, "app=printer", phase="Succeeded")[0]
    log = logs_with(api, ns, pod.metadata.name, "DONE")
    assert "FOO=bar\nPASSWORD=hunter2\nTOKEN=s3cr3t\nARGFILE=s3cr3t\nENVFILE=s3cr3t\nDONE\n" == log
    assert api.core.read_namespaced_pod_log(pod.metadata.name, ns, tail_lines=1) == "DONE\n"
    stream = api.core.read_namespaced_pod_log(pod.metadata.name, ns, follow=True, _preload_content=False)
    assert stream.read().decode() == log   # the process ended, so the followed stream ends too
    stream.release_conn()
    assert pod.status.pod_ip == "127.0.0.1"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0
    owner = pod.metadata.owner_references[0]
    assert owner.kind == "ReplicaSet" and owner.controller and owner.name.startswith("printer-")
    assert pod.metadata.name.startswith(owner.name + "-") and pod.metadata.labels["app"] == "printer"


def test_scaling_and_namespace_deletion_stop_processes(api, pool, ns):
    command = [PY, "-c", "import os, time; print('PID', os.getpid(), flush=True); time.sleep(120)"]
    api.apps.create_namespaced_deployment(ns, deployment("sleeper", command, replicas=1))
    pod_of(api, ns, "app=sleeper")
    api.apps.patch_namespaced_deployment_scale("sleeper", ns, {"spec": {"replicas": 3}})
    pods = pod_of(api, ns, "app=sleeper", count=3)
    pids = [int(logs_with(api, ns, p.metadata.name, "PID").split()[1]) for p in pods]
    assert all(psutil.pid_exists(pid) for pid in pids)
    assert api.apps.read_namespaced_deployment_scale("sleeper", ns).spec.replicas == 3
    dep = wait_for(lambda: (d := api.apps.read_namespaced_deployment("sleeper", ns)).status.ready_replicas == 3 and d,
                   what="3 ready replicas")
    assert dep.status.available_replicas == 3 and dep.metadata.generation == 2

    scale = api.apps.read_namespaced_deployment_scale("sleeper", ns)
    scale.spec.replicas = 1
    api.apps.replace_namespaced_deployment_scale("sleeper", ns, scale)
    remaining = pod_of(api, ns, "app=sleeper", count=1)[0]
    survivor = int(logs_with(api, ns, remaining.metadata.name, "PID").split()[1])

    def gone(pid):
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
    wait_for(lambda: all(gone(p) for p in pids if p != survivor), what="scaled-down processes to stop")
    assert not gone(survivor)

    api.core.delete_namespace(ns)
    assert api.core.read_namespace(ns).status.phase == "Terminating"
    wait_for(lambda: gone(survivor), what="the namespace's processes to stop")
    wait_for(lambda: ns not in {n.metadata.name for n in api.core.list_namespace().items}, what="namespace removal")


ECHO = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 9999))
s.listen()
print("listening", flush=True)
while True:
    c, _ = s.accept()
    while data := c.recv(65536):
        c.sendall(data)
    c.close()
"""
ECHO_CLIENT = """
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
with socket.create_connection((host, int(port))) as c:
    c.sendall(b"ping")
    print("REPLY", c.recv(100).decode(), flush=True)
"""


def _recv_exactly(sock, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def test_portforward_services_and_load_balancer(api, pool, ns):
    ports = [client.V1ContainerPort(container_port=9999, name="echo")]
    api.apps.create_namespaced_deployment(ns, deployment("echo", [PY, "-c", ECHO], ports=ports))
    pod = pod_of(api, ns, "app=echo")[0]
    logs_with(api, ns, pod.metadata.name, "listening")

    pf = portforward(api.core.connect_get_namespaced_pod_portforward, pod.metadata.name, ns, ports="9999")
    sock = pf.socket(9999)
    sock.settimeout(10)
    payload = bytes(range(256)) * 400
    sock.sendall(payload)
    assert _recv_exactly(sock, len(payload)) == payload
    sock.close()
    pf.close()
    assert pf.error(9999) is None

    pf = portforward(api.core.connect_get_namespaced_pod_portforward, pod.metadata.name, ns, ports="9998")
    sock = pf.socket(9998)
    sock.settimeout(10)
    assert sock.recv(10) == b""
    assert "error forwarding port 9998" in pf.error(9998)
    pf.close()

    svc = client.V1Service(metadata=client.V1ObjectMeta(name="echo"), spec=client.V1ServiceSpec(
        type="LoadBalancer", selector={"app": "echo"},
        ports=[client.V1ServicePort(name="echo", port=7000, target_port="echo")]))
    created = api.core.create_namespaced_service(ns, svc)
    assert created.spec.cluster_ip.startswith("10.") and created.spec.ports[0].node_port
    ingress = wait_for(lambda: api.core.read_namespaced_service("echo", ns).status.load_balancer.ingress,
                       what="load balancer ingress")[0]
    assert ingress.ip == "127.0.0.1"
    host_port = ingress.ports[0].port
    assert json.loads(api.core.read_namespaced_pod(pod.metadata.name, ns).metadata.annotations[
        "fakekube.recc.dev/host-ports"]) == {"9999": host_port}
    with socket.create_connection(("127.0.0.1", host_port), timeout=10) as c:
        c.sendall(b"direct")
        assert _recv_exactly(c, 6) == b"direct"

    # A pod that names the service by its cluster DNS name reaches the echo process.
    target = f"echo.{ns}.svc.cluster.local:7000"
    client_pod = client.V1Pod(metadata=client.V1ObjectMeta(name="caller"), spec=client.V1PodSpec(
        restart_policy="Never", containers=[client.V1Container(name="c", image="x",
                                                               command=[PY, "-c", ECHO_CLIENT, target])]))
    api.core.create_namespaced_pod(ns, client_pod)
    assert "REPLY ping" in logs_with(api, ns, "caller", "REPLY")
    wait_for(lambda: api.core.read_namespaced_pod("caller", ns).status.phase == "Succeeded", what="caller done")
