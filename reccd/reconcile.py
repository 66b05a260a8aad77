"""After a restart: compare the journal with what really exists, and act on the difference.

Running clusters whose scheduler still answers are adopted again (tunnels, heartbeats);
half-made ones (pending, creating, deleting) and dead ones are removed from their last
journaled checkpoint; processes no row explains are removed too. Every action is an event.
"""

from __future__ import annotations

import logging

from recc.spec import ClusterStatus
from reccd.manager import ClusterManager

log = logging.getLogger("reccd.reconcile")


async def reconcile(manager: ClusterManager) -> None:
    state = manager.state
    rows = await state.list()
    for row in rows:
        try:
            checkpoint, journal_damaged = await state.last_done(row["id"])
            if row.get("corrupt") or journal_damaged:
                await manager.event(row, "cluster.corrupt",
                                    "part of this cluster's journal was damaged; cleaning up what can be found",
                                    damaged=row.get("corrupt") or "journal")
            checkpoint = checkpoint or row["checkpoint"]
            status = row["status"]
            if status in (ClusterStatus.RUNNING.value, ClusterStatus.SCALING.value) and checkpoint and row["spec"]:
                observed = await manager.observe_one(row, checkpoint)
                if observed.alive:
                    if status == ClusterStatus.SCALING.value:
                        checkpoint = await manager.provider_for(row).scale(
                            row["name"], row["target_workers"], checkpoint)
                        row = await state.update(row["id"], checkpoint=checkpoint) or row
                    await manager.adopt(row, checkpoint)
                    await manager.set_status(row, ClusterStatus.RUNNING, "adopted again after the daemon restarted")
                    continue
            reason = (f"removed after the daemon restarted: it was {status} when the previous daemon stopped"
                      if status != ClusterStatus.RUNNING.value else
                      "removed after the daemon restarted: its scheduler no longer runs")
            await manager.remove_leftover(row, checkpoint, reason)
        except Exception:  # noqa: BLE001 - one cluster's trouble must not stop the others' cleanup
            log.exception("reconciling %s failed", row["name"])
    known = {r["name"] for r in await state.list()}
    # every (provider, context) a row names: clusters of one EKS context never explain another's
    for pname, context in sorted({("local", None)} | {manager.provider_key(r) for r in rows},
                                 key=lambda k: (k[0], k[1] or "")):
        provider = manager.provider(pname, context)
        for name in await provider.list_owned():
            if name not in known:
                log.warning("removing processes of %s, which no live cluster explains", name)
                await provider.delete(name, None)
                await state.add_event(None, "orphan.removed", f"removed leftover processes of {name}",
                                      {"provider": pname})
