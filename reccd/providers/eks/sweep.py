"""Which RECC clusters on the EKS cluster a restarted daemon may remove as its own leftovers.

A user may run several daemons against one EKS cluster (a desktop and a laptop, job daemons):
each stamps its namespaces (label ``recc.dev/daemon``) and groups (tag ``recc:daemon``) with its
id (`reccd.identity`). After a restart, reconcile removes the clusters `list_owned` names that
its state does not explain; this module makes that list:

- stamped with this daemon's id: ours; removed unless its heartbeat Lease is still fresh;
- stamped with another id: another daemon's; never;
- unstamped (made by a RECC before the stamp existed): removed only when its Lease expired,
  or when it has none and was made more than ``grace`` ago (as the in-cluster reaper judges).

A fresh Lease always protects: whoever renews it is alive.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from recc import manifests as M
from recc.harvest import lease_decision
from reccd.providers.eks.capacity import own_groups

if TYPE_CHECKING:
    from reccd.providers.eks.provider import EksProvider

NO_LEASE_GRACE = 15 * 60.0  # as the reaper's default: a Lease comes only once the namespace exists


def _epoch(value: Any) -> float | None:
    """Epoch seconds of a Kubernetes or AWS time (a datetime, or RFC 3339 text)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


async def sweepable(provider: "EksProvider", grace: float = NO_LEASE_GRACE) -> list[str]:
    """Names of this user's clusters on the EKS cluster that this daemon may sweep (see the module)."""
    found: dict[str, dict[str, Any]] = {}  # cluster -> {"stamps": set of ids (None: none), "born": epoch}

    def note(cluster: str | None, stamp: str | None, born: Any) -> None:
        if not cluster:
            return
        entry = found.setdefault(cluster, {"stamps": set(), "born": None})
        entry["stamps"].add(stamp or None)
        when = _epoch(born)
        if when is not None:
            entry["born"] = when if entry["born"] is None else min(entry["born"], when)

    selector = f"app.kubernetes.io/managed-by=reccd,{M.LABEL_PREFIX}user={M.label_value(provider.user)}"
    for ns in (await provider.k8s("core", "list_namespace", label_selector=selector)).items:
        labels = ns.metadata.labels or {}
        note(labels.get(f"{M.LABEL_PREFIX}cluster"), labels.get(M.DAEMON_LABEL), ns.metadata.creation_timestamp)
    for g in await own_groups(provider):
        tags = {t["Key"]: t["Value"] for t in g.get("Tags", [])}
        note(tags.get("recc:cluster"), tags.get(M.DAEMON_TAG), g.get("CreatedTime"))

    mine = provider.daemon_id
    out = []
    now = time.time()
    for cluster, entry in sorted(found.items()):
        stamps = entry["stamps"] - {None}
        if stamps - {mine} or (mine is None and stamps):
            continue  # another daemon's (or, for an unidentified caller, anybody's stamped cluster)
        ours = bool(stamps)
        lease = await provider.k8s("coord", "read_namespaced_lease", M.HEARTBEAT_LEASE,
                                   M.namespace_name(provider.user, cluster), ok=(404,))
        spec = lease.spec if lease is not None else None
        verdict = lease_decision(_epoch(spec.renew_time) if spec else None,
                                 spec.lease_duration_seconds if spec else None,
                                 entry["born"] if entry["born"] is not None else now, now=now,
                                 grace=0.0 if ours else grace)
        if verdict is not None and verdict.action == "harvest":
            out.append(cluster)
    return out
