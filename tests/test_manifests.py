"""recc.manifests: the Kubernetes objects of an EKS cluster, checked as data."""

from __future__ import annotations

import re

import pytest
import yaml

from recc.templates import resolve
from recc import manifests as M
from reccd.providers import ClusterTLS

TLS = ClusterTLS(ca_cert="CA\n", scheduler_cert="SC\n", scheduler_key="SK\n", worker_cert="WC\n",
                 worker_key="WK\n", client_cert="CC\n", client_key="CK\n")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def spec(**kw):
    return resolve("small-cluster-small-workers", **kw)


def by_kind(objs):
    return {(o["kind"], o["metadata"].get("name") if o["kind"] != "Deployment" else o["metadata"]["name"]): o
            for o in objs}


@pytest.fixture
def names():
    return M.Names(user="arathe", cluster="c1", job="nightly risk/run#7")


def test_namespace_name_and_labels(names):
    assert names.namespace == "recc-arathe-c1"
    assert M.namespace_name("A.Rathe@corp", "c1") == "recc-a-rathe-corp-c1"
    ns = M.namespace(names)
    assert ns["metadata"]["name"] == "recc-arathe-c1"
    lab = ns["metadata"]["labels"]
    assert lab["app.kubernetes.io/managed-by"] == "reccd"
    assert lab["recc.dev/user"] == "arathe" and lab["recc.dev/cluster"] == "c1"
    assert lab["recc.dev/namespace"] == "recc-arathe-c1"
    assert lab["recc.dev/job"] == "nightly-risk-run-7"
    assert all(LABEL_VALUE.match(v) for v in lab.values())


@pytest.mark.parametrize("raw", ["", "-x-", "a" * 100, "é/ü", "..a..", "job_1.2"])
def test_label_value_sanitised(raw):
    assert LABEL_VALUE.match(M.label_value(raw))


def test_all_objects_order_and_namespace(names):
    objs = M.all_objects(spec(n_workers=3), names, TLS)
    kinds = [o["kind"] for o in objs]
    assert kinds == ["Namespace", "ResourceQuota", "NetworkPolicy", "ServiceAccount", "Role", "RoleBinding",
                     "Secret", "Deployment", "Deployment", "Service"]
    for o in objs[1:]:
        assert o["metadata"]["namespace"] == "recc-arathe-c1"
        assert o["metadata"]["labels"]["recc.dev/user"] == "arathe"


def test_quota_sized_to_spec(names):
    s = spec(n_workers=3, worker_cpu=1.5, worker_memory="3GiB", scheduler_cpu=1, scheduler_memory="2GiB")
    hard = M.resource_quota(s, names)["spec"]["hard"]
    assert hard["pods"] == "4"
    assert hard["requests.cpu"] == hard["limits.cpu"] == "5500m"
    assert hard["requests.memory"] == hard["limits.memory"] == f"{2048 + 3 * 3072}Mi"
    assert "requests.nvidia.com/gpu" not in hard
    g = resolve("gpu-workers", n_workers=2)
    assert M.resource_quota(g, names)["spec"]["hard"]["requests.nvidia.com/gpu"] == "2"


def test_network_policy_routes(names):
    pf = M.network_policy(names, M.Options(route="portforward"))
    assert pf["spec"]["policyTypes"] == ["Ingress"]
    assert pf["spec"]["ingress"] == [{"from": [{"podSelector": {}}]}]
    lb = M.network_policy(names, M.Options(route="loadbalancer", lb_source_cidrs=("10.1.0.0/16",)))
    assert lb["spec"]["ingress"][1]["from"] == [{"ipBlock": {"cidr": "10.1.0.0/16"}}]
    assert {p["port"] for p in lb["spec"]["ingress"][1]["ports"]} == {8786, 8787}


def test_service_account_irsa(names):
    assert "annotations" not in M.service_account(names)["metadata"]
    sa = M.service_account(names, M.Options(data_access_role_arn="arn:aws:iam::1:role/data"))
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/data",
                                             "eks.amazonaws.com/sts-regional-endpoints": "true"}


def test_role_binding_names_the_group_in_the_namespace_only(names):
    rb = M.role_binding(names, M.Options(user_group="research:arathe"))
    assert rb["metadata"]["namespace"] == "recc-arathe-c1"
    assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": M.ROLE}
    assert rb["subjects"][0]["kind"] == "Group" and rb["subjects"][0]["name"] == "research:arathe"
    assert M.role(names)["kind"] == "Role"  # not a ClusterRole
    assert M.role_binding(names)["subjects"][0]["name"] == "recc:arathe"


