"""The cluster-side dead-man switch and idle-facts reporter, a Dask scheduler plugin.

Runs inside the scheduler process, so it imports only the standard library, ``distributed``
and :mod:`recc.harvest`. Installed as a preload::

    RECC_HEARTBEAT_TTL=900 dask scheduler --preload recc.deadman ...

Environment (read in the scheduler process by :func:`dask_setup`):

``RECC_HEARTBEAT_TTL``
    Seconds. The first deadline is the plugin's start + TTL, so a cluster whose daemon never
    heartbeats dies too. Missing or invalid: the spec default (15 min) is used and an error is
    logged; the switch is never left off.
``RECC_DAEMON_CLIENT_PREFIX``
    Clients that belong to the daemon and are not counted as users (default ``recc-daemon``).
    A Dask client id is ``<ClientClass>-<name>-<uuid>`` (``Client(name="recc-daemon")`` has
    the id ``Client-recc-daemon-<uuid>``); a client is the daemon's when its id, or its id
    without the leading ``<ClientClass>-``, starts with the prefix. The scheduler's internal
    ``fire-and-forget`` client and the clients workers open for ``get_client()``
    (``Client-worker-<uuid>``) are never counted either.

Scheduler handlers (call them with ``rpc(address, ...)``, no Client needed, so heartbeats do
not depend on any client being connected):

``recc_heartbeat(ttl=None) -> dict``
    Moves the deadline to now + ``ttl`` (the configured TTL when None) and returns the idle
    facts (:meth:`recc.harvest.IdleFacts.to_dict`).
``recc_idle_facts() -> dict``
    The idle facts, without renewing.

When the deadline passes, the plugin logs why and closes the scheduler. ``Scheduler.close``
sends ``close`` to every worker over its stream; each worker tells its nanny to close
gracefully (no restart) and exits, and the nanny process exits with it. Workers that miss the
message see the scheduler's connection break and close the same way. The deadline runs on the
monotonic clock, so time a suspended machine spends asleep does not count.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin
from tornado.ioloop import PeriodicCallback

from recc.harvest import IdleFacts

# A child of "distributed", so it goes where the scheduler's own log lines go.
logger = logging.getLogger("distributed.recc.deadman")

TTL_VAR = "RECC_HEARTBEAT_TTL"
PREFIX_VAR = "RECC_DAEMON_CLIENT_PREFIX"
DEFAULT_TTL = 15 * 60.0
DEFAULT_PREFIX = "recc-daemon"
INTERNAL_CLIENTS = ("fire-and-forget",)
WORKER_CLIENT_PREFIX = "worker-"  # Worker._get_client uses Client(name="worker")
OBSERVE_INTERVAL = 0.5  # seconds between activity samples
CHECK_INTERVAL = 1.0  # seconds between deadline checks
FORCE_EXIT_AFTER = 30.0  # seconds a closing scheduler gets before its process is ended hard


def is_daemon_client(client_id: str, prefix: str) -> bool:
    """Whether ``client_id`` is the daemon's own (see the module docstring)."""
    if not prefix:
        return False
    bare = client_id.split("-", 1)[1] if "-" in client_id else client_id
    return client_id.startswith(prefix) or bare.startswith(prefix)


def is_user_client(client_id: str, prefix: str) -> bool:
    """Whether ``client_id`` counts as a user of the cluster."""
    if client_id in INTERNAL_CLIENTS:
        return False
    bare = client_id.split("-", 1)[1] if "-" in client_id else client_id
    if bare.startswith(WORKER_CLIENT_PREFIX):
        return False
    return not is_daemon_client(client_id, prefix)


