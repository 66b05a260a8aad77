"""Cluster lifecycle in the daemon: create (journaled step by step), scale, delete, adopt.

The manager owns no I/O of its own beyond the state database: providers do the work,
tunnels relay the bytes, and every change is recorded as an event and published.
Keep-alive and harvest live in `reccd.keepalive`, restart reconciliation in
`reccd.reconcile`, costs in `reccd.accounting`.
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import json
import logging
import secrets
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from recc.errors import BadRequest, ClusterExists, ClusterNotFound, ClusterNotReady, CostNotConfirmed, RECCError
from recc.harvest import Decision, IdleFacts
from recc.plan import Plan, plan as make_plan
from recc.spec import MAX_WORKERS, ClusterSpec, ClusterStatus, check_name
from reccd.events import EventBus
from reccd.faults import maybe_fail
from reccd.providers import Checkpoint, ClusterTLS, Provider, ProviderStatus, load_provider
from reccd.state import State
from reccd.tls import make_cluster_tls
from reccd.tunnel import DashboardTunnel, Tunnel

log = logging.getLogger("reccd.manager")

LOG_TAIL_LINES = 200
LIVE = [s.value for s in ClusterStatus if s.is_live]
# Seconds a listing is reused while only heartbeat facts, harvest countdowns and tunnel byte counts moved on
# (they arrive every HEARTBEAT_INTERVAL, 5 s, anyway). Events and observed changes (status, workers, nodes,
# tunnel state) make a new one at once (`changed`). Ages and accrued costs are not in the listing's bytes:
# clients extrapolate them (`accrual`), so they tick between listings. Each new listing is a new ETag, a
# whole body to every poller at once: the p99 at 50 clients was that burst, once a second with a 1 s reuse.
LIST_REFRESH = 5.0


def plan_or_none(spec: ClusterSpec) -> Plan | None:
    try:
        return make_plan(spec)
    except RECCError:
        return None


class ClusterManager:
    def __init__(self, state: State, bus: EventBus, workdir: Path) -> None:
        self.state = state
        self.bus = bus
        self.workdir = workdir
        self.owner = getpass.getuser()
        self.max_cost_per_hour: float | None = None
        self.daemon_id: str | None = None  # reccd.identity; set by the daemon before the first provider
        # keyed by (provider, context): one daemon serves clusters of several EKS contexts
        self._providers: dict[tuple[str, str | None], Provider] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._tunnels: dict[str, tuple[Tunnel, DashboardTunnel]] = {}
        # observations, kept in memory: provider status, idle facts and harvest decisions per cluster id
        self.observed: dict[str, ProviderStatus] = {}
        self.facts: dict[str, IdleFacts] = {}
        self.decisions: dict[str, Decision] = {}
        self._specs: dict[str, tuple[Any, ClusterSpec, Plan | None, dict[str, Any]]] = {}  # see spec_of
        self._list_version = 0
        self._list_cache: dict[bool, tuple[int, float, asyncio.Future[tuple[bytes, str]]]] = {}  # see list_tagged
        self._list_refreshing: set[bool] = set()  # listings being remade in the background (list_tagged)

    # -- plumbing -------------------------------------------------------------------

    def provider(self, name: str, context: str | None = None) -> Provider:
        """The provider ``name`` for ``context`` (eks; None: the daemon's current context), made once."""
        if name == "eks" and context is None:
            from reccd.contexts import current_context_name

            context = current_context_name()
        key = (name, context if name == "eks" else None)
        if key not in self._providers:
            kwargs: dict[str, Any] = {"context": context} if key[1] else {}
            if name == "eks":  # its objects carry the daemon's id, so its orphan sweep sees only its own
                kwargs["daemon_id"] = self.daemon_id
            self._providers[key] = load_provider(name, workdir=self.workdir / name, **kwargs)
        return self._providers[key]

    @staticmethod
    def context_of(row: dict[str, Any]) -> str | None:
        """The context a cluster was made in: its spec's, else its checkpoint's (older rows)."""
        return (row.get("spec") or {}).get("context") or (row.get("checkpoint") or {}).get("context")

    def provider_key(self, row: dict[str, Any]) -> tuple[str, str | None]:
        return row["provider"], self.context_of(row) if row["provider"] == "eks" else None

    def provider_for(self, row: dict[str, Any]) -> Provider:
        """The provider instance that owns the cluster of ``row`` (its provider and context)."""
        return self.provider(*self.provider_key(row))

    def lock(self, cid: str) -> asyncio.Lock:
        return self._locks.setdefault(cid, asyncio.Lock())

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def changed(self) -> None:
        """Something a listing shows changed (beyond what `LIST_REFRESH` may defer): make the next one anew."""
        self._list_version += 1

    async def event(self, row: dict[str, Any], kind: str, message: str, **data: Any) -> None:
        self.changed()  # every change to a cluster comes with an event: the cached listing is stale
        await self.state.add_event(row["id"], kind, message, data)
        self.bus.publish(kind, row["name"], id=row["id"], message=message, **data)

    async def set_status(self, row: dict[str, Any], status: ClusterStatus, message: str, **fields: Any) -> dict[str, Any]:
        new = await self.state.update(row["id"], status=status.value, **fields)
        assert new is not None
        await self.event(new, "cluster.status", message, status=status.value)
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

    async def record_nodes(self, row: dict[str, Any], nodes: int) -> None:
        """A node-count change, priced now, for cost accrual."""
        plan = plan_or_none(ClusterSpec.from_dict(row["spec"])) if row["spec"] else None
        await self.state.add_sample(row["id"], nodes, plan.price_per_node_hour if plan else 0.0)

    # -- views ------------------------------------------------------------------------

    def spec_of(self, row: dict[str, Any]) -> tuple[ClusterSpec, Plan | None, dict[str, Any]]:
        """The row's spec, its plan and the spec as a dict, made once per version of the row.

        Parsing, validating and planning a spec takes ~0.3 ms; a listing of 100 clusters and every
        keep-alive tick did it for every row, which put the API's latency at ~100 ms. The dict
        is shared: callers must not change it.
        """
        version = (row.get("updated_at"), row.get("status"))
        hit = self._specs.get(row["id"])
        if hit is None or hit[0] != version:
            spec = ClusterSpec.from_dict(row["spec"]) if row["spec"] else ClusterSpec()
            hit = self._specs[row["id"]] = (version, spec, plan_or_none(spec), spec.to_dict())
        return hit[1], hit[2], hit[3]

    def view(self, row: dict[str, Any]) -> dict[str, Any]:
        """The public description of a cluster (no key material, no dashboard token)."""
        spec, plan, spec_dict = self.spec_of(row)
        observed = self.observed.get(row["id"])
        tunnels = self._tunnels.get(row["id"])
        decision = self.decisions.get(row["id"])
        facts = self.facts.get(row["id"])
        live = row["status"] in LIVE
        return {
            "id": row["id"], "name": row["name"], "provider": row["provider"], "template": row["template"],
            "status": row["status"], "error": row["error"], "persist": bool(row.get("persist")),
            "job_id": row.get("job_id"), "owner": row.get("owner"),
            "workers": {"desired": row["target_workers"], "ready": observed.workers_ready if observed and live else 0},
            "nodes": observed.nodes if observed and live else 0, "planned_nodes": plan.nodes if plan else None,
            "instance_type": plan.instance_type if plan else spec.instance_type, "region": spec.region,
            "cost_per_hour": plan.cost_per_hour if plan else None, "total_cost": row.get("total_cost"),
            "created_at": row["created_at"], "deleted_at": row["deleted_at"],
            "deleted_by": row.get("deleted_by"), "deleted_reason": row.get("deleted_reason"),
            "endpoints": {
                "scheduler": f"tls://127.0.0.1:{tunnels[0].port}" if tunnels else None,
                "dashboard": f"http://127.0.0.1:{tunnels[1].port}/status" if tunnels else None,
            },
            "tunnel": tunnels[0].info() if tunnels else {"state": "down"},
            "harvest": dict(decision.to_dict(), extended_until=row.get("extended_until")) if decision and live else None,
            "idle": facts.to_dict() if facts and live else None,
            "corrupt": row.get("corrupt"),
            "spec": spec_dict,
        }

    async def list(self, include_gone: bool = False) -> list[dict[str, Any]]:
        """The listing's rows: each view with its `accrual` (no ages or accrued costs, which move on every
        second; `recc.daemon_client.live_row` adds them, so a listing's bytes change only when it does)."""
        from reccd.accounting import NO_ACCRUAL, accruals  # late: accounting reads the manager's state

        rows = await self.state.list(include_gone)
        by_cluster = await accruals(self.state)
        return [dict(self.view(r), accrual=by_cluster.get(r["id"], NO_ACCRUAL)) for r in rows]

    async def list_tagged(self, include_gone: bool = False) -> tuple[bytes, str]:
        """``{"clusters": list(...)}`` as JSON and its ETag, shared by concurrent requests and reused for up
        to `LIST_REFRESH` seconds unless `changed` says something changed.

        Many clients (TUIs, notebooks polling) ask for the same listing; making it (SQLite rows,
        a view per cluster, ~150 kB of JSON for 100 clusters) once per request put the p99 at 50
        concurrent clients far over 10 ms. The ETag is a hash of the bytes, so equal tags mean an
        equal listing and a client that has it can be answered 304 without the body. Once the reuse is
        over, the last listing is answered while the next is made (heartbeat facts lag by that long);
        after a change every request waits for a new one, so a change is never answered with an old list.
        """
        now = time.monotonic()
        version = self._list_version
        hit = self._list_cache.get(include_gone)
        if hit is not None and hit[0] == version:
            if now - hit[1] < LIST_REFRESH or not hit[2].done():
                return await asyncio.shield(hit[2])
            if not hit[2].cancelled() and hit[2].exception() is None:
                # only heartbeat facts may have moved on: answer the last listing at once and make the next
                # in the background; requests waiting ~20 ms for it every second were the p99 at 50 clients
                if include_gone not in self._list_refreshing:
                    self._list_refreshing.add(include_gone)
                    self._make_listing(include_gone, version, now, publish_now=False)
                return hit[2].result()
        task = self._make_listing(include_gone, version, now)
        try:
            return await asyncio.shield(task)
        except Exception:
            self._list_cache.pop(include_gone, None)
            raise

    def _make_listing(self, include_gone: bool, version: int, started: float,
                      publish_now: bool = True) -> asyncio.Future[tuple[bytes, str]]:
        """Start making a listing; it is cached at once (requests share it) or, for a background refresh,
        once made (requests keep the last one meanwhile) and only if no event made it stale."""
        async def make() -> tuple[bytes, str]:
            body = json.dumps({"clusters": await self.list(include_gone)}, separators=(",", ":")).encode()
            return body, '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'

        task = asyncio.ensure_future(make())
        if publish_now:
            self._list_cache[include_gone] = (version, started, task)
            return task

        def publish(done: asyncio.Future[tuple[bytes, str]]) -> None:
            self._list_refreshing.discard(include_gone)
            if done.cancelled() or done.exception() is not None:
                log.warning("making the cluster listing failed: %r", None if done.cancelled() else done.exception())
            elif self._list_version == version:
                self._list_cache[include_gone] = (version, started, done)

        task.add_done_callback(publish)
        return task

    async def describe(self, name: str) -> dict[str, Any]:
        row = await self.state.find_live(name) or await self.state.gone_by_name(name)
        if row is None:
            await self.find(name)  # raises with the list of running clusters
        assert row is not None
        from reccd.accounting import cluster_cost

        return dict(self.view(row), events=await self.state.events(row["id"]),
                    age_seconds=round((row["deleted_at"] or time.time()) - row["created_at"], 1),
                    accrued_cost=round(await cluster_cost(self.state, row["id"]), 6))

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

    async def create(self, spec_data: Any, name: str | None, confirm_cost: bool = False) -> dict[str, Any]:
        spec = ClusterSpec.from_dict(spec_data)
        plan = make_plan(spec)  # refuse impossible specs before anything exists
        if self.max_cost_per_hour is not None and plan.cost_per_hour > self.max_cost_per_hour and not confirm_cost:
            raise CostNotConfirmed(
                f"this cluster would cost ${plan.cost_per_hour:,.2f}/h, above your limit of "
                f"${self.max_cost_per_hour:,.2f}/h (max_cost_per_hour)",
                hint="confirm with `--yes` (CLI) or confirm_cost=True (library), or make it smaller")
        if spec.provider == "eks":
            from reccd.contexts import current_context_name, load_context

            if spec.context is None:  # a client that did not say: the daemon's current context
                spec = spec.replace(context=current_context_name())
            load_context(spec.context)  # an unknown or invalid context is refused before anything exists
        provider = self.provider(spec.provider, spec.context)
        name = check_name(name or f"{spec.template}-{secrets.token_hex(2)}")
        tls = await asyncio.to_thread(make_cluster_tls, name)
        try:
            row = await self.state.insert_cluster(name, spec.to_dict(), asdict(tls), secrets.token_urlsafe(24),
                                                  self.owner)
        except sqlite3.IntegrityError:
            raise ClusterExists(f"a cluster named {name!r} is already running",
                                hint=f"attach with RSHClient({name!r}), or pick another name") from None
        await self.event(row, "cluster.created", f"cluster {name} requested",
                         cost_per_hour=plan.cost_per_hour, nodes=plan.nodes)
        lock = self.lock(row["id"])
        await lock.acquire()  # held until creation ends, so scale/delete wait for it
        self.spawn(self._create(row, spec, provider, tls, lock))
        return self.view(row)

    async def _create(self, row: dict[str, Any], spec: ClusterSpec, provider: Provider, tls: ClusterTLS,
                      lock: asyncio.Lock) -> None:
        last: Checkpoint | None = None
        try:
            row = await self.set_status(row, ClusterStatus.CREATING, "creating")
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
                maybe_fail("create", "before-journal", step)  # the side effect exists, its record does not
                last = checkpoint
                await self.state.journal(row["id"], step, "done", checkpoint)
                row = await self.state.update(row["id"], checkpoint=checkpoint) or row
                maybe_fail("create", "after-step", step)
                await self.event(row, "cluster.progress", f"step {step} done", step=step, has=sorted(checkpoint))
            await self.adopt(row, last or {})
            await self.set_status(row, ClusterStatus.RUNNING, "running")
        except Exception as exc:  # noqa: BLE001 - any failure must remove what exists
            message = exc.message if isinstance(exc, RECCError) else f"internal error ({type(exc).__name__}); see the daemon log"
            log.exception("creating cluster %s failed", row["name"])
            await self._teardown(row, provider, last)
            await self.set_status(row, ClusterStatus.FAILED, f"creation failed: {message}", error=message,
                                  deleted_at=time.time(), deleted_by="daemon", deleted_reason=message)
        finally:
            lock.release()

    async def adopt(self, row: dict[str, Any], last: Checkpoint) -> None:
        """Serve a created cluster: open its tunnels, observe it, start accruing its cost."""
        provider = self.provider_for(row)
        name, cid = row["name"], row["id"]

        async def upstream(kind: str) -> Any:
            current = await self.state.get(cid)
            endpoints = provider.endpoints(name, (current or row)["checkpoint"] or last)
            return endpoints.scheduler if kind == "scheduler" else endpoints.dashboard

        sched = Tunnel(lambda: upstream("scheduler"))
        dash = DashboardTunnel(lambda: upstream("dashboard"), token=row["dashboard_token"])
        sched.on_change = dash.on_change = self.changed  # a tunnel going down is listed at once
        await sched.start()
        await dash.start()
        self._tunnels[cid] = (sched, dash)
        await self.observe_one(row, last)
        await self.record_nodes(row, self.observed[cid].nodes)

    async def observe_one(self, row: dict[str, Any], checkpoint: Checkpoint) -> ProviderStatus:
        [status] = await self.provider_for(row).status([row["name"]], [checkpoint])
        self.observed[row["id"]] = status
        return status

    async def _close_tunnels(self, cid: str) -> None:
        for tunnel in self._tunnels.pop(cid, ()):
            await tunnel.close()

    async def _teardown(self, row: dict[str, Any], provider: Provider, last: Checkpoint | None) -> dict[str, Any]:
        """Remove what ``last`` says exists; keep the log tail and the total cost for the tombstone."""
        await self._close_tunnels(row["id"])
        fields: dict[str, Any] = {}
        if last:
            try:
                fields["logs_tail"] = await provider.logs(row["name"], last, LOG_TAIL_LINES)
            except Exception:  # noqa: BLE001 - logs are a courtesy; deletion is the duty
                log.warning("could not keep the logs of %s", row["name"], exc_info=True)
        await provider.delete(row["name"], last)
        for cache in (self.observed, self.facts, self.decisions):
            cache.pop(row["id"], None)
        await self.state.add_sample(row["id"], 0, 0.0)
        from reccd.accounting import cluster_cost  # late: accounting reads the manager's state

        fields["total_cost"] = await cluster_cost(self.state, row["id"])
        return await self.state.update(row["id"], **fields) or row

    # -- scale, extend, delete -------------------------------------------------------------

    async def scale(self, name: str, n_workers: Any) -> dict[str, Any]:
        if isinstance(n_workers, bool) or not isinstance(n_workers, int) or not 0 <= n_workers <= MAX_WORKERS:
            raise BadRequest(f"n_workers must be a whole number between 0 and {MAX_WORKERS}, got {n_workers!r}")
        row = await self.find(name)
        async with self.lock(row["id"]):
            row = await self.find(row["id"])
            if row["status"] != ClusterStatus.RUNNING.value:
                raise ClusterNotReady(f"cluster {row['name']!r} is {row['status']}", hint="wait until it is running")
            spec = ClusterSpec.from_dict(row["spec"]).replace(n_workers=n_workers)
            make_plan(spec)
            row = await self.set_status(row, ClusterStatus.SCALING, f"scaling to {n_workers} workers")
            try:
                checkpoint = await self.provider_for(row).scale(row["name"], n_workers, row["checkpoint"])
            except Exception:
                await self.set_status(row, ClusterStatus.RUNNING, "scaling failed")
                raise
            await self.state.journal(row["id"], 0, "scaled", checkpoint)  # reconcile starts from here after a crash
            row = await self.state.update(row["id"], checkpoint=checkpoint, target_workers=n_workers,
                                          spec=spec.to_dict()) or row
            before = self.observed.get(row["id"])
            status = await self.observe_one(row, checkpoint)
            if before is None or before.nodes != status.nodes:
                await self.record_nodes(row, status.nodes)
            row = await self.set_status(row, ClusterStatus.RUNNING, f"scaled to {n_workers} workers")
            return self.view(row)

    async def extend(self, name: str, minutes: Any) -> dict[str, Any]:
        """Push the harvest deadline to at least ``minutes`` from now."""
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not 0 < minutes <= 7 * 24 * 60:
            raise BadRequest(f"minutes must be a number between 0 and {7 * 24 * 60} (a week), got {minutes!r}")
        row = await self.find(name)
        until = time.time() + minutes * 60
        row = await self.state.update(row["id"], extended_until=max(until, row.get("extended_until") or 0),
                                      warned_at=None) or row
        self.decisions.pop(row["id"], None)
        await self.event(row, "cluster.extended", f"harvest postponed by {minutes:g} minutes",
                         extended_until=row["extended_until"])
        return self.view(row)

    async def delete(self, name: str, reason: str = "deleted by the user", by: str = "user") -> dict[str, Any]:
        row = await self.find(name)
        async with self.lock(row["id"]):
            current = await self.state.get(row["id"])
            if current is None or current["status"] not in LIVE:
                return self.view(current or row)  # creation failed meanwhile: nothing left to delete
            row = await self.set_status(current, ClusterStatus.DELETING, f"deleting: {reason}")
            row = await self._teardown(row, self.provider_for(row), row["checkpoint"])
            row = await self.set_status(row, ClusterStatus.DELETED, reason, deleted_at=time.time(),
                                        deleted_by=by, deleted_reason=reason)
            return self.view(row)

    async def remove_leftover(self, row: dict[str, Any], checkpoint: Checkpoint | None, reason: str) -> None:
        """Delete what a cluster a previous daemon left may have (reconcile)."""
        async with self.lock(row["id"]):
            row = await self._teardown(row, self.provider_for(row), checkpoint)
            await self.set_status(row, ClusterStatus.DELETED, reason, deleted_at=time.time(), deleted_by="reconcile",
                                  deleted_reason=reason)

    async def logs(self, name: str, tail: int | None, since_seconds: int | None = None,
                   timestamps: bool = False) -> tuple[dict[str, list[str]], bool]:
        """Log lines per component and whether they carry timestamps. Providers that can
        (``incremental_logs``: EKS) answer ``since_seconds`` / ``timestamps``; the others, and a gone
        cluster's kept tail, answer whole logs without timestamps (clients then count lines)."""
        row = await self.state.find_live(name)
        if row is None:
            gone = await self.state.gone_by_name(name)
            if gone is None:
                await self.find(name)  # raises, naming the running clusters
            assert gone is not None
            logs = gone.get("logs_tail") or {}
            return {k: v[-tail:] if tail else v for k, v in logs.items()}, False
        provider = self.provider_for(row)
        if getattr(provider, "incremental_logs", False):
            return await provider.logs(row["name"], row["checkpoint"] or {}, tail,  # type: ignore[call-arg]
                                       since_seconds=since_seconds, timestamps=timestamps), timestamps
        return await provider.logs(row["name"], row["checkpoint"] or {}, tail), False

    # -- stop ------------------------------------------------------------------------------

    async def shutdown(self, timeout: float, logout: bool = True) -> None:
        """Delete this daemon's ad hoc clusters within ``timeout`` seconds; persistent ones stay.

        A persistent cluster keeps running on its own: its heartbeat TTL (which the user
        sets long for such clusters) and idle clocks are what stop it if no daemon returns.
        """
        rows = [r for r in await self.state.list() if not (logout and r.get("persist"))]

        async def remove(row: dict[str, Any]) -> None:
            try:
                await self.delete(row["id"], reason="the daemon stopped (logout or shutdown)", by="daemon")
            except Exception:  # noqa: BLE001
                log.exception("could not delete %s at shutdown", row["name"])

        if rows:
            done, pending = await asyncio.wait([asyncio.create_task(remove(r)) for r in rows], timeout=timeout)
            if pending:
                log.error("%d clusters were not deleted within %.0fs", len(pending), timeout)
        for cid in list(self._tunnels):
            await self._close_tunnels(cid)
        for provider in self._providers.values():
            close = getattr(provider, "close", None)  # e.g. the EKS provider's own port-forwards
            if close is not None:
                await close()
