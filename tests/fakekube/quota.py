"""ResourceQuota accounting and admission, as the real quota admission plugin does it."""

from __future__ import annotations

from decimal import Decimal

from tests.fakekube import kinds as K
from tests.fakekube import quantity as Q
from tests.fakekube.errors import ApiError

TERMINAL = ("Succeeded", "Failed")
# Legacy object-count names -> (kind key, extra filter on the object).
_LEGACY_COUNTS = {"services": "services", "secrets": "secrets", "configmaps": "configmaps",
                  "resourcequotas": "resourcequotas"}


def _canonical(resource: str) -> str:
    return {"cpu": "requests.cpu", "memory": "requests.memory"}.get(resource, resource)


def pod_usage(pod: dict) -> dict[str, Decimal]:
    """What one pod contributes to a quota."""
    usage: dict[str, Decimal] = {"pods": Decimal(1), "count/pods": Decimal(1)}
    for res, v in Q.pod_requests(pod).items():
        usage[f"requests.{res}"] = v
    for res, v in Q.pod_limits(pod).items():
        usage[f"limits.{res}"] = v
    return usage


def _counts_pod(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") not in TERMINAL and not pod["metadata"].get("deletionTimestamp")


def _object_count(store, resource: str, namespace: str) -> Decimal | None:
    if resource in _LEGACY_COUNTS:
        return Decimal(sum(1 for _ in store.iter(K.BY_KEY[_LEGACY_COUNTS[resource]], namespace)))
    if resource == "services.loadbalancers":
        return Decimal(sum(1 for s in store.iter(K.SERVICES, namespace)
                           if (s.get("spec") or {}).get("type") == "LoadBalancer"))
    if resource.startswith("count/"):
        kind = K.BY_KEY.get(resource[len("count/"):])
        if kind is None:
            return Decimal(0)
        if kind.key == "pods":
            return Decimal(sum(1 for p in store.iter(K.PODS, namespace) if _counts_pod(p)))
        return Decimal(sum(1 for _ in store.iter(kind, namespace)))
    return None


def usage(store, namespace: str, hard: dict[str, str]) -> dict[str, Decimal]:
    """``status.used`` of a quota with these ``spec.hard`` keys."""
    totals: dict[str, Decimal] = {}
    for pod in store.iter(K.PODS, namespace):
        if _counts_pod(pod):
            for res, v in pod_usage(pod).items():
                totals[res] = totals.get(res, Decimal(0)) + v
    out = {}
    for res in hard:
        count = _object_count(store, res, namespace)
        out[res] = count if count is not None else totals.get(_canonical(res), Decimal(0))
    return out


def quota_status(store, quota: dict) -> dict:
    hard = (quota.get("spec") or {}).get("hard") or {}
    used = usage(store, quota["metadata"]["namespace"], hard)
    return {"hard": dict(hard), "used": {k: Q.fmt(k, v) for k, v in used.items()}}


def admit(store, kind: K.Kind, obj: dict) -> None:
    """Refuse a create that would exceed a quota of its namespace (403, the real messages)."""
    namespace = obj["metadata"].get("namespace")
    quotas = list(store.iter(K.QUOTAS, namespace))
    if not quotas:
        return
    name = obj["metadata"]["name"]
    if kind.key == "pods":
        delta = pod_usage(obj)
        containers = (obj.get("spec") or {}).get("containers") or []
    else:
        delta = {f"count/{kind.key}": Decimal(1)}
        if kind.key in _LEGACY_COUNTS.values():
            delta[kind.key] = Decimal(1)
        if kind.key == "services" and (obj.get("spec") or {}).get("type") == "LoadBalancer":
            delta["services.loadbalancers"] = Decimal(1)
        containers = []
    for quota in sorted(quotas, key=lambda q: q["metadata"]["name"]):
        hard = {k: Q.parse(v) for k, v in ((quota.get("spec") or {}).get("hard") or {}).items()}
        qname = quota["metadata"]["name"]
        if kind.key == "pods":
            missing = []
            for res in sorted(hard):
                base = _canonical(res)
                if base.startswith(("requests.", "limits.")) and base.split(".", 1)[1] in ("cpu", "memory"):
                    which, resource = base.split(".", 1)
                    lacking = [c.get("name", "") for c in containers
                               if resource not in ((c.get("resources") or {}).get(which) or {})
                               and not (which == "requests" and resource in
                                        ((c.get("resources") or {}).get("limits") or {}))]
                    if lacking:
                        missing.append(f"{res} for: {','.join(lacking)}")
            if missing:
                raise ApiError.forbidden(kind.plural, name, f"failed quota: {qname}: must specify "
                                         f"{'; '.join(missing)}", kind.group)
        used = usage(store, namespace, {k: "" for k in hard})
        over = [res for res in sorted(hard) if delta.get(_canonical(res), Decimal(0)) > 0
                and used[res] + delta.get(_canonical(res), Decimal(0)) > hard[res]]
        if over:
            def show(values: dict) -> str:
                return ",".join(f"{r}={Q.fmt(r, values.get(r, Decimal(0)))}" for r in over)
            requested = {r: delta.get(_canonical(r), Decimal(0)) for r in over}
            raise ApiError.forbidden(kind.plural, name, f"exceeded quota: {qname}, requested: {show(requested)}, "
                                     f"used: {show(used)}, limited: {show(hard)}", kind.group)
