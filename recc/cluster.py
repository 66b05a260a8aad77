"""`RECCCluster`: a Dask cluster made (or found) by the RECC daemon, reached through its tunnel."""

from __future__ import annotations

import asyncio
import html
import logging
import os
import sys
import threading
import time
import warnings
from typing import Any

from distributed.core import Status, rpc
from distributed.deploy.cluster import Cluster
from distributed.security import Security

from recc.daemon_client import DaemonClient, EventStream
from recc.errors import ProviderError, RECCError
from recc.plan import Plan, format_plan, plan as make_plan
from recc.spec import ClusterSpec, ClusterStatus
from recc.templates import resolve

CREATE_TIMEOUT = 600.0
log = logging.getLogger("recc")


class RECCHarvestWarning(UserWarning):
    """The daemon is about to delete an idle cluster; ``cluster.extend()`` keeps it."""


class _Warnings:
    """Follows the daemon's events for one cluster and turns harvest warnings into Python warnings.

    A thread, not the event loop: it must work for sync scripts and notebooks alike,
    and a notebook shows a warning (and a log line) raised from any thread.
    """

    def __init__(self, daemon: DaemonClient, name: str) -> None:
        self.stream: EventStream = daemon.events(cluster=name)
        self.seen: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._run, name=f"recc-events-{name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for event in self.stream:
            if event.get("type") in ("cluster.harvest-warning", "cluster.harvested", "budget.threshold"):
                self.seen.append(event)
                message = event.get("data", {}).get("message", event["type"])
                log.warning("RECC: %s", message)
                warnings.warn(message, RECCHarvestWarning, stacklevel=1)

    def close(self) -> None:
        self.stream.close()


def security_from(connection: dict[str, Any]) -> Security:
    """The client's `Security` from the daemon's connection answer (PEM kept in memory)."""
    tls = connection["tls"]
    return Security(tls_ca_file=tls["ca"], tls_client_cert=tls["cert"], tls_client_key=tls["key"],
                    require_encryption=True)


