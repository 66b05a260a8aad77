"""Kubernetes objects for one EKS cluster, built by pure functions from a `ClusterSpec`.

No I/O here: every function takes plain values and returns plain dicts (the JSON the API
server takes), so the objects can be read, tested and shown (``dry_run_yaml``) without a
cluster. `all_objects` returns them in the order they are applied; deletion runs the other way.

Names inside the namespace ``recc-<user>-<cluster>`` are fixed (``recc-scheduler``,
``recc-worker``, ``recc-tls``, ...): the namespace is the cluster.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import yaml

from recc.spec import ClusterSpec, check_name

# Fixed names inside a cluster's namespace.
SCHEDULER = "recc-scheduler"  # Deployment and Service
WORKER = "recc-worker"
TLS_SECRET = "recc-tls"
SERVICE_ACCOUNT = "recc"
ROLE = "recc-user"
QUOTA = "recc-quota"
NETWORK_POLICY = "recc-ingress"
HEARTBEAT_LEASE = "recc-heartbeat"
# On the namespace: what the in-cluster reaper needs to judge the cluster without the daemon's state
# (the owner as given, and the harvest timeouts), as JSON. On the Lease: the user's "extend" (epoch s).
HARVEST_ANNOTATION = "recc.dev/harvest"
EXTENDED_ANNOTATION = "recc.dev/extended-until"
# The id of the daemon that made a cluster (reccd.identity): a label on its namespace, a tag on its
# AWS resources. A daemon's restart sweep removes only leftovers with its own id (docs/eks.md).
DAEMON_LABEL = "recc.dev/daemon"
DAEMON_TAG = "recc:daemon"

SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787
TLS_DIR = "/etc/recc/tls"
SOURCE_DIR = "/recc/src"
CAPACITY_KEY = "recc.dev/cluster"  # node label and taint naming the cluster that owns the node
LABEL_PREFIX = "recc.dev/"
ROUTES = ("portforward", "loadbalancer", "auto")
MIB = 2**20

# TLS secret keys (file names under TLS_DIR) -> ClusterTLS attributes. The client key is not
# here: it stays with the daemon and the library.
TLS_FILES = {
    "ca.pem": "ca_cert",
    "scheduler.pem": "scheduler_cert",
    "scheduler-key.pem": "scheduler_key",
    "worker.pem": "worker_cert",
    "worker-key.pem": "worker_key",
}

_LABEL_BAD = re.compile(r"[^A-Za-z0-9_.-]+")


def label_value(value: Any) -> str:
    """A valid Kubernetes label value: at most 63 of ``[A-Za-z0-9_.-]``, alphanumeric at both ends."""
    text = _LABEL_BAD.sub("-", str(value if value is not None else ""))[:63]
    return text.strip("-_.")


def namespace_name(user: str, name: str) -> str:
    """``recc-<user>-<cluster>`` as a DNS label (the user part sanitised)."""
    check_name(name)
    user_part = re.sub(r"[^a-z0-9-]+", "-", user.lower()).strip("-") or "user"
    ns = f"recc-{user_part}-{name}"
    if len(ns) > 63:
        ns = f"recc-{user_part[:63 - 6 - len(name)].strip('-')}-{name}"
    return ns


@dataclass(frozen=True)
class Names:
    """Who and what a cluster's objects are for."""

    user: str
    cluster: str
    job: str = "adhoc"

    @property
    def namespace(self) -> str:
        return namespace_name(self.user, self.cluster)

    @classmethod
    def of(cls, spec: ClusterSpec, user: str, cluster: str) -> "Names":
        return cls(user=user, cluster=cluster, job=spec.job_id or "adhoc")


@dataclass(frozen=True)
class Options:
    """The context's say in the objects (everything else comes from the spec)."""

    route: str = "portforward"  # portforward | loadbalancer | auto
    data_access_role_arn: str | None = None  # IRSA role for the pods' own AWS access
    user_group: str | None = None  # the user's Kubernetes group (default recc:<user>)
    lb_source_cidrs: Sequence[str] = ("10.0.0.0/8",)  # who may reach an internal load balancer
    efs_server: str | None = None  # source paths are mounted from this EFS/NFS server when set
    worker_death_timeout: float = 120.0
    extra_labels: dict[str, str] = field(default_factory=dict)
    # the pods' datastore context and roots (recc.datastore.pod_datastore_env); the spec's env wins
    pod_env: Mapping[str, str] = field(default_factory=dict)