def test_secret_has_server_side_pems_not_the_client_key(names):
    sec = M.tls_secret(names, TLS)
    assert sec["stringData"] == {"ca.pem": "CA\n", "scheduler.pem": "SC\n", "scheduler-key.pem": "SK\n",
                                 "worker.pem": "WC\n", "worker-key.pem": "WK\n"}
    assert "CK\n" not in str(sec)
    assert "generated" in M.tls_secret(names, None)["stringData"]["ca.pem"]


def test_scheduler_deployment(names):
    s = spec(scheduler_cpu=0.5, scheduler_memory="1GiB", heartbeat_ttl=300, env={"A": "1"})
    d = M.scheduler_deployment(s, names)
    pod = d["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["command"][:3] == ["python", "-m", "distributed.cli.dask_scheduler"]
    cmd = " ".join(c["command"])
    assert "--protocol tls --port 8786 --dashboard-address :8787" in cmd
    assert "--tls-ca-file /etc/recc/tls/ca.pem" in cmd and "--preload recc.deadman" in cmd
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["RECC_HEARTBEAT_TTL"] == "300.0" and env["A"] == "1"
    assert {p["containerPort"] for p in c["ports"]} == {8786, 8787}
    assert c["resources"]["requests"] == c["resources"]["limits"] == {"cpu": "500m", "memory": "1024Mi"}
    assert pod["nodeSelector"] == {"recc.dev/cluster": "recc-arathe-c1"}
    assert pod["volumes"][0]["secret"]["secretName"] == M.TLS_SECRET
    assert c["volumeMounts"][0]["mountPath"] == "/etc/recc/tls"
    assert d["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()


def test_worker_deployment(names):
    s = resolve("gpu-workers", n_workers=5, source_paths=("/efs/src/a", "/efs/src/b"), image="img:1")
    d = M.worker_deployment(s, names, M.Options(efs_server="fs-1.efs.us-east-1.amazonaws.com"))
    assert d["spec"]["replicas"] == 5
    pod = d["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"] == "img:1"
    assert c["command"][:4] == ["python", "-m", "distributed.cli.dask_worker",
                                "tls://recc-scheduler.recc-arathe-c1.svc.cluster.local:8786"]
    cmd = " ".join(c["command"])
    assert f"--nthreads 1 --memory-limit {12 * 2**30}" in cmd and "--name $(POD_NAME)" in cmd
    assert "--resources GPU=1" in cmd
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert c["resources"]["requests"]["cpu"] == "3000m"
    assert pod["tolerations"] == [{"key": "recc.dev/cluster", "operator": "Equal", "value": "recc-arathe-c1",
                                   "effect": "NoSchedule"}]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["PYTHONPATH"]["value"] == "/recc/src/0:/recc/src/1"
    nfs = [v for v in pod["volumes"] if "nfs" in v]
    assert [v["nfs"]["path"] for v in nfs] == ["/efs/src/a", "/efs/src/b"]
    # without EFS the paths go on PYTHONPATH as they are
    d2 = M.worker_deployment(s, names)
    env2 = {e["name"]: e.get("value") for e in d2["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env2["PYTHONPATH"] == "/efs/src/a:/efs/src/b"


def test_service_types_by_route(names):
    svc = M.scheduler_service(names)
    assert svc["spec"]["type"] == "ClusterIP" and "annotations" not in svc["metadata"]
    assert [p["port"] for p in svc["spec"]["ports"]] == [8786, 8787]
    assert M.scheduler_service(names, M.Options(route="auto"))["spec"]["type"] == "LoadBalancer"
    lb = M.scheduler_service(names, M.Options(route="loadbalancer"))
    assert lb["spec"]["type"] == "LoadBalancer"
    assert lb["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-internal"] == "true"


def test_yaml_round_trip_and_dry_run(names):
    objs = M.all_objects(spec(), names, TLS)
    assert list(yaml.safe_load_all(M.to_yaml(objs))) == objs
    text = M.dry_run_yaml(spec(), "c1", "arathe")
    assert text.startswith("# RECC cluster 'c1'") and "plan:" in text
    docs = list(yaml.safe_load_all(text))
    assert docs[0]["kind"] == "Namespace" and docs[-1]["kind"] == "Service"


def test_pure(names):
    s = spec()
    assert M.all_objects(s, names, TLS) == M.all_objects(s, names, TLS)