class RECCCluster(Cluster):
    """A cluster created through the RECC daemon (or attached to by name).

    >>> with RECCCluster("local", n_workers=2) as cluster:          # doctest: +SKIP
    ...     with RSHClient(cluster) as client:
    ...         client.submit(sum, [1, 2]).result()

    Any `ClusterSpec` field can be overridden by keyword. The estimated cost is printed
    when the cluster is created and is ``cluster.cost_per_hour``.
    """

    def __init__(self, template: str = "local", *, n_workers: int | None = None, provider: str | None = None,
                 name: str | None = None, asynchronous: bool = False, loop: Any = None, quiet: bool = False,
                 shutdown_on_close: bool | None = None, daemon: DaemonClient | None = None,
                 confirm_cost: bool = False, _attach: bool = False, **overrides: Any) -> None:
        self._attach = _attach
        self._daemon = daemon
        self._requested_name = name
        if _attach:
            self.spec: ClusterSpec | None = None
            self.capacity_plan: Plan | None = None
        else:
            spec = resolve(template, n_workers=n_workers, provider=provider, **overrides)
            job = os.environ.get("RECC_JOB_ID")
            if job and spec.job_id is None:  # a scheduled job's clusters carry its id (cost tags, cleanup)
                spec = spec.replace(job_id=job, tags={**spec.tags, "job": job})
            if spec.provider == "eks" and spec.context is None:
                # The caller's context (RECC_CONTEXT, else the job context in a job), not the
                # daemon's: one daemon serves scripts of several contexts.
                from recc.datastore import current_context

                spec = spec.replace(context=current_context())
            self.spec = spec
            self.capacity_plan = make_plan(self.spec)
        self.shutdown_on_close = (not _attach) if shutdown_on_close is None else shutdown_on_close
        self.security: Security | None = None
        self._dashboard_link = ""
        self._confirm_cost = confirm_cost
        self._warnings: _Warnings | None = None
        super().__init__(asynchronous=asynchronous, loop=loop, quiet=quiet, name=name or "pending")
        if not self.asynchronous:
            self._loop_runner.start()
            self.sync(self._start)

    @classmethod
    def from_name(cls, name: str, **kwargs: Any) -> "RECCCluster":
        """Attach to a running daemon cluster; closing it does not delete it."""
        return cls(name=name, _attach=True, **kwargs)

    def __await__(self):  # type: ignore[override]
        async def _() -> "RECCCluster":
            if self.status == Status.created:
                await self._start()
            return self

        return _().__await__()

    # -- lifecycle -------------------------------------------------------------------------

    async def _daemon_call(self, method: str, *args: Any) -> Any:
        if self._daemon is None:
            self._daemon = await asyncio.to_thread(DaemonClient.connect, True, None, self.quiet)
        return await asyncio.to_thread(getattr(self._daemon, method), *args)

    async def _start(self) -> None:
        if self.status != Status.created:
            return
        self.status = Status.starting
        try:
            if self._attach:
                self.name = self._requested_name or ""
            else:
                assert self.spec is not None and self.capacity_plan is not None
                self._log(format_plan(self.capacity_plan, self.spec))
                created = await self._daemon_call("create_cluster", self.spec.to_dict(), self._requested_name,
                                                  self._confirm_cost)
                self.name = created["name"]
                await self._wait_running(created["name"])
            conn = await self._daemon_call("connection", self.name)
            if self.spec is None:
                self.spec = ClusterSpec.from_dict(conn["spec"])
                self.capacity_plan = make_plan(self.spec)
            self.security = security_from(conn)
            self._dashboard_link = conn["dashboard_link"]
            self.scheduler_comm = rpc(conn["address"], connection_args=self.security.get_connection_args("client"))
            assert self._daemon is not None
            self._warnings = await asyncio.to_thread(_Warnings, self._daemon, self.name)
            await super()._start()
        except BaseException:
            self.status = Status.failed
            if not self._attach and self.name != "pending":
                # do not leave a cluster behind that nobody holds
                try:
                    await self._daemon_call("delete_cluster", self.name)
                except RECCError:
                    pass
            raise

    async def _wait_running(self, name: str) -> None:
        deadline = time.monotonic() + CREATE_TIMEOUT
        shown = ""
        while True:
            info = await self._daemon_call("get_cluster", name)
            status = info["status"]
            line = f"{name}: {status}, workers {info['workers']['ready']}/{info['workers']['desired']}"
            if line != shown and not self.quiet:
                print(("\r" if sys.stderr.isatty() else "") + line, end="" if sys.stderr.isatty() else "\n",
                      file=sys.stderr, flush=True)
                shown = line
            if status == ClusterStatus.RUNNING.value:
                break
            if status in (ClusterStatus.FAILED.value, ClusterStatus.DELETED.value):
                raise ProviderError(f"cluster {name} could not be created: {info.get('error') or status}",
                                    hint="see `recc logs` or the daemon log")
            if time.monotonic() > deadline:
                raise ProviderError(f"cluster {name} was not running after {CREATE_TIMEOUT:.0f}s ({status})")
            # A short poll: a local cluster is running about a second after the request, so a
            # 0.2 s poll added a tenth of create-to-first-result; each poll is one small request.
            await asyncio.sleep(0.05)
        if not self.quiet and sys.stderr.isatty():
            print(file=sys.stderr)

    async def _close(self) -> None:
        if self.status == Status.closed:
            return
        if self._warnings:
            self._warnings.close()
        await super()._close()
        if self.shutdown_on_close and self.name not in ("", "pending"):
            try:
                await self._daemon_call("delete_cluster", self.name)
            except RECCError as exc:
                if exc.code != "cluster-not-found":
                    raise

    async def _scale(self, n: int) -> None:
        await self._daemon_call("scale", self.name, n)

    def scale(self, n: int) -> Any:  # type: ignore[override]
        """Scale to ``n`` workers (waits until the scheduler has them)."""
        return self.sync(self._scale, n)

    async def _extend(self, minutes: float) -> dict[str, Any]:
        return await self._daemon_call("extend", self.name, minutes)

    def extend(self, minutes: float = 30) -> Any:
        """Postpone the idle harvest: keep the cluster for at least ``minutes`` more."""
        return self.sync(self._extend, minutes)

    @property
    def harvest_warnings(self) -> list[dict[str, Any]]:
        """The harvest and budget warnings the daemon sent about this cluster so far."""
        return list(self._warnings.seen) if self._warnings else []

    # -- what a person sees ----------------------------------------------------------------

    @property
    def cost_per_hour(self) -> float:
        """The estimated cost of the planned capacity, in dollars per hour."""
        return self.capacity_plan.cost_per_hour if self.capacity_plan else 0.0

    @property
    def dashboard_link(self) -> str:
        return self._dashboard_link

    def _repr_html_(self, cluster_status: Any = None) -> str:
        rows = {
            "Name": self.name, "Template": self.spec.template if self.spec else "",
            "Scheduler": self.scheduler_address,
            "Workers": len(self.scheduler_info.get("workers", {})),
            "Estimated cost": f"${self.cost_per_hour:,.2f}/h",
        }
        body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in rows.items())
        link = html.escape(self.dashboard_link)
        dash = f"<p>Dashboard: <a href='{link}' target='_blank'>{link}</a></p>" if link else ""
        return f"<div><h3>RECCCluster</h3><table>{body}</table>{dash}</div>"
