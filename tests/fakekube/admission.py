"""Defaulting and validation per kind, quota and service-account admission.

Only what a client is likely to trip over is checked: names and label syntax, selectors
that must match templates, Secret data that must be base64, Lease MicroTimes, immutable
fields, quotas, a pod's service account.
"""

from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
import re

from tests.fakekube import kinds as K
from tests.fakekube import quota
from tests.fakekube.clock import parse_microtime
from tests.fakekube.errors import ApiError
from tests.fakekube.quantity import parse as parse_quantity
from tests.fakekube.selectors import labels_match, selector_object_requirements

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_LABEL_NAME_KINDS = ("namespaces", "services")
DEFAULT_TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
]


def _invalid(kind: K.Kind, obj: dict, message: str) -> ApiError:
    return ApiError.invalid(message, kind.kind, obj["metadata"].get("name", ""), kind.group)


def check_qualified_key(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        return f"prefix part must be a lowercase RFC 1123 subdomain (got {prefix!r})"
    if not name or len(name) > 63 or not QUALIFIED_NAME.match(name):
        return ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                "with an alphanumeric character, at most 63 characters")
    return None


def validate_metadata(kind: K.Kind, obj: dict) -> None:
    meta = obj["metadata"]
    name = meta["name"]
    if name == meta.get("generateName"):
        name += "x2b4z"   # the suffix the store adds next
    if kind.key == "services":
        if len(name) > 63 or not DNS1035_LABEL.match(name):
            raise _invalid(kind, obj, f'metadata.name: Invalid value: "{name}": a DNS-1035 label must consist of '
                           "lower case alphanumeric characters or '-', start with an alphabetic character, and "
                           "end with an alphanumeric character")
    elif kind.key in _LABEL_NAME_KINDS:
        if len(name) > 63 or not DNS1123_LABEL.match(name):
            raise _invalid(kind, obj, f'metadata.name: Invalid value: "{name}": a lowercase RFC 1123 label must '
                           "consist of lower case alphanumeric characters or '-', and must start and end with an "
                           "alphanumeric character (at most 63 characters)")
    elif len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
        raise _invalid(kind, obj, f'metadata.name: Invalid value: "{name}": a lowercase RFC 1123 subdomain must '
                       "consist of lower case alphanumeric characters, '-' or '.', and must start and end with an "
                       "alphanumeric character")
    for field in ("labels", "annotations"):
        values = meta.get(field) or {}
        if not isinstance(values, dict):
            raise _invalid(kind, obj, f"metadata.{field}: must be a map of strings")
        for key, value in values.items():
            if (why := check_qualified_key(key)):
                raise _invalid(kind, obj, f'metadata.{field}: Invalid value: "{key}": {why}')
            if not isinstance(value, str):
                raise _invalid(kind, obj, f"metadata.{field}.{key}: must be a string")
            if field == "labels" and (len(value) > 63 or not LABEL_VALUE.match(value)):
                raise _invalid(kind, obj, f'metadata.labels: Invalid value: "{value}": a valid label must be an '
                               "empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
                               "start and end with an alphanumeric character (at most 63 characters)")


