"""`recc harvest --provider eks`: the in-cluster reaper (docs/eks-operations.md).

Run by a CronJob in ``recc-system`` (objects from ``recc harvest --print-cronjob``, pure in
`recc.reaper_manifests`), or by hand. For every RECC namespace of the context's EKS cluster:

- its heartbeat Lease expired (or never came): the daemon is gone, frozen or asleep; delete it;
- the Lease is fresh: ask the scheduler for its idle facts (the same port-forward and TLS the
  daemon's own provider uses) and judge them with `recc.harvest.decide`, the daemon's rule.

Deletion is `EksProvider.delete` acting as the owner (the provisioner role assumed with the
owner's ``recc:user`` session tag), the daemon's own path, so nothing of the cluster is left.
Each harvest is recorded as a Kubernetes Event in ``recc-system`` (reason ``Harvested``, the
reason in its message) and printed (the CronJob's log).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from recc import manifests as M
from recc.errors import RECCError
from recc.harvest import decide, in_local_clock, lease_decision
from recc.reaper_manifests import REAPER_NAMESPACE
from recc.spec import ClusterSpec
from reccd.contexts import Context
from reccd.providers.eks.apis import EksApis
from reccd.providers.eks.provider import EksProvider

log = logging.getLogger("reccd.reaper")

BY = "recc reaper"
REAPER_USER = "recc-reaper"  # the session tag of the reaper's own listing calls
NO_LEASE_GRACE = 15 * 60.0


def owner_of(ns: Any) -> tuple[str | None, str | None, dict[str, Any]]:
    """(user, cluster, harvest settings) of a RECC namespace (a kubernetes client model); None where unknown."""
    labels = ns.metadata.labels or {}
    raw = (ns.metadata.annotations or {}).get(M.HARVEST_ANNOTATION)
    settings: dict[str, Any] = {}
    if raw:
        try:
            settings = json.loads(raw)
        except ValueError:
            log.warning("namespace %s: unreadable %s annotation", ns.metadata.name, M.HARVEST_ANNOTATION)
    user = settings.get("user") or labels.get(f"{M.LABEL_PREFIX}user")
    cluster = settings.get("cluster") or labels.get(f"{M.LABEL_PREFIX}cluster")
    return user, cluster, settings


def _spec(settings: dict[str, Any]) -> ClusterSpec:
    """The harvest timeouts from the namespace's annotation (the spec defaults where missing)."""
    keys = ("idle_timeout", "no_client_timeout", "harvest_warning", "heartbeat_ttl")
    try:
        return ClusterSpec().replace(**{k: settings[k] for k in keys if k in settings})
    except RECCError:
        return ClusterSpec()


