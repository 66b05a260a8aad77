"""The scheduler: binds Pending pods to Nodes that fit, or says why none does.

Filters, in the default scheduler's order: node unschedulable, untolerated NoSchedule /
NoExecute taints (a NotReady node counts as tainted ``node.kubernetes.io/not-ready``),
``nodeSelector`` and required node affinity, then resources: the pod's requests (cpu,
memory, nvidia.com/gpu, any other extended resource, plus one pod) against the node's
allocatable minus the requests of the non-terminal pods already bound there and, on nodes
made from EC2 instances, the EKS daemonset pods (aws-node, kube-proxy). A pod that fits
nowhere stays Pending with ``PodScheduled=False``, reason ``Unschedulable`` and the real
message shape, e.g. ``0/2 nodes are available: 2 Insufficient memory.``, plus a
FailedScheduling event.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

from recc.plan import DAEMONSET_CPU_MILLIS, DAEMONSET_MEMORY_MIB, DAEMONSET_PODS

from tests.fakekube import kinds as K
from tests.fakekube import quantity as Q
from tests.fakekube.events import condition, record, set_condition
from tests.fakekube.nodes import INSTANCE_ANNOTATION
from tests.fakekube.store import Store

TERMINAL = ("Succeeded", "Failed")
EKS_DAEMONSETS = {"cpu": Decimal(DAEMONSET_CPU_MILLIS) / 1000, "memory": Decimal(DAEMONSET_MEMORY_MIB * 2**20),
                  "pods": Decimal(DAEMONSET_PODS)}


def tolerates(tolerations: list[dict], taint: dict) -> bool:
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if (t.get("operator") or "Equal") == "Exists":
            if not t.get("key") or t["key"] == taint["key"]:
                return True
        elif t.get("key") == taint["key"] and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _expr_matches(expr: dict, labels: dict[str, str]) -> bool:
    key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt") and key in labels:
        try:
            a, b = int(labels[key]), int(values[0])
        except (ValueError, IndexError):
            return False
        return a > b if op == "Gt" else a < b
    return False


def selector_fits(pod: dict, node: dict) -> bool:
    labels = node["metadata"].get("labels") or {}
    spec = pod.get("spec") or {}
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if required:
        terms = required.get("nodeSelectorTerms") or []
        return any(all(_expr_matches(e, labels) for e in term.get("matchExpressions") or []) for term in terms)
    return True


def node_taints(node: dict) -> list[dict]:
    taints = [t for t in (node.get("spec") or {}).get("taints") or [] if t.get("effect") in ("NoSchedule", "NoExecute")]
    ready = condition(node, "Ready")
    if ready is None or ready.get("status") != "True":
        taints.append({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"})
    return taints


def _taint_text(taint: dict) -> str:
    return f"{{{taint['key']}: {taint.get('value', '')}}}"


def allocatable(node: dict) -> dict[str, Decimal]:
    out = {k: Q.parse(v) for k, v in ((node.get("status") or {}).get("allocatable") or {}).items()}
    if INSTANCE_ANNOTATION in (node["metadata"].get("annotations") or {}):
        for k, v in EKS_DAEMONSETS.items():
            out[k] = out.get(k, Decimal(0)) - v
    return out


class Scheduler:
    def __init__(self, store: Store):
        self.store = store

    def run_once(self) -> None:
        store = self.store
        pending = [p for p in store.iter(K.PODS) if not (p.get("spec") or {}).get("nodeName")
                   and not p["metadata"].get("deletionTimestamp")
                   and (p.get("status") or {}).get("phase", "Pending") == "Pending"]
        if not pending:
            return
        nodes = sorted(store.iter(K.NODES), key=lambda n: n["metadata"]["name"])
        nodes = [n for n in nodes if not n["metadata"].get("deletionTimestamp")]
        used: dict[str, dict[str, Decimal]] = {n["metadata"]["name"]: {} for n in nodes}
        for pod in store.iter(K.PODS):
            node_name = (pod.get("spec") or {}).get("nodeName")
            if node_name in used and (pod.get("status") or {}).get("phase") not in TERMINAL:
                self._add(used[node_name], pod)
        for pod in sorted(pending, key=lambda p: (p["metadata"]["creationTimestamp"], p["metadata"]["name"])):
            self._schedule(pod, nodes, used)

    @staticmethod
    def _add(used: dict[str, Decimal], pod: dict) -> None:
        for k, v in Q.pod_requests(pod).items():
            used[k] = used.get(k, Decimal(0)) + v
        used["pods"] = used.get("pods", Decimal(0)) + 1

    def _schedule(self, live_pod: dict, nodes: list[dict], used: dict[str, dict[str, Decimal]]) -> None:
        pod = {**live_pod, "status": dict(live_pod.get("status") or {})}
        try:
            requests = Q.pod_requests(pod)
        except Exception:
            requests = {}
        tolerations = (pod.get("spec") or {}).get("tolerations") or []
        reasons: Counter = Counter()
        chosen = None
        for node in nodes:
            name = node["metadata"]["name"]
            if (node.get("spec") or {}).get("unschedulable"):
                reasons["node(s) were unschedulable"] += 1
                continue
            bad = next((t for t in node_taints(node) if not tolerates(tolerations, t)), None)
            if bad is not None:
                reasons[f"node(s) had untolerated taint {_taint_text(bad)}"] += 1
                continue
            if not selector_fits(pod, node):
                reasons["node(s) didn't match Pod's node affinity/selector"] += 1
                continue
            room = allocatable(node)
            short = []
            if used[name].get("pods", Decimal(0)) + 1 > room.get("pods", Decimal(110)):
                short.append("Too many pods")
            for res in sorted(requests):
                if res in ("ephemeral-storage",) or requests[res] <= 0:
                    continue
                if used[name].get(res, Decimal(0)) + requests[res] > room.get(res, Decimal(0)):
                    short.append(f"Insufficient {res}")
            if short:
                for s in short:
                    reasons[s] += 1
                continue
            chosen = node
            break
        now = self.store.clock.rfc3339()
        if chosen is not None:
            name = chosen["metadata"]["name"]
            self._add(used[name], pod)
            pod = self.store.find(K.PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
            pod["spec"]["nodeName"] = name
            set_condition(pod, now, "PodScheduled", "True")
            self.store.write(K.PODS, pod)
            record(self.store, pod, "Scheduled", f"Successfully assigned {pod['metadata']['namespace']}/"
                   f"{pod['metadata']['name']} to {name}", component="default-scheduler")
            return
        if nodes:
            detail = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items(), key=lambda x: f"{x[1]} {x[0]}"))
            message = f"0/{len(nodes)} nodes are available: {detail}."
        else:
            message = "no nodes available to schedule pods"
        current = condition(pod, "PodScheduled")
        if current and current.get("message") == message and current.get("status") == "False":
            return
        pod = self.store.find(K.PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
        set_condition(pod, now, "PodScheduled", "False", "Unschedulable", message)
        self.store.write(K.PODS, pod)
        record(self.store, pod, "FailedScheduling", message, type_="Warning", component="default-scheduler")
