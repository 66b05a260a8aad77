"""Keep-alive and harvest: heartbeat every running cluster, observe it, harvest it when idle.

Heartbeats renew the cluster's own dead-man switch (so a cluster whose daemon is gone
stops itself) and bring back its idle facts; the harvest decision is the pure
`recc.harvest.decide`. Nothing here depends on a client being connected.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from recc.errors import RECCError
from recc.harvest import decide, format_duration, in_local_clock
from recc.spec import ClusterSpec, ClusterStatus
from reccd.manager import ClusterManager

log = logging.getLogger("reccd.keepalive")

TICK = 1.0
HEARTBEAT_INTERVAL = float(os.environ.get("RECC_HEARTBEAT_INTERVAL", "5"))
OBSERVE_INTERVAL = 2.0


class KeepAlive:
    def __init__(self, manager: ClusterManager) -> None:
        self.manager = manager
        self._last_beat: dict[str, float] = {}
        self._last_observe = 0.0
        self._busy: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.running = True

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop heartbeating (at logout: persistent clusters then live on their own TTL)."""
        self.running = False
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while self.running:
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - the keep-alive loop must never stop
                log.exception("keep-alive tick failed")
            await asyncio.sleep(TICK)

    async def tick(self) -> None:
        live = await self.manager.state.list()
        rows = [r for r in live if r["status"] == ClusterStatus.RUNNING.value]
        # a cluster's TTL runs from its scheduler's start: heartbeat it while it is still being made
        creating = [r for r in live if r["status"] == ClusterStatus.CREATING.value and r["checkpoint"]]
        now = time.time()
        jobs = []
        for row in creating:
            spec = self.manager.spec_of(row)[0]  # parsed once per row version, not every tick
            if row["id"] not in self._busy and now - self._last_beat.get(row["id"], 0) >= self._interval(spec):
                self._busy.add(row["id"])
                jobs.append(self._renew(row, spec))
        for row in rows:
            spec = self.manager.spec_of(row)[0]  # parsed once per row version, not every tick
            if row["id"] not in self._busy and now - self._last_beat.get(row["id"], 0) >= self._interval(spec):
                self._busy.add(row["id"])
                jobs.append(self._beat(row, spec))
        if now - self._last_observe >= OBSERVE_INTERVAL:
            self._last_observe = now
            jobs.append(self._observe(rows))
        if jobs:
            await asyncio.gather(*jobs)

    @staticmethod
    def _interval(spec: ClusterSpec) -> float:
        return max(0.5, min(HEARTBEAT_INTERVAL, spec.heartbeat_ttl / 3))

    @staticmethod
    def _extension(provider: Any, row: dict[str, Any]) -> dict[str, Any]:
        """The user's `recc extend`, for providers whose heartbeat carries it to an in-cluster reaper
        (EKS: an annotation on the Lease); the daemon's own harvest reads it from the row."""
        if getattr(provider, "heartbeat_carries_extension", False) and row.get("extended_until"):
            return {"extended_until": row["extended_until"]}
        return {}

    async def _renew(self, row: dict[str, Any], spec: ClusterSpec) -> None:
        """Heartbeat a cluster under construction; before its scheduler answers there is nothing to renew."""
        try:
            provider = self.manager.provider_for(row)
            await provider.heartbeat(row["name"], row["checkpoint"], spec.heartbeat_ttl,
                                     **self._extension(provider, row))
            self._last_beat[row["id"]] = time.time()
        except RECCError:
            pass
        finally:
            self._busy.discard(row["id"])

    async def _beat(self, row: dict[str, Any], spec: ClusterSpec) -> None:
        cid = row["id"]
        try:
            provider = self.manager.provider_for(row)
            try:
                facts = await provider.heartbeat(row["name"], row["checkpoint"] or {}, spec.heartbeat_ttl,
                                                 **self._extension(provider, row))
            except RECCError as exc:
                log.warning("heartbeat to %s failed: %s", row["name"], exc.message)
                return
            received = time.time()
            self._last_beat[cid] = received
            # the scheduler's clock may differ from ours: decide in ours (extend and deadlines are ours)
            facts = in_local_clock(facts, received)
            self.manager.facts[cid] = facts
            decision = decide(facts, idle_timeout=spec.idle_timeout, no_client_timeout=spec.no_client_timeout,
                              warn_before=spec.harvest_warning, now=time.time(),
                              extended_until=row.get("extended_until"))
            self.manager.decisions[cid] = decision
            if decision.action in ("warn", "harvest") and not row.get("warned_at"):
                await self._warn(row, decision)
            elif decision.action == "harvest":
                await self.manager.event(row, "cluster.harvested", f"harvested: {decision.reason}",
                                         reason=decision.reason, clock=decision.clock)
                self.manager.spawn(self._harvest(row, decision.reason))
        finally:
            self._busy.discard(cid)

    async def _warn(self, row: dict[str, Any], decision: Any) -> None:
        await self.manager.state.update(row["id"], warned_at=time.time())
        left = format_duration(max(0.0, decision.seconds_left or 0.0))
        await self.manager.event(
            row, "cluster.harvest-warning",
            f"cluster {row['name']} will be deleted in {left}: {decision.reason}. "
            f"Keep it with `recc extend {row['name']}` or cluster.extend().",
            deadline=decision.deadline, reason=decision.reason, clock=decision.clock)

    async def _harvest(self, row: dict[str, Any], reason: str) -> None:
        try:
            await self.manager.delete(row["id"], reason=f"harvested: {reason}", by="harvest")
        except RECCError as exc:
            log.warning("harvesting %s: %s", row["name"], exc.message)

    async def _observe(self, rows: list[dict[str, Any]]) -> None:
        by_provider: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
        for r in rows:
            by_provider.setdefault(self.manager.provider_key(r), []).append(r)
        for key, group in by_provider.items():
            statuses = await self.manager.provider(*key).status([r["name"] for r in group],
                                                                 [r["checkpoint"] or {} for r in group])
            for r, st in zip(group, statuses):
                before = self.manager.observed.get(r["id"])
                self.manager.observed[r["id"]] = st
                if not st.alive and not self.manager.lock(r["id"]).locked():
                    self.manager.spawn(self._lost(r))
                    continue
                if before is not None and before.nodes != st.nodes:
                    await self.manager.record_nodes(r, st.nodes)
                if before is None or (before.workers_ready, before.nodes) != (st.workers_ready, st.nodes):
                    self.manager.changed()  # shown at once, not with the next deferred listing
                if before is None or before.workers_ready != st.workers_ready:
                    self.manager.bus.publish("cluster.workers", r["name"], id=r["id"], ready=st.workers_ready,
                                             desired=r["target_workers"])

    async def _lost(self, row: dict[str, Any]) -> None:
        try:
            await self.manager.delete(row["id"], reason="the scheduler stopped unexpectedly; cluster removed",
                                      by="daemon")
        except RECCError as exc:
            log.warning("removing lost cluster %s: %s", row["name"], exc.message)
