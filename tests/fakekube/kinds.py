"""The resource kinds the fake serves, and the discovery documents built from them."""

from __future__ import annotations

from dataclasses import dataclass, field

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
VERSION_INFO = {
    "major": "1", "minor": "33", "emulationMajor": "1", "emulationMinor": "33",
    "minCompatibilityMajor": "1", "minCompatibilityMinor": "32",
    "gitVersion": "v1.33.0-fakekube", "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24.0",
    "compiler": "gc", "platform": "linux/amd64",
}


@dataclass(frozen=True)
class Kind:
    group: str          # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    # Subresources and their verbs; "status" ones make a main-resource PUT keep the old status.
    subresources: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """``secrets`` or ``deployments.apps``: a name unique over all groups."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    def qualified(self) -> str:
        """How a real API server names the resource in messages: ``deployments.apps``."""
        return self.key


_STATUS = ("get", "patch", "update")
KINDS: list[Kind] = [
    Kind("", "v1", "namespaces", "Namespace", namespaced=False, short_names=("ns",),
         subresources={"status": _STATUS, "finalize": ("update",)}),
    Kind("", "v1", "nodes", "Node", namespaced=False, short_names=("no",), subresources={"status": _STATUS}),
    Kind("", "v1", "secrets", "Secret"),
    Kind("", "v1", "configmaps", "ConfigMap", short_names=("cm",)),
    Kind("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    Kind("", "v1", "services", "Service", short_names=("svc",), subresources={"status": _STATUS}),
    Kind("", "v1", "pods", "Pod", short_names=("po",),
         subresources={"status": _STATUS, "log": ("get",), "portforward": ("create", "get")}),
    Kind("", "v1", "resourcequotas", "ResourceQuota", short_names=("quota",), subresources={"status": _STATUS}),
    Kind("", "v1", "events", "Event", short_names=("ev",)),
    Kind("apps", "v1", "deployments", "Deployment", short_names=("deploy",),
         subresources={"status": _STATUS, "scale": _STATUS}),
    Kind("apps", "v1", "replicasets", "ReplicaSet", short_names=("rs",),
         subresources={"status": _STATUS, "scale": _STATUS}),
    Kind("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    Kind("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    Kind("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", short_names=("netpol",)),
    Kind("coordination.k8s.io", "v1", "leases", "Lease"),
]
BY_KEY: dict[str, Kind] = {k.key: k for k in KINDS}
BY_PATH: dict[tuple[str, str, str], Kind] = {(k.group, k.version, k.plural): k for k in KINDS}
BY_KIND: dict[tuple[str, str], Kind] = {(k.api_version, k.kind): k for k in KINDS}

NAMESPACES = BY_KEY["namespaces"]
NODES = BY_KEY["nodes"]
SECRETS = BY_KEY["secrets"]
CONFIGMAPS = BY_KEY["configmaps"]
SERVICEACCOUNTS = BY_KEY["serviceaccounts"]
SERVICES = BY_KEY["services"]
PODS = BY_KEY["pods"]
QUOTAS = BY_KEY["resourcequotas"]
EVENTS = BY_KEY["events"]
DEPLOYMENTS = BY_KEY["deployments.apps"]
REPLICASETS = BY_KEY["replicasets.apps"]
LEASES = BY_KEY["leases.coordination.k8s.io"]


def groups() -> dict[str, list[str]]:
    """Named groups -> versions (the core group is served under /api)."""
    out: dict[str, list[str]] = {}
    for k in KINDS:
        if k.group and k.version not in out.setdefault(k.group, []):
            out[k.group].append(k.version)
    return out


def api_versions(server_address: str) -> dict:
    """``GET /api``."""
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}


def api_group_list() -> dict:
    """``GET /apis``."""
    out = []
    for name, versions in groups().items():
        vs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
        out.append({"name": name, "versions": vs, "preferredVersion": vs[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": out}


def api_group(name: str) -> dict | None:
    """``GET /apis/<group>``."""
    versions = groups().get(name)
    if not versions:
        return None
    vs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": vs, "preferredVersion": vs[0]}


def resource_list(group: str, version: str) -> dict | None:
    """``GET /api/v1`` or ``GET /apis/<group>/<version>``: an APIResourceList."""
    kinds = [k for k in KINDS if k.group == group and k.version == version]
    if not kinds:
        return None
    resources = []
    for k in kinds:
        entry = {"name": k.plural, "singularName": k.singular, "namespaced": k.namespaced,
                 "kind": k.kind, "verbs": ALL_VERBS}
        if k.short_names:
            entry["shortNames"] = list(k.short_names)
        resources.append(entry)
        for sub, verbs in k.subresources.items():
            sub_kind = {"scale": "Scale", "log": "Pod", "portforward": "PodPortForwardOptions"}.get(sub, k.kind)
            sub_entry = {"name": f"{k.plural}/{sub}", "singularName": "", "namespaced": k.namespaced,
                         "kind": sub_kind, "verbs": list(verbs)}
            if sub == "scale":
                sub_entry.update(group="autoscaling", version="v1")
            resources.append(sub_entry)
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}
