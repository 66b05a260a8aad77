"""Cluster lifecycle in the daemon: create (journaled step by step), scale, delete, observe.

The manager owns no I/O of its own beyond the state database: providers do the work,
tunnels relay the bytes, and every change is published on the event bus.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from recc.errors import BadRequest, ClusterExists, ClusterNotFound, ClusterNotReady, RECCError
from recc.plan import plan as make_plan
from recc.spec import MAX_WORKERS, ClusterSpec, ClusterStatus, check_name
from reccd.events import EventBus
from reccd.providers import Checkpoint, ClusterTLS, Provider, ProviderStatus, load_provider
from reccd.state import State
from reccd.tls import make_cluster_tls
from reccd.tunnel import DashboardTunnel, Tunnel

log = logging.getLogger("reccd.manager")

MONITOR_INTERVAL = 2.0


class ClusterManager:
    def __init__(self, state: State, bus: EventBus, workdir: Path) -> None:
        self.state = state
        self.bus = bus
        self.workdir = workdir
        self._providers: dict[str, Provider] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._tunnels: dict[str, tuple[Tunnel, DashboardTunnel]] = {}
        self._observed: dict[str, ProviderStatus] = {}
        self._monitor: asyncio.Task[None] | None = None

    # -- plumbing -------------------------------------------------------------------

    def provider(self, name: str) -> Provider:
        if name not in self._providers:
            self._providers[name] = load_provider(name, workdir=self.workdir / name)
        return self._providers[name]

    def _lock(self, cid: str) -> asyncio.Lock:
        return self._locks.setdefault(cid, asyncio.Lock())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _event(self, row: dict[str, Any], kind: str, message: str, **data: Any) -> None:
        await self.state.add_event(row["id"], kind, message, data)
        self.bus.publish(kind, row["name"], id=row["id"], message=message, **data)

    async def _set_status(self, row: dict[str, Any], status: ClusterStatus, message: str, **fields: Any) -> dict[str, Any]:
        new = await self.state.update(row["id"], status=status.value, **fields)
        assert new is not None
        await self._event(new, "cluster.status", message, status=status.value)
        return new

    async def find(self, name: str) -> dict[str, Any]:
        row = await self.state.find_live(name)
        if row is None:
            live = [r["name"] for r in await self.state.list()]
            raise ClusterNotFound(
                f"no running cluster named {name!r}",
                hint=f"running clusters: {', '.join(live)}" if live else "there are no running clusters; see `recc ls --all`",
            )
        return row

    # -- views ------------------------------------------------------------------------

    def view(self, row: dict[str, Any]) -> dict[str, Any]:
        """The public description of a cluster (no key material, no dashboard token)."""
        spec = ClusterSpec.from_dict(row["spec"])
        try:
            p = make_plan(spec)
            cost, nodes, instance = p.cost_per_hour, p.nodes, p.instance_type
        except RECCError:
            cost, nodes, instance = None, None, spec.instance_type
        observed = self._observed.get(row["id"])
        tunnels = self._tunnels.get(row["id"])
        return {
            "id": row["id"], "name": row["name"], "provider": row["provider"], "template": row["template"],
            "status": row["status"], "error": row["error"],
            "workers": {"desired": row["target_workers"], "ready": observed.workers_ready if observed else 0},
            "nodes": observed.nodes if observed else None, "planned_nodes": nodes,
            "instance_type": instance, "region": spec.region, "cost_per_hour": cost,
            "created_at": row["created_at"], "deleted_at": row["deleted_at"],
            "age_seconds": round(time.time() - row["created_at"], 1),
            "endpoints": {
                "scheduler": f"tls://127.0.0.1:{tunnels[0].port}" if tunnels else None,
                "dashboard": f"http://127.0.0.1:{tunnels[1].port}/status" if tunnels else None,
            },
            "tunnel": tunnels[0].info() if tunnels else {"state": "down"},
            "spec": spec.to_dict(),
        }

    async def list(self, include_gone: bool = False) -> list[dict[str, Any]]:
        return [self.view(r) for r in await self.state.list(include_gone)]

    async def describe(self, name: str) -> dict[str, Any]:
        row = await self.find(name)
        return dict(self.view(row), events=await self.state.events(row["id"]))

    async def connection(self, name: str) -> dict[str, Any]:
        """What a client needs to connect: the tunnel address and the client's TLS material."""
        row = await self.find(name)
        tunnels = self._tunnels.get(row["id"])
        if row["status"] not in (ClusterStatus.RUNNING.value, ClusterStatus.SCALING.value) or not tunnels:
            raise ClusterNotReady(f"cluster {row['name']!r} is {row['status']}", hint="wait until it is running")
        tls = row["tls"]
        return {
            "name": row["name"], "id": row["id"],
            "address": f"tls://127.0.0.1:{tunnels[0].port}",
            "dashboard_link": tunnels[1].dashboard_link(),
            "tls": {"ca": tls["ca_cert"], "cert": tls["client_cert"], "key": tls["client_key"]},
            "spec": row["spec"],
        }

    # -- create ----------------------------------------------------------------------

    async def create(self, spec_data: Any, name: str | None) -> dict[str, Any]:
        spec = ClusterSpec.from_dict(spec_data)
        make_plan(spec)  # refuse impossible specs before anything exists
        provider = self.provider(spec.provider)
        name = check_name(name or f"{spec.template}-{secrets.token_hex(2)}")
        tls = await asyncio.to_thread(make_cluster_tls, name)
        try:
            row = await self.state.insert_cluster(name, spec.to_dict(), asdict(tls), secrets.token_urlsafe(24))
        except sqlite3.IntegrityError:
            raise ClusterExists(f"a cluster named {name!r} is already running",
                                hint=f"attach with RSHClient({name!r}), or pick another name") from None
        await self._event(row, "cluster.created", f"cluster {name} requested", spec=spec.to_dict())
        lock = self._lock(row["id"])
        await lock.acquire()  # held until creation ends, so scale/delete wait for it
        self._spawn(self._create(row, spec, provider, tls, lock))
        return self.view(row)

    async def _create(self, row: dict[str, Any], spec: ClusterSpec, provider: Provider, tls: ClusterTLS,
                      lock: asyncio.Lock) -> None:
        last: Checkpoint | None = None
        try:
            row = await self._set_status(row, ClusterStatus.CREATING, "creating")
            steps = provider.create(row["name"], spec, tls)
            step = 0
            while True:
                step += 1
                await self.state.journal(row["id"], step, "intent")
                try:
                    checkpoint = await steps.__anext__()
                except StopAsyncIteration:
                    await self.state.journal(row["id"], step, "complete", last)
                    break
                last = checkpoint
                await self.state.journal(row["id"], step, "done", checkpoint)
                row = await self.state.update(row["id"], checkpoint=checkpoint) or row
                await self._event(row, "cluster.progress", f"step {step} done", step=step, has=sorted(checkpoint))
            await self._open_tunnels(row, provider, last or {})
            await self._observe_one(row, provider, last or {})
            await self._set_status(row, ClusterStatus.RUNNING, "running")
        except Exception as exc:  # noqa: BLE001 - any failure must remove what exists
            message = exc.message if isinstance(exc, RECCError) else f"internal error ({type(exc).__name__}); see the daemon log"
            log.exception("creating cluster %s failed", row["name"])
            await self._teardown(row, provider, last)
            await self._set_status(row, ClusterStatus.FAILED, f"creation failed: {message}", error=message,
                                   deleted_at=time.time())
        finally:
            lock.release()

    async def _open_tunnels(self, row: dict[str, Any], provider: Provider, last: Checkpoint) -> None:
        name = row["name"]

        async def scheduler() -> Any:
            current = await self.state.get(row["id"])
            return provider.endpoints(name, (current or row)["checkpoint"] or last).scheduler

        async def dashboard() -> Any:
            current = await self.state.get(row["id"])
            return provider.endpoints(name, (current or row)["checkpoint"] or last).dashboard

        sched = Tunnel(scheduler)
        dash = DashboardTunnel(dashboard, token=row["dashboard_token"])
        await sched.start()
        await dash.start()
        self._tunnels[row["id"]] = (sched, dash)

    async def _observe_one(self, row: dict[str, Any], provider: Provider, checkpoint: Checkpoint) -> None:
        [self._observed[row["id"]]] = await provider.status([row["name"]], [checkpoint])

    async def _close_tunnels(self, cid: str) -> None:
        for tunnel in self._tunnels.pop(cid, ()):
            await tunnel.close()

    async def _teardown(self, row: dict[str, Any], provider: Provider, last: Checkpoint | None) -> None:
        await self._close_tunnels(row["id"])
        self._observed.pop(row["id"], None)
        await provider.delete(row["name"], last)

    # -- scale and delete ---------------------------------------------------------------

    async def scale(self, name: str, n_workers: Any) -> dict[str, Any]:
        if isinstance(n_workers, bool) or not isinstance(n_workers, int) or not 0 <= n_workers <= MAX_WORKERS:
            raise BadRequest(f"n_workers must be a whole number between 0 and {MAX_WORKERS}, got {n_workers!r}")
        row = await self.find(name)
        async with self._lock(row["id"]):
            row = await self.find(row["id"])
            if row["status"] != ClusterStatus.RUNNING.value:
                raise ClusterNotReady(f"cluster {row['name']!r} is {row['status']}", hint="wait until it is running")
            spec = ClusterSpec.from_dict(row["spec"]).replace(n_workers=n_workers)
            make_plan(spec)
            row = await self._set_status(row, ClusterStatus.SCALING, f"scaling to {n_workers} workers")
            try:
                checkpoint = await self.provider(row["provider"]).scale(row["name"], n_workers, row["checkpoint"])
            except Exception:
                await self._set_status(row, ClusterStatus.RUNNING, "scaling failed")
                raise
            row = await self.state.update(row["id"], checkpoint=checkpoint, target_workers=n_workers,
                                          spec=spec.to_dict()) or row
            await self._observe_one(row, self.provider(row["provider"]), checkpoint)
            row = await self._set_status(row, ClusterStatus.RUNNING, f"scaled to {n_workers} workers")
            return self.view(row)

    async def delete(self, name: str, reason: str = "deleted by the user") -> dict[str, Any]:
        row = await self.find(name)
        async with self._lock(row["id"]):
            current = await self.state.get(row["id"])
            if current is None or current["status"] not in [s.value for s in ClusterStatus if s.is_live]:
                return self.view(current or row)  # creation failed meanwhile: nothing left to delete
            row = await self._set_status(current, ClusterStatus.DELETING, f"deleting: {reason}")
            await self._teardown(row, self.provider(row["provider"]), row["checkpoint"])
            row = await self._set_status(row, ClusterStatus.DELETED, reason, deleted_at=time.time())
            return self.view(row)

    async def logs(self, name: str, tail: int | None) -> dict[str, list[str]]:
        row = await self.find(name)
        return await self.provider(row["provider"]).logs(row["name"], row["checkpoint"] or {}, tail)

    # -- daemon start and stop ------------------------------------------------------------

    async def start(self) -> None:
        """Remove what a previous daemon left behind, then watch the live clusters."""
        for row in await self.state.list():
            try:
                await self.provider(row["provider"]).delete(row["name"], row["checkpoint"])
                await self._set_status(row, ClusterStatus.DELETED,
                                       "removed at daemon start: left by a daemon that did not stop cleanly",
                                       deleted_at=time.time())
            except Exception:  # noqa: BLE001 - keep starting; the row stays for a retry
                log.exception("could not remove leftover cluster %s", row["name"])
        self._monitor = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(MONITOR_INTERVAL)
            try:
                await self._observe()
            except Exception:  # noqa: BLE001 - observation must never stop
                log.exception("observing clusters failed")

    async def _observe(self) -> None:
        rows = [r for r in await self.state.list() if r["status"] == ClusterStatus.RUNNING.value]
        by_provider: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            by_provider.setdefault(r["provider"], []).append(r)
        for pname, group in by_provider.items():
            statuses = await self.provider(pname).status([r["name"] for r in group],
                                                         [r["checkpoint"] or {} for r in group])
            for r, st in zip(group, statuses):
                before = self._observed.get(r["id"])
                self._observed[r["id"]] = st
                if not st.alive and not self._lock(r["id"]).locked():
                    self._spawn(self._lost(r))
                elif before is None or before.workers_ready != st.workers_ready:
                    self.bus.publish("cluster.workers", r["name"], id=r["id"], ready=st.workers_ready,
                                     desired=r["target_workers"])

    async def _lost(self, row: dict[str, Any]) -> None:
        async with self._lock(row["id"]):
            current = await self.state.get(row["id"])
            if not current or current["status"] != ClusterStatus.RUNNING.value:
                return
            await self._teardown(current, self.provider(current["provider"]), current["checkpoint"])
            await self._set_status(current, ClusterStatus.FAILED, "the scheduler stopped; cluster removed",
                                   error="the scheduler stopped unexpectedly", deleted_at=time.time())

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Delete every live cluster this daemon owns, within ``timeout`` seconds."""
        if self._monitor:
            self._monitor.cancel()
        rows = await self.state.list()

        async def remove(row: dict[str, Any]) -> None:
            try:
                await self.delete(row["id"], reason="the daemon stopped")
            except Exception:  # noqa: BLE001
                log.exception("could not delete %s at shutdown", row["name"])

        if rows:
            await asyncio.wait([asyncio.create_task(remove(r)) for r in rows], timeout=timeout)
        for cid in list(self._tunnels):
            await self._close_tunnels(cid)