def labels(names: Names, component: str | None = None) -> dict[str, str]:
    """app.kubernetes.io labels plus the cost labels user / namespace / job / cluster."""
    out = {
        "app.kubernetes.io/name": "recc",
        "app.kubernetes.io/instance": label_value(names.namespace),
        "app.kubernetes.io/managed-by": "reccd",
        "app.kubernetes.io/part-of": "recc",
        f"{LABEL_PREFIX}user": label_value(names.user),
        f"{LABEL_PREFIX}namespace": label_value(names.namespace),
        f"{LABEL_PREFIX}job": label_value(names.job),
        f"{LABEL_PREFIX}cluster": label_value(names.cluster),
    }
    if component:
        out["app.kubernetes.io/component"] = component
    return out


def selector(names: Names, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/instance": label_value(names.namespace), "app.kubernetes.io/component": component}


def _meta(name: str, names: Names, component: str | None = None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": names.namespace, "labels": labels(names, component)}
    meta.update({k: v for k, v in extra.items() if v})
    return meta


def cpu_quantity(cores: float) -> str:
    return f"{math.ceil(round(cores * 1000, 6))}m"


def memory_quantity(nbytes: int) -> str:
    return f"{math.ceil(nbytes / MIB)}Mi"


# ------------------------------------------------------------------------------- objects


def namespace(names: Names, options: Options = Options(), spec: ClusterSpec | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": names.namespace, "labels": {**labels(names), **options.extra_labels}}
    if spec is not None:
        meta["annotations"] = {HARVEST_ANNOTATION: harvest_annotation(spec, names)}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def harvest_annotation(spec: ClusterSpec, names: Names) -> str:
    """The owner and the harvest settings of a cluster, as the reaper reads them (compact JSON)."""
    import json

    # the context too: a reaper run without --context deletes through the context the cluster was made in
    return json.dumps({"user": names.user, "cluster": names.cluster, "context": spec.context,
                       "idle_timeout": spec.idle_timeout,
                       "no_client_timeout": spec.no_client_timeout, "harvest_warning": spec.harvest_warning,
                       "heartbeat_ttl": spec.heartbeat_ttl}, separators=(",", ":"), sort_keys=True)


def resource_quota(spec: ClusterSpec, names: Names) -> dict[str, Any]:
    """Room for exactly the scheduler and ``n_workers`` workers (recomputed on scale)."""
    n = spec.n_workers
    cpu_m = math.ceil(round(spec.scheduler_cpu * 1000, 6)) + n * math.ceil(round(spec.worker_cpu * 1000, 6))
    mem_mi = math.ceil(spec.scheduler_memory / MIB) + n * math.ceil(spec.worker_memory / MIB)
    hard = {"pods": str(n + 1), "requests.cpu": f"{cpu_m}m", "limits.cpu": f"{cpu_m}m",
            "requests.memory": f"{mem_mi}Mi", "limits.memory": f"{mem_mi}Mi",
            "services.loadbalancers": "1"}
    if spec.worker_gpu:
        hard["requests.nvidia.com/gpu"] = str(n * spec.worker_gpu)
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": _meta(QUOTA, names), "spec": {"hard": hard}}


def network_policy(names: Names, options: Options = Options()) -> dict[str, Any]:
    """Ingress only from pods of this namespace, plus the load balancer's sources when that route is used.

    (A port-forward reaches the pod through the kubelet, which NetworkPolicy does not filter.)"""
    rules: list[dict[str, Any]] = [{"from": [{"podSelector": {}}]}]
    if options.route in ("loadbalancer", "auto"):
        rules.append({"from": [{"ipBlock": {"cidr": c}} for c in options.lb_source_cidrs],
                      "ports": [{"protocol": "TCP", "port": SCHEDULER_PORT},
                                {"protocol": "TCP", "port": DASHBOARD_PORT}]})
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": _meta(NETWORK_POLICY, names),
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": rules}}


def service_account(names: Names, options: Options = Options()) -> dict[str, Any]:
    # IRSA: the webhook gives the pods this role (EKS Pod Identity needs no annotation, an association)
    annotations = ({"eks.amazonaws.com/role-arn": options.data_access_role_arn,
                    "eks.amazonaws.com/sts-regional-endpoints": "true"}
                   if options.data_access_role_arn else None)
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": _meta(SERVICE_ACCOUNT, names, annotations=annotations),
            "automountServiceAccountToken": False}


def user_group(names: Names, options: Options = Options()) -> str:
    return options.user_group or f"recc:{names.user}"


def role(names: Names) -> dict[str, Any]:
    """What the user may do by hand inside this namespace only (look, logs, port-forward, scale)."""
    rules = [
        {"apiGroups": [""], "resources": ["pods", "pods/log", "services", "events", "configmaps",
                                          "resourcequotas", "serviceaccounts"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["get", "create"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]},
        {"apiGroups": ["apps"], "resources": ["deployments", "replicasets"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "update", "patch"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list", "watch"]},
    ]
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(ROLE, names),
            "rules": rules}


def role_binding(names: Names, options: Options = Options()) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": _meta(ROLE, names),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                          "name": user_group(names, options)}]}


def tls_secret(names: Names, tls: Any | None) -> dict[str, Any]:
    """The cluster's TLS material (``reccd.providers.ClusterTLS``; None: placeholders, for --dry-run)."""
    data = {key: (getattr(tls, attr) if tls is not None else f"<{attr}: generated when the cluster is created>")
            for key, attr in TLS_FILES.items()}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": _meta(TLS_SECRET, names),
            "stringData": data}


def _placement(names: Names) -> dict[str, Any]:
    """nodeSelector + toleration for this cluster's own capacity (label and taint recc.dev/cluster=<ns>)."""
    return {"nodeSelector": {CAPACITY_KEY: names.namespace},
            "tolerations": [{"key": CAPACITY_KEY, "operator": "Equal", "value": names.namespace,
                             "effect": "NoSchedule"}]}


def _volumes(spec: ClusterSpec, options: Options) -> tuple[list[dict], list[dict], list[str]]:
    """Volumes, mounts and the PYTHONPATH entries (source paths from EFS when configured)."""
    volumes = [{"name": "tls", "secret": {"secretName": TLS_SECRET, "defaultMode": 0o400}}]
    mounts = [{"name": "tls", "mountPath": TLS_DIR, "readOnly": True}]
    pythonpath: list[str] = []
    for i, path in enumerate(spec.source_paths):
        if options.efs_server:
            mount = f"{SOURCE_DIR}/{i}"
            volumes.append({"name": f"src-{i}", "nfs": {"server": options.efs_server, "path": path,
                                                         "readOnly": True}})
            mounts.append({"name": f"src-{i}", "mountPath": mount, "readOnly": True})
            pythonpath.append(mount)
        else:
            pythonpath.append(path)
    return volumes, mounts, pythonpath


def _env(spec: ClusterSpec, pythonpath: list[str], extra: dict[str, str],
         pod_env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    env = {**(pod_env or {}), **spec.env, "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
           "PYTHONUNBUFFERED": "1", **extra}
    if pythonpath:
        env["PYTHONPATH"] = ":".join(pythonpath + ([spec.env["PYTHONPATH"]] if "PYTHONPATH" in spec.env else []))
    return [{"name": k, "value": v} for k, v in env.items()]


def _tls_args(role_: str) -> list[str]:
    return ["--tls-ca-file", f"{TLS_DIR}/ca.pem", "--tls-cert", f"{TLS_DIR}/{role_}.pem",
            "--tls-key", f"{TLS_DIR}/{role_}-key.pem"]


def _deployment(names: Names, component: str, name: str, replicas: int, container: dict[str, Any],
                volumes: list[dict]) -> dict[str, Any]:
    pod_labels = labels(names, component)
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(name, names, component),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector(names, component)},
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {"serviceAccountName": SERVICE_ACCOUNT, "automountServiceAccountToken": False,
                         "restartPolicy": "Always", "terminationGracePeriodSeconds": 10,
                         **_placement(names), "containers": [container], "volumes": volumes},
            },
        },
    }