def _positive_seconds(value: Any, what: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of seconds, got {value!r}") from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
    return seconds


class DeadManSwitch(SchedulerPlugin):
    """Closes the cluster when the daemon's heartbeats stop; reports the cluster's idle facts.

    ``force_exit_after``: if set, the process is ended with ``os._exit`` when closing the
    scheduler takes longer than that (only for a scheduler that owns its process: the preload
    sets it, an in-process scheduler should not).
    """

    name = "recc-deadman"

    def __init__(self, ttl: float = DEFAULT_TTL, daemon_prefix: str = DEFAULT_PREFIX, *,
                 force_exit_after: float | None = None) -> None:
        self.ttl = _positive_seconds(ttl, "heartbeat_ttl")
        self.daemon_prefix = daemon_prefix
        self.force_exit_after = force_exit_after
        self.scheduler: Any = None
        self.started_at = time.time()
        self.last_activity = self.started_at
        self.last_client_left: float | None = None
        self.deadline = time.monotonic() + self.ttl
        self.last_heartbeat: float | None = None  # monotonic
        self.expired = False
        self._window = self.ttl  # the TTL the current deadline was set with
        self._shutdown: asyncio.Task | None = None
        self._seen_transitions = -1
        self._callbacks: list[PeriodicCallback] = []

    # ------------------------------------------------------------------ lifecycle

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.started_at = time.time()
        self.last_activity = self.started_at
        self.deadline = time.monotonic() + self.ttl
        self._seen_transitions = scheduler.transition_counter
        scheduler.handlers["recc_heartbeat"] = self.recc_heartbeat
        scheduler.handlers["recc_idle_facts"] = self.recc_idle_facts
        for key, fn, interval in (("recc-deadman-observe", self._observe, OBSERVE_INTERVAL),
                                  ("recc-deadman-check", self._check, CHECK_INTERVAL)):
            pc = PeriodicCallback(fn, interval * 1000)
            # Registered with the scheduler so Scheduler.close stops it; started here because
            # a plugin added after startup would otherwise never run it.
            scheduler.periodic_callbacks[key] = pc
            pc.start()
            self._callbacks.append(pc)
        logger.info("RECC dead-man switch armed: heartbeat_ttl %g s; daemon clients start with %r",
                    self.ttl, self.daemon_prefix)

    async def close(self) -> None:
        for pc in self._callbacks:
            pc.stop()

    # ------------------------------------------------------------------ observing

    def update_graph(self, scheduler: Any, **kwargs: Any) -> None:
        self.last_activity = time.time()

    def add_client(self, scheduler: Any, client: str) -> None:
        if is_user_client(client, self.daemon_prefix):
            self.last_client_left = None

    def remove_client(self, scheduler: Any, client: str) -> None:
        # Called after the client left scheduler.clients.
        if is_user_client(client, self.daemon_prefix) and self.user_clients() == 0:
            self.last_client_left = time.time()

    def user_clients(self) -> int:
        if self.scheduler is None:
            return 0
        return sum(1 for c in list(self.scheduler.clients) if is_user_client(c, self.daemon_prefix))

    def _busy(self) -> bool:
        """``Scheduler.check_idle``'s notion of activity, sampled."""
        s = self.scheduler
        if s.transition_counter != self._seen_transitions:
            self._seen_transitions = s.transition_counter
            return True
        return bool(getattr(s, "_active_graph_updates", 0) or s.queued or s.unrunnable
                    or any(ws.processing for ws in s.workers.values()))

    def _observe(self) -> None:
        try:
            if self.scheduler is not None and self._busy():
                self.last_activity = time.time()
        except Exception:  # never let a sampling hiccup stop the periodic callback
            logger.exception("RECC dead-man switch: could not sample scheduler activity")

    def facts(self) -> IdleFacts:
        if self.scheduler is not None:
            self._observe()
        clients = self.user_clients()
        return IdleFacts(last_activity=self.last_activity, clients=clients,
                         last_client_left=None if clients else self.last_client_left,
                         observed_at=time.time(), started_at=self.started_at)

    # ------------------------------------------------------------------ handlers

    def recc_heartbeat(self, ttl: float | None = None) -> dict[str, Any]:
        ttl = self.ttl if ttl is None else _positive_seconds(ttl, "ttl")
        if self.expired:
            raise RuntimeError("the heartbeat TTL already expired: the cluster is shutting down")
        now = time.monotonic()
        self.deadline = now + ttl
        self.last_heartbeat = now
        self._window = ttl
        return self.facts().to_dict()

    def recc_idle_facts(self) -> dict[str, Any]:
        return self.facts().to_dict()

    # ------------------------------------------------------------------ the switch

    def _check(self) -> None:
        if self.expired or self.scheduler is None or time.monotonic() <= self.deadline:
            return
        self.expired = True
        since = time.monotonic() - (self.last_heartbeat if self.last_heartbeat is not None
                                    else self.deadline - self.ttl)
        logger.warning("RECC dead-man switch: no heartbeat from the RECC daemon for %.0f s (heartbeat_ttl %g s%s): "
                       "shutting the cluster down", since, self._window,
                       "; none since the scheduler started" if self.last_heartbeat is None else "")
        self._shutdown = asyncio.get_running_loop().create_task(self._shut_down())

    async def _shut_down(self) -> None:
        timer = None
        if self.force_exit_after is not None:
            timer = threading.Timer(self.force_exit_after, _force_exit,
                                    args=(f"the scheduler did not close within {self.force_exit_after:g} s",))
            timer.daemon = True
            timer.start()
        workers = len(self.scheduler.workers)
        logger.warning("RECC dead-man switch: closing %d worker(s) and the scheduler", workers)
        try:
            await self.scheduler.close(reason="recc-heartbeat-expired")
        except Exception:
            logger.exception("RECC dead-man switch: closing the scheduler failed")
            if self.force_exit_after is not None:
                _force_exit("closing the scheduler failed")
        if timer is not None:
            timer.cancel()


def _force_exit(why: str) -> None:
    logger.error("RECC dead-man switch: %s; ending the process", why)
    for handler in logging.getLogger("distributed").handlers:
        try:
            handler.flush()
        except Exception:
            pass
    os._exit(1)


def settings_from_env(environ: Any = os.environ) -> tuple[float, str]:
    """(ttl, daemon prefix) from the environment; a bad or missing TTL gives the default."""
    raw = environ.get(TTL_VAR)
    try:
        ttl = _positive_seconds(raw, TTL_VAR)
    except ValueError as e:
        logger.error("RECC dead-man switch: %s; using the default %g s", e, DEFAULT_TTL)
        ttl = DEFAULT_TTL
    return ttl, environ.get(PREFIX_VAR, DEFAULT_PREFIX)


def dask_setup(scheduler: Any) -> None:
    """Preload entry point: ``dask scheduler --preload recc.deadman``."""
    ttl, prefix = settings_from_env()
    scheduler.add_plugin(DeadManSwitch(ttl, prefix, force_exit_after=FORCE_EXIT_AFTER), idempotent=True)