def lease_time(value: Any) -> float | None:
    """Epoch seconds of a Lease or object time (a datetime from the client, or RFC 3339 text)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


class Reaper:
    """One pass over the RECC namespaces of one context's EKS cluster."""

    def __init__(self, context: Context, workdir: Path | None = None, *, grace: float = NO_LEASE_GRACE,
                 events_namespace: str = REAPER_NAMESPACE, poll: float = 1.0,
                 contexts: dict[str, Context] | None = None) -> None:
        self.context, self.workdir, self.grace, self.poll = context, workdir, grace, poll
        self.events_namespace = events_namespace
        # other configured contexts on the same EKS cluster: a namespace is deleted through the one it records
        self.contexts = {name: c for name, c in (contexts or {}).items() if same_eks_cluster(c, context)}
        self.lister = EksApis(workdir, context, user=REAPER_USER)
        self._providers: dict[tuple[str, str], EksProvider] = {}

    def provider(self, user: str, context: str | None = None) -> EksProvider:
        """The owner's provider in the cluster's own context (else the reaper's): its calls carry the
        owner's session tag and that context's role and settings, as the daemon's do."""
        ctx = self.contexts.get(context or "", self.context)
        if (user, ctx.name) not in self._providers:
            self._providers[(user, ctx.name)] = EksProvider(self.workdir, ctx, user=user, poll=self.poll)
        return self._providers[(user, ctx.name)]

    async def judge(self, ns: Any) -> dict[str, Any]:
        name = ns.metadata.name
        user, cluster, settings = owner_of(ns)
        out: dict[str, Any] = {"name": cluster or name, "namespace": name, "user": user, "source": f"eks:{name}",
                               "context": settings.get("context") or self.context.name,
                               "action": "keep", "clock": None, "reason": "", "seconds_left": None,
                               "deleted": False, "error": None}
        if not user or not cluster or M.namespace_name(user, cluster) != name:
            out["reason"] = "cannot tell its owner and cluster from its labels; see `recc orphans`"
            return out
        lease = await self.lister.k8s("coord", "read_namespaced_lease", M.HEARTBEAT_LEASE, name, ok=(404,))
        spec = lease.spec if lease is not None else None
        now = time.time()
        verdict = lease_decision(lease_time(spec.renew_time) if spec else None,
                                 spec.lease_duration_seconds if spec else None,
                                 lease_time(ns.metadata.creation_timestamp) or now, now=now, grace=self.grace)
        if verdict is None:  # the daemon is alive: judge idleness as it would (it may be asleep meanwhile)
            try:
                facts = await self.provider(user, settings.get("context")).idle_facts(cluster, {})
            except RECCError as exc:
                out["reason"] = f"heartbeat Lease is fresh; the scheduler did not answer ({exc.message})"
                return out
            extended = (lease.metadata.annotations or {}).get(M.EXTENDED_ANNOTATION)
            cspec = _spec(settings)
            verdict = decide(in_local_clock(facts, time.time()), idle_timeout=cspec.idle_timeout,
                             no_client_timeout=cspec.no_client_timeout, warn_before=cspec.harvest_warning,
                             now=time.time(), extended_until=float(extended) if extended else None)
        out.update(action="harvest" if verdict.action == "harvest" else "keep", clock=verdict.clock,
                   reason=verdict.reason, seconds_left=verdict.seconds_left)
        return out

    async def remove(self, result: dict[str, Any]) -> None:
        try:
            await self.provider(result["user"], result["context"]).delete(result["name"], None)
            result["deleted"] = True
        except RECCError as exc:
            result["error"] = exc.message
        await self.record(result)

    async def record(self, result: dict[str, Any]) -> None:
        """A Kubernetes Event in the reaper's namespace, which outlives the cluster's own namespace."""
        now = datetime.now(timezone.utc)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        done = result["deleted"]
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{result['namespace']}.{int(now.timestamp() * 1000):x}",
                         "namespace": self.events_namespace,
                         "labels": {f"{M.LABEL_PREFIX}user": M.label_value(result["user"]),
                                    f"{M.LABEL_PREFIX}cluster": M.label_value(result["name"]),
                                    f"{M.LABEL_PREFIX}namespace": M.label_value(result["namespace"])}},
            "involvedObject": {"apiVersion": "v1", "kind": "Namespace", "name": result["namespace"]},
            "reason": "Harvested" if done else "HarvestFailed", "type": "Normal" if done else "Warning",
            "message": f"harvested by {BY}: {result['reason']}" + ("" if done else f"; failed: {result['error']}"),
            "source": {"component": "recc-reaper"}, "reportingComponent": "recc-reaper",
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        }
        try:
            await self.lister.k8s("core", "create_namespaced_event", self.events_namespace, event, ok=(404, 409))
        except RECCError as exc:  # the deletion is the duty; the record is printed in any case
            log.warning("could not record the harvest of %s: %s", result["namespace"], exc.message)

    async def run(self, dry_run: bool = False) -> list[dict[str, Any]]:
        """Judge every RECC namespace and (unless ``dry_run``) delete what must go."""
        try:
            found = await self.lister.k8s("core", "list_namespace", label_selector="app.kubernetes.io/managed-by=reccd")
            results = list(await asyncio.gather(*(self.judge(ns) for ns in found.items)))
            if not dry_run:
                await asyncio.gather(*(self.remove(r) for r in results if r["action"] == "harvest"))
            return results
        finally:
            for provider in self._providers.values():
                await provider.close()
            await self.lister.close_api()


def same_eks_cluster(a: Context, b: Context) -> bool:
    """Whether two contexts reach the same EKS cluster (region, name and API server)."""
    return (a.region, a.eks_cluster, a.kubernetes_api_url) == (b.region, b.eks_cluster, b.kubernetes_api_url)


async def reap(context: Context, *, dry_run: bool = False, workdir: Path | None = None,
               grace: float = NO_LEASE_GRACE, poll: float = 1.0,
               contexts: dict[str, Context] | None = None) -> list[dict[str, Any]]:
    """One reaper pass over ``context``'s EKS cluster (see the module docstring); ``contexts``: the
    configured ones a namespace may record as its own (deleted through that one)."""
    return await Reaper(context, workdir, grace=grace, poll=poll, contexts=contexts).run(dry_run)


async def reap_all(contexts: dict[str, Context], *, dry_run: bool = False, workdir: Path | None = None,
                   grace: float = NO_LEASE_GRACE, poll: float = 1.0) -> list[dict[str, Any]]:
    """`recc harvest --provider eks` without ``--context``: one pass per distinct EKS cluster of the
    configured contexts, each namespace judged and deleted in the context it was made in."""
    passes: list[Context] = []
    for ctx in contexts.values():
        if ctx.eks_cluster and not any(same_eks_cluster(ctx, p) for p in passes):
            passes.append(ctx)
    results: list[dict[str, Any]] = []
    for ctx in passes:
        results += await reap(ctx, dry_run=dry_run, workdir=workdir, grace=grace, poll=poll, contexts=contexts)
    return results