def scheduler_deployment(spec: ClusterSpec, names: Names, options: Options = Options()) -> dict[str, Any]:
    volumes, mounts, pythonpath = _volumes(spec, options)
    resources = {"cpu": cpu_quantity(spec.scheduler_cpu), "memory": memory_quantity(spec.scheduler_memory)}
    container = {
        "name": "scheduler", "image": spec.image,
        "command": ["python", "-m", "distributed.cli.dask_scheduler", "--protocol", "tls",
                    "--port", str(SCHEDULER_PORT), "--dashboard-address", f":{DASHBOARD_PORT}",
                    *_tls_args("scheduler"), "--preload", "recc.deadman"],
        "env": _env(spec, pythonpath, {"RECC_HEARTBEAT_TTL": repr(float(spec.heartbeat_ttl))}, options.pod_env),
        "ports": [{"name": "tls", "containerPort": SCHEDULER_PORT, "protocol": "TCP"},
                  {"name": "dashboard", "containerPort": DASHBOARD_PORT, "protocol": "TCP"}],
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "volumeMounts": mounts,
    }
    return _patched(_deployment(names, "scheduler", SCHEDULER, 1, container, volumes), spec, "scheduler")


def _patched(deployment: dict[str, Any], spec: ClusterSpec, main: str) -> dict[str, Any]:
    """The spec's ``pod_patch`` (expert access, `recc.podpatch`) merged into the pod template."""
    if spec.pod_patch:
        from recc.podpatch import apply_pod_patch

        deployment["spec"]["template"] = apply_pod_patch(deployment["spec"]["template"], spec.pod_patch, main)
    return deployment


