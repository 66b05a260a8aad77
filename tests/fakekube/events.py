"""Events the fake's controllers record (core/v1 Event), and pod condition helpers."""

from __future__ import annotations

import hashlib

from tests.fakekube import kinds as K
from tests.fakekube.store import Store


def record(store: Store, obj: dict, reason: str, message: str, *, type_: str = "Normal",
           component: str = "fakekube") -> None:
    """Add an Event about ``obj``, or bump the count of the same one (same object, reason, message)."""
    meta = obj["metadata"]
    namespace = meta.get("namespace") or "default"
    ns_obj = store.find(K.NAMESPACES, None, namespace)
    if ns_obj is None or ns_obj["metadata"].get("deletionTimestamp"):
        return
    digest = hashlib.sha1(f"{meta.get('uid')}/{reason}/{message}".encode()).hexdigest()[:16]
    name = f"{meta['name']}.{digest}"
    now = store.clock.rfc3339()
    existing = store.find(K.EVENTS, namespace, name)
    if existing is not None:
        if existing.get("lastTimestamp") == now:
            return   # at most one bump a second, so a retrying controller cannot spin the loop
        existing["count"] = existing.get("count", 1) + 1
        existing["lastTimestamp"] = now
        store.write(K.EVENTS, existing)
        return
    kind = K.BY_KIND.get((obj.get("apiVersion", ""), obj.get("kind", "")))
    store.write(K.EVENTS, {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": namespace, "uid": digest, "creationTimestamp": now},
        "involvedObject": {"kind": obj.get("kind"), "apiVersion": kind.api_version if kind else obj.get("apiVersion"),
                           "namespace": meta.get("namespace"), "name": meta["name"], "uid": meta.get("uid"),
                           "resourceVersion": meta.get("resourceVersion")},
        "reason": reason, "message": message, "type": type_, "count": 1,
        "source": {"component": component}, "reportingComponent": component, "reportingInstance": component,
        "firstTimestamp": now, "lastTimestamp": now,
    })


def set_condition(obj: dict, now: str, type_: str, status: str, reason: str | None = None,
                  message: str | None = None) -> None:
    """Set one status condition; lastTransitionTime changes only when the status does."""
    conditions = obj.setdefault("status", {}).setdefault("conditions", [])
    cond = next((c for c in conditions if c.get("type") == type_), None)
    if cond is None:
        cond = {"type": type_}
        conditions.append(cond)
    if cond.get("status") != status:
        cond["lastTransitionTime"] = now
    cond["status"] = status
    cond.pop("lastProbeTime", None)
    for key, value in (("reason", reason), ("message", message)):
        if value is None:
            cond.pop(key, None)
        else:
            cond[key] = value


def condition(obj: dict, type_: str) -> dict | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type_), None)