class Admission:
    def __init__(self, store, cluster_ip_base: str = "10.100.0.0"):
        self.store = store
        self._next_ip = int(ipaddress.IPv4Address(cluster_ip_base)) + 10
        self._next_node_port = 30000

    def admit(self, op: str, kind: K.Kind, new: dict, old: dict | None) -> None:
        validate_metadata(kind, new)
        handler = getattr(self, f"_{kind.plural}", None)
        if handler:
            handler(op, kind, new, old)
        if op == "CREATE" and kind.namespaced:
            quota.admit(self.store, kind, new)

    # ---- per kind -------------------------------------------------------------------
    def _namespaces(self, op, kind, new, old):
        new.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        new["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = new["metadata"]["name"]
        if op == "CREATE":
            new["status"] = {"phase": "Active"}

    def _secrets(self, op, kind, new, old):
        new.setdefault("type", "Opaque")
        data = new.get("data") or {}
        for key, value in (new.pop("stringData", None) or {}).items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        for key, value in data.items():
            if not CONFIG_KEY.match(key):
                raise _invalid(kind, new, f'data[{key}]: Invalid value: "{key}": a valid config key must consist '
                               "of alphanumeric characters, '-', '_' or '.'")
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError, TypeError):
                raise ApiError.bad_request(f"Secret in version \"v1\" cannot be handled as a Secret: illegal "
                                           f"base64 data in data[{key}]") from None
        if data:
            new["data"] = data
        if old is not None and old.get("immutable") and (old.get("data") != new.get("data")):
            raise _invalid(kind, new, "data: Forbidden: field is immutable when `immutable` is set")

    def _configmaps(self, op, kind, new, old):
        for field in ("data", "binaryData"):
            for key in new.get(field) or {}:
                if not CONFIG_KEY.match(key):
                    raise _invalid(kind, new, f'{field}[{key}]: Invalid value: a valid config key must consist '
                                   "of alphanumeric characters, '-', '_' or '.'")

    def _services(self, op, kind, new, old):
        spec = new.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        ports = spec.get("ports") or []
        if not ports and spec["type"] != "ExternalName":
            raise _invalid(kind, new, "spec.ports: Required value")
        if len(ports) > 1 and any(not p.get("name") for p in ports):
            raise _invalid(kind, new, "spec.ports[0].name: Required value")
        old_ports = {p.get("name"): p for p in ((old or {}).get("spec") or {}).get("ports") or []}
        for p in ports:
            p.setdefault("protocol", "TCP")
            p.setdefault("targetPort", p.get("port"))
            if spec["type"] in ("LoadBalancer", "NodePort") and "nodePort" not in p:
                p["nodePort"] = (old_ports.get(p.get("name")) or {}).get("nodePort") or self._node_port()
        if old is not None and (old.get("spec") or {}).get("clusterIP"):
            spec["clusterIP"] = old["spec"]["clusterIP"]
        elif spec.get("clusterIP") != "None" and spec["type"] != "ExternalName":
            spec["clusterIP"] = str(ipaddress.IPv4Address(self._next_ip))
            self._next_ip += 1
        if spec.get("clusterIP"):
            spec["clusterIPs"] = [spec["clusterIP"]]
        if op == "CREATE":
            new["status"] = {"loadBalancer": {}}

    def _node_port(self) -> int:
        self._next_node_port += 1
        return self._next_node_port

    def _pods(self, op, kind, new, old):
        spec = new.get("spec") or {}
        containers = spec.get("containers") or []
        if not containers:
            raise _invalid(kind, new, "spec.containers: Required value")
        for i, c in enumerate(containers):
            if not c.get("name"):
                raise _invalid(kind, new, f"spec.containers[{i}].name: Required value")
            if not c.get("image"):
                raise _invalid(kind, new, f"spec.containers[{i}].image: Required value")
            for which in ("requests", "limits"):
                for value in (((c.get("resources") or {}).get(which)) or {}).values():
                    parse_quantity(value)
        if op == "UPDATE":
            def mutable_stripped(s: dict) -> dict:
                s = copy.deepcopy(s)
                for c in s.get("containers") or []:
                    c.pop("image", None)
                for key in ("tolerations", "activeDeadlineSeconds", "nodeName"):
                    s.pop(key, None)
                return s
            if mutable_stripped(spec) != mutable_stripped(old.get("spec") or {}):
                raise _invalid(kind, new, "spec: Forbidden: pod updates may not change fields other than "
                               "`spec.containers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` "
                               "(only additions to existing tolerations)")
            return
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)
        sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        spec["serviceAccountName"] = spec["serviceAccount"] = sa
        tolerations = spec.setdefault("tolerations", [])
        for t in DEFAULT_TOLERATIONS:
            if not any(x.get("key") == t["key"] and x.get("effect") == t["effect"] for x in tolerations):
                tolerations.append(dict(t))
        namespace = new["metadata"]["namespace"]
        if self.store.find(K.SERVICEACCOUNTS, namespace, sa) is None:
            raise ApiError.forbidden("pods", new["metadata"]["name"], f"error looking up service account "
                                     f'{namespace}/{sa}: serviceaccount "{sa}" not found')
        new["status"] = {"phase": "Pending", "qosClass": _qos(containers)}

    def _deployments(self, op, kind, new, old):
        spec = new.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        spec.setdefault("strategy", {"type": "RollingUpdate",
                                     "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        self._check_template(kind, new, old)
        if op == "CREATE":
            new["status"] = {}

    def _replicasets(self, op, kind, new, old):
        new.setdefault("spec", {}).setdefault("replicas", 1)
        self._check_template(kind, new, old)

    def _check_template(self, kind, new, old):
        spec = new["spec"]
        if not isinstance(spec.get("replicas"), int) or spec["replicas"] < 0:
            raise _invalid(kind, new, "spec.replicas: Invalid value: must be greater than or equal to 0")
        if not spec.get("selector"):
            raise _invalid(kind, new, "spec.selector: Required value")
        reqs = selector_object_requirements(spec["selector"])
        template = spec.get("template") or {}
        if not reqs or not labels_match(reqs, template):
            raise _invalid(kind, new, "spec.template.metadata.labels: Invalid value: `selector` does not match "
                           "template `labels`")
        if not ((template.get("spec") or {}).get("containers")):
            raise _invalid(kind, new, "spec.template.spec.containers: Required value")
        if old is not None and (old.get("spec") or {}).get("selector") != spec["selector"]:
            raise _invalid(kind, new, "spec.selector: Invalid value: field is immutable")

    def _leases(self, op, kind, new, old):
        spec = new.setdefault("spec", {})
        for field in ("acquireTime", "renewTime"):
            if spec.get(field) is not None:
                spec[field] = parse_microtime(spec[field], f"spec.{field}")
        for field in ("leaseDurationSeconds", "leaseTransitions"):
            if spec.get(field) is not None and (not isinstance(spec[field], int) or isinstance(spec[field], bool)):
                raise ApiError.bad_request(f"spec.{field}: expected an int32, got {spec[field]!r}")

    def _rolebindings(self, op, kind, new, old):
        ref = new.get("roleRef") or {}
        if not ref.get("kind") or not ref.get("name"):
            raise _invalid(kind, new, "roleRef: Required value")
        if old is not None and old.get("roleRef") != ref:
            raise _invalid(kind, new, "roleRef: Invalid value: cannot change roleRef")

    def _networkpolicies(self, op, kind, new, old):
        if (new.get("spec") or {}).get("podSelector") is None:
            raise _invalid(kind, new, "spec.podSelector: Required value")

    def _resourcequotas(self, op, kind, new, old):
        for res, value in ((new.get("spec") or {}).get("hard") or {}).items():
            parse_quantity(value)

    def _events(self, op, kind, new, old):
        if not new.get("involvedObject"):
            raise _invalid(kind, new, "involvedObject: Required value")


def _qos(containers: list[dict]) -> str:
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        any_set = any_set or bool(req) or bool(lim)
        for r in ("cpu", "memory"):
            if r not in lim or req.get(r, lim.get(r)) != lim.get(r):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"