def scheduler_address(names: Names) -> str:
    return f"tls://{SCHEDULER}.{names.namespace}.svc.cluster.local:{SCHEDULER_PORT}"


def worker_deployment(spec: ClusterSpec, names: Names, options: Options = Options()) -> dict[str, Any]:
    volumes, mounts, pythonpath = _volumes(spec, options)
    resources: dict[str, str] = {"cpu": cpu_quantity(spec.worker_cpu), "memory": memory_quantity(spec.worker_memory)}
    if spec.worker_gpu:
        resources["nvidia.com/gpu"] = str(spec.worker_gpu)
    command = ["python", "-m", "distributed.cli.dask_worker", scheduler_address(names),
               "--nthreads", str(spec.worker_threads), "--memory-limit", str(spec.worker_memory),
               "--name", "$(POD_NAME)", "--no-dashboard", *_tls_args("worker"),
               "--death-timeout", f"{options.worker_death_timeout:g}"]
    if spec.resources:
        command += ["--resources", " ".join(f"{k}={v:g}" for k, v in spec.resources.items())]
    env = [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    container = {
        "name": "worker", "image": spec.image, "command": command,
        "env": env + _env(spec, pythonpath, {}, options.pod_env),
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "volumeMounts": mounts,
    }
    return _patched(_deployment(names, "worker", WORKER, spec.n_workers, container, volumes), spec, "worker")


def scheduler_service(names: Names, options: Options = Options()) -> dict[str, Any]:
    """8786 (TLS, passed through) and 8787; an internal LoadBalancer for the loadbalancer and auto routes
    (auto uses it when the desktop can reach it, else a port-forward)."""
    lb = options.route in ("loadbalancer", "auto")
    annotations = {
        "service.beta.kubernetes.io/aws-load-balancer-internal": "true",
        "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal",
        "service.beta.kubernetes.io/aws-load-balancer-type": "nlb",
    } if lb else None
    spec: dict[str, Any] = {
        "type": "LoadBalancer" if lb else "ClusterIP",
        "selector": selector(names, "scheduler"),
        "ports": [{"name": "tls", "port": SCHEDULER_PORT, "targetPort": SCHEDULER_PORT, "protocol": "TCP"},
                  {"name": "dashboard", "port": DASHBOARD_PORT, "targetPort": DASHBOARD_PORT, "protocol": "TCP"}],
    }
    if lb:
        spec["loadBalancerSourceRanges"] = list(options.lb_source_cidrs)
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(SCHEDULER, names, "scheduler",
                                                                       annotations=annotations), "spec": spec}


def heartbeat_lease(names: Names, holder: str, ttl: float, now_micro: str) -> dict[str, Any]:
    """The daemon's heartbeat (``now_micro`` in MicroTime form, ``%Y-%m-%dT%H:%M:%S.%fZ``)."""
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": _meta(HEARTBEAT_LEASE, names),
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": max(1, int(math.ceil(ttl))),
                     "renewTime": now_micro}}


# ------------------------------------------------------------------------------- groups


def policy_objects(spec: ClusterSpec, names: Names, options: Options = Options()) -> list[dict[str, Any]]:
    """The namespace and what governs it (step 1 of create)."""
    return [namespace(names, options, spec), resource_quota(spec, names), network_policy(names, options),
            service_account(names, options), role(names), role_binding(names, options)]


def all_objects(spec: ClusterSpec, names: Names, tls: Any | None = None,
                options: Options = Options()) -> list[dict[str, Any]]:
    """Every object of one cluster, in apply order."""
    return [*policy_objects(spec, names, options), tls_secret(names, tls),
            scheduler_deployment(spec, names, options), worker_deployment(spec, names, options),
            scheduler_service(names, options)]


def to_yaml(objects: Sequence[dict[str, Any]]) -> str:
    """A multi-document YAML stream a person can ``kubectl apply -f -``."""
    return yaml.safe_dump_all(list(objects), sort_keys=False, default_flow_style=False, explicit_start=True)


def dry_run_yaml(spec: ClusterSpec, name: str, user: str, options: Options | None = None) -> str:
    """What ``recc up TEMPLATE --dry-run`` shows for an EKS spec: the plan and the objects as YAML.

    The TLS secret holds placeholders (the real material is made at create time)."""
    from recc.plan import format_plan, plan

    names = Names.of(spec, user, name)
    head = [f"# RECC cluster {name!r} of user {user!r} in namespace {names.namespace}",
            f"# {format_plan(plan(spec), spec)}",
            f"# capacity: one EC2 Auto Scaling group per instance type, nodes labelled and tainted "
            f"{CAPACITY_KEY}={names.namespace}"]
    return "\n".join(head) + "\n" + to_yaml(all_objects(spec, names, None, options or Options()))
