"""The ``local`` provider: a TLS Dask scheduler and nanny workers as processes of this machine.

Each cluster lives in ``<workdir>/<name>/`` (0700): its TLS files, ``scheduler.json``, one
log per process and the workers' local directories. Every process runs in its own session
and carries the mark ``<cluster dir>::<role>`` in its environment (see :mod:`reccd.procs`),
so ``delete`` finds what a checkpoint names and also what was spawned but never journaled.

Checkpoints (each yield is cumulative)::

    1 {"dir": "/w/c1", "tls": True, "launch": {...worker settings, for scale...}}
    2 + "scheduler": {"pid", "pgid", "create_time"}           process exists
    3   "scheduler" gains "address", "port", "dashboard_port"  scheduler answers
    4 + "workers": [{"id", "name", "pid", "pgid", "create_time"}], "next_worker_id"
    5 + "ready": True                                         the scheduler sees every worker

The provider talks to its schedulers with the worker certificate written in the cluster
folder (it carries clientAuth), so ``scale``, ``status`` and ``heartbeat`` work after a
daemon restart, when the in-memory client key is gone.

Spend safety: the scheduler runs the :mod:`recc.deadman` preload with
``RECC_HEARTBEAT_TTL=<spec.heartbeat_ttl>``; unless ``heartbeat`` renews it, the scheduler
closes itself and its workers one TTL after it started (or after the last heartbeat). Workers
get ``--death-timeout`` so one that never reaches its scheduler gives up instead of waiting.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import shutil
import subprocess
import sys
import math
import time
from pathlib import Path
from typing import Any, AsyncIterator, ClassVar, Sequence

from recc.errors import BadRequest, ClusterExists, ClusterNotReady, ProviderError
from recc.harvest import IdleFacts
from recc.spec import ClusterSpec, check_name
from reccd import procs
from reccd.providers import Checkpoint, ClusterTLS, Endpoint, Endpoints, ProviderStatus
from reccd.providers.spares import SPARES_DIR, SparePool
from reccd.tls import write_tls_files

HOST = "127.0.0.1"
LOG_TAIL = 15
DEADMAN = "recc.deadman"  # the scheduler preload (dead-man switch and idle facts)
FORK_WORKER = "recc.forkworker"  # the nannies' preload: fork the worker, do not import distributed again
# Readiness polls: reading scheduler.json is a stat and a small read, asking the scheduler one
# message on an open connection; both are cheap next to the ~1 s a cluster takes to start.
POLL = 0.02
# The environment every cluster process gets (the spares start with it too).
BASE_ENV = {"DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True", "PYTHONUNBUFFERED": "1"}
# Variables that act when an interpreter starts: a warm spare has started already, so a cluster
# whose spec sets any of these starts cold.
STARTUP_VARS = ("PYTHON", "LD_", "MALLOC", "OMP_", "MKL_", "OPENBLAS", "DASK_")


class LocalProvider:
    name: ClassVar[str] = "local"

    def __init__(self, workdir: Path, *, start_timeout: float = 60.0, stop_grace: float = 3.0,
                 python: str = sys.executable, worker_death_timeout: float = 60.0) -> None:
        self.workdir = Path(workdir).absolute()
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if hasattr(os, "getuid") and self.workdir.stat().st_uid != os.getuid():
            raise ProviderError(f"{self.workdir} belongs to another user",
                                hint="choose a folder of your own for local clusters")
        os.chmod(self.workdir, 0o700)
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.python = python
        # Seconds a worker waits for its scheduler (file, connection, registration) before it exits.
        self.worker_death_timeout = worker_death_timeout
        self._children: dict[int, subprocess.Popen] = {}  # reaped in delete/status
        self._spares: SparePool | None = None

    def keep_spares(self, n_workers: int) -> None:
        """Keep one scheduler and ``n_workers`` worker interpreters warm (see `reccd.providers.spares`).

        The daemon calls this; a provider made elsewhere (``recc harvest``, tests) starts every process cold.
        """
        if n_workers > 0 and self._spares is None:
            self._spares = SparePool(self.workdir, self.python, n_workers, BASE_ENV)
            self._spares.fill()

    async def close(self) -> None:
        """Let the unclaimed spares go (the daemon's shutdown)."""
        if self._spares is not None:
            await asyncio.to_thread(self._spares.close)
            self._spares = None

    # ---------------------------------------------------------------- paths and marks

    def _dir(self, name: str) -> Path:
        return self.workdir / check_name(name)

    def _mark(self, name: str, role: str | None = None) -> str:
        base = str(self._dir(name))
        return base if role is None else f"{base}{procs.SEP}{role}"

    # ---------------------------------------------------------------- create

    async def create(self, name: str, spec: ClusterSpec, tls: ClusterTLS) -> AsyncIterator[Checkpoint]:
        folder = self._dir(name)
        if await asyncio.to_thread(procs.find_marked, lambda m: procs.selects(self._mark(name), m)):
            raise ClusterExists(f"local cluster {name!r} already has running processes",
                                hint="delete it first, or choose another name")
        # Spawning and writing the TLS files are quick and run on the loop, not in a thread, so a
        # cancelled create can never leave a spawn or a write running behind a delete.
        write_tls_files(tls, folder)
        (folder / "scheduler.json").unlink(missing_ok=True)
        cp: Checkpoint = {"dir": str(folder), "tls": True, "launch": {
            "nthreads": spec.worker_threads, "memory_limit": spec.worker_memory,
            "resources": dict(spec.resources), "env": dict(spec.env)}}
        yield copy.deepcopy(cp)

        sched = self._spawn(name, "scheduler", self._scheduler_argv(folder),
                            {**spec.env, "RECC_HEARTBEAT_TTL": repr(float(spec.heartbeat_ttl))})
        cp["scheduler"] = sched.record()
        yield copy.deepcopy(cp)

        # Workers start beside the scheduler and find it through its scheduler file: their
        # interpreters start while the scheduler's does, instead of after it.
        cp["workers"], cp["next_worker_id"] = [], 0
        self._add_workers(name, cp, spec.n_workers)
        yield copy.deepcopy(cp)

        cp["scheduler"].update(await self._wait_scheduler(folder, sched.popen))
        yield copy.deepcopy(cp)

        await self._wait_workers(name, cp)
        cp["ready"] = True
        yield copy.deepcopy(cp)

    def _scheduler_argv(self, folder: Path) -> list[str]:
        return [self.python, "-m", "distributed.cli.dask_scheduler", "--protocol", "tls",
                "--host", HOST, "--port", "0", "--dashboard-address", f"{HOST}:0",
                "--tls-ca-file", str(folder / "ca.pem"), "--tls-cert", str(folder / "scheduler.pem"),
                "--tls-key", str(folder / "scheduler-key.pem"),
                "--scheduler-file", str(folder / "scheduler.json"), "--preload", DEADMAN]

    def _worker_argv(self, name: str, folder: Path, wid: int, launch: dict) -> list[str]:
        argv = [self.python, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(folder / "scheduler.json"),
                "--nthreads", str(launch["nthreads"]), "--memory-limit", str(launch["memory_limit"]),
                "--name", f"{name}-w{wid}", "--host", HOST, "--no-dashboard",
                "--tls-ca-file", str(folder / "ca.pem"), "--tls-cert", str(folder / "worker.pem"),
                "--tls-key", str(folder / "worker-key.pem"),
                "--local-directory", str(folder / f"worker-{wid}"),
                "--death-timeout", f"{self.worker_death_timeout:g}", "--preload-nanny", FORK_WORKER]
        if launch.get("resources"):
            argv += ["--resources", " ".join(f"{k}={v:g}" for k, v in launch["resources"].items())]
        return argv

    def _spawn(self, name: str, role: str, argv: list[str], env: dict[str, str]) -> procs.Spawned:
        folder = self._dir(name)
        env = {**env, **BASE_ENV}
        mark, log = self._mark(name, role), folder / f"{role}.log"
        spawned = None
        if self._spares is not None and not any(k.startswith(STARTUP_VARS) for k in env if k not in BASE_ENV):
            spawned = self._spares.claim(role.split("-")[0], argv, {**os.environ, **env}, mark, log, folder)
        if spawned is None:
            spawned = procs.spawn(argv, env=env, mark=mark, log=log, cwd=folder)
        self._children[spawned.pid] = spawned.popen
        return spawned

    async def _wait_scheduler(self, folder: Path, popen: subprocess.Popen) -> dict[str, Any]:
        log = folder / "scheduler.log"
        deadline = time.monotonic() + self.start_timeout
        while True:
            if popen.poll() is not None:
                raise _failed(f"the scheduler exited with code {popen.returncode} before it was ready", log)
            try:
                info = json.loads((folder / "scheduler.json").read_text())
                address, dashboard = info["address"], info["services"]["dashboard"]
            except (OSError, ValueError, KeyError, TypeError):
                pass  # not written yet, or half written
            else:
                return {"address": address, "port": int(address.rsplit(":", 1)[1]),
                        "dashboard_port": int(dashboard)}
            if time.monotonic() > deadline:
                raise _failed(f"the scheduler did not start within {self.start_timeout:g} s", log)
            await asyncio.sleep(POLL)

    def _add_workers(self, name: str, cp: Checkpoint, n: int) -> None:
        folder = self._dir(name)
        for _ in range(n):
            wid = cp["next_worker_id"]
            cp["next_worker_id"] = wid + 1
            argv = self._worker_argv(name, folder, wid, cp["launch"])
            spawned = self._spawn(name, f"worker-{wid}", argv, cp["launch"]["env"])
            cp["workers"].append({"id": wid, "name": f"{name}-w{wid}", **spawned.record()})

    # ---------------------------------------------------------------- talking to the scheduler

    def _security(self, folder: Path):
        from distributed import Security

        return Security(tls_ca_file=str(folder / "ca.pem"), tls_client_cert=str(folder / "worker.pem"),
                        tls_client_key=str(folder / "worker-key.pem"), require_encryption=True)

    async def _call(self, cp: Checkpoint, op: str, timeout: float = 10.0, **kwargs: Any) -> Any:
        from distributed.core import rpc

        sec = self._security(Path(cp["dir"]))
        async with rpc(cp["scheduler"]["address"], connection_args=sec.get_connection_args("client"),
                       timeout=timeout) as r:
            return await asyncio.wait_for(getattr(r, op)(**kwargs), timeout)

    async def _scheduler_workers(self, cp: Checkpoint, timeout: float = 10.0, via: Any = None) -> set[str]:
        """Names of the workers the scheduler knows and that are not on their way out.

        ``via``: an open `distributed.core.rpc` to reuse (its connection stays up between polls)."""
        if via is None:
            ident = await self._call(cp, "identity", timeout=timeout)
        else:
            ident = await asyncio.wait_for(via.identity(), timeout)
        return {str(w.get("name")) for w in ident.get("workers", {}).values()
                if w.get("status") not in ("closing", "closing_gracefully", "closed", "failed")}

    async def _wait_workers(self, name: str, cp: Checkpoint, gone: set[str] = frozenset()) -> None:
        """Until the scheduler sees every worker of ``cp`` and none of ``gone``; errors name the missing."""
        folder = self._dir(name)
        want = {w["name"] for w in cp["workers"]}
        deadline = time.monotonic() + self.start_timeout
        from distributed.core import rpc

        # One connection for all the polls: a TLS handshake per poll would cost more than the poll.
        async with rpc(cp["scheduler"]["address"], timeout=5.0,
                       connection_args=self._security(folder).get_connection_args("client")) as via:
            await self._poll_workers(name, cp, gone, folder, want, deadline, via)

    async def _poll_workers(self, name: str, cp: Checkpoint, gone: set[str], folder: Path, want: set[str],
                            deadline: float, via: Any) -> None:
        seen: set[str] = set()
        while True:
            for w in cp["workers"]:
                popen = self._children.get(w["pid"])
                if popen_dead(popen) and w["name"] not in seen:
                    raise _failed(f"worker {w['name']} exited with code {popen.returncode} before it joined",
                                  folder / f"worker-{w['id']}.log")
            try:
                seen = await self._scheduler_workers(cp, timeout=5.0, via=via)
            except (OSError, asyncio.TimeoutError) as e:
                if popen_dead(self._children.get(cp["scheduler"]["pid"])):
                    raise _failed("the scheduler exited", folder / "scheduler.log") from e
            if want <= seen and not seen & gone:
                return
            if time.monotonic() > deadline:
                missing = [w for w in cp["workers"] if w["name"] not in seen]
                tails = []
                for w in missing:
                    log = folder / f"worker-{w['id']}.log"
                    tails.append(f"--- {log}:\n" + "\n".join(procs.tail(log, LOG_TAIL)))
                what = (f"workers {', '.join(w['name'] for w in missing)} did not join" if missing
                        else f"workers {', '.join(sorted(seen & gone))} did not leave")
                raise ProviderError(f"{what} the scheduler within {self.start_timeout:g} s "
                                    f"(it sees {sorted(seen)})\n" + "\n".join(tails),
                                    hint=f"see the logs in {folder}")
            await asyncio.sleep(POLL)

    async def heartbeat(self, name: str, last: Checkpoint, ttl: float, timeout: float = 5.0) -> IdleFacts:
        """Renew the scheduler's dead-man switch for ``ttl`` seconds; its idle facts.

        A scheduler that is gone costs ``timeout`` seconds (Dask retries refused connections)."""
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not (math.isfinite(ttl) and ttl > 0):
            raise BadRequest(f"a heartbeat ttl must be a positive number of seconds, got {ttl!r}")
        return await self._ask_facts(name, last, "recc_heartbeat", "renew the heartbeat of", timeout,
                                     ttl=float(ttl))

    async def idle_facts(self, name: str, last: Checkpoint, timeout: float = 5.0) -> IdleFacts:
        """The scheduler's idle facts, without renewing its dead-man switch (for `recc harvest`).

        Errors are `ProviderError` (`ClusterNotReady` when ``last`` has no scheduler address yet)."""
        return await self._ask_facts(name, last, "recc_idle_facts", "read the idle facts of", timeout)

    async def _ask_facts(self, name: str, last: Checkpoint, op: str, what: str, timeout: float,
                         **kwargs: Any) -> IdleFacts:
        address = ((last or {}).get("scheduler") or {}).get("address")
        if not address:
            raise ClusterNotReady(f"local cluster {name!r} has no scheduler address yet")
        record = last["scheduler"]
        if record.get("pid") and await asyncio.to_thread(procs.verified, record, self._mark(name, "scheduler")) is None:
            # said at once: a dead scheduler refuses the connection and Dask retries refused connections
            # until the timeout, so every dead cluster cost `recc harvest` (and a heartbeat) 5 s of waiting
            raise ProviderError(f"could not {what} local cluster {name!r}: its scheduler process is gone "
                                f"(pid {record['pid']})", hint="the cluster may have been killed or its "
                                "heartbeat TTL expired")
        try:
            facts = await self._call(last, op, timeout=timeout, **kwargs)
        except (OSError, asyncio.TimeoutError) as e:
            raise ProviderError(f"could not {what} local cluster {name!r}: its scheduler at "
                                f"{address} did not answer within {timeout:g} s ({_why(e)})",
                                hint="the cluster may be gone (its heartbeat TTL expired, or it was killed)") from e
        except Exception as e:  # raised by the handler on the scheduler, re-raised here
            raise ProviderError(f"the scheduler of local cluster {name!r} refused {op}: {_why(e)}") from e
        if not isinstance(facts, dict):  # no such handler: the scheduler answers None
            raise ProviderError(f"the scheduler of local cluster {name!r} has no RECC dead-man switch",
                                hint=f"it was not started with --preload {DEADMAN}; see its scheduler.log")
        try:
            return IdleFacts.from_dict(facts)
        except (KeyError, TypeError, ValueError) as e:
            raise ProviderError(f"the scheduler of local cluster {name!r} sent malformed idle facts: {facts!r}") from e

    # ---------------------------------------------------------------- delete and scale

    async def delete(self, name: str, last: Checkpoint | None) -> None:
        folder = self._dir(name)
        last = last or {}
        records = [last.get("scheduler")] + list(last.get("workers", []))
        left = await asyncio.to_thread(procs.kill_all, records, self._mark(name), self.stop_grace)
        procs.reap(self._children)
        if left:
            raise ProviderError(f"processes {left} of local cluster {name!r} would not stop",
                                hint="they were sent SIGKILL; check them with `ps`")
        await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
        if self._spares is not None:
            self._spares.refill_soon()
        if folder.exists():
            raise ProviderError(f"could not remove {folder}", hint="remove it by hand")

    async def scale(self, name: str, n_workers: int, last: Checkpoint) -> Checkpoint:
        if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 0:
            raise BadRequest(f"n_workers must be a whole number >= 0, got {n_workers!r}")
        if not last or "port" not in last.get("scheduler", {}):
            raise ClusterNotReady(f"local cluster {name!r} has no running scheduler to scale")
        cp = copy.deepcopy(last)
        if await asyncio.to_thread(procs.verified, cp["scheduler"], self._mark(name, "scheduler")) is None:
            raise ProviderError(f"the scheduler of local cluster {name!r} is not running",
                                hint="delete the cluster and create it again")
        # Forget workers whose process is gone (after clearing anything they left behind).
        live = []
        for w in cp.get("workers", []):
            mark = self._mark(name, f"worker-{w['id']}")
            if await asyncio.to_thread(procs.verified, w, mark) is not None:
                live.append(w)
            else:
                await asyncio.to_thread(procs.kill_all, [w], mark, self.stop_grace)
        cp["workers"] = live
        cp.setdefault("next_worker_id", max((w["id"] for w in live), default=-1) + 1)
        if n_workers > len(live):
            self._add_workers(name, cp, n_workers - len(live))
        elif n_workers < len(live):
            leaving = sorted(live, key=lambda w: w["id"])[n_workers:]
            try:
                await self._call(cp, "retire_workers", timeout=30.0, names=[w["name"] for w in leaving],
                                 close_workers=True, remove=True)
            except (OSError, asyncio.TimeoutError):
                pass  # the processes are stopped below either way
            await asyncio.to_thread(procs.wait_gone, [w["pid"] for w in leaving], 10.0)
            for w in leaving:
                await asyncio.to_thread(procs.kill_all, [w], self._mark(name, f"worker-{w['id']}"),
                                        self.stop_grace)
            cp["workers"] = [w for w in live if w not in leaving]
            procs.reap(self._children)
        await self._wait_workers(name, cp, gone={w["name"] for w in cp_gone(last, cp)})
        cp["ready"] = True
        return cp

    # ---------------------------------------------------------------- observing

    async def status(self, names: Sequence[str], lasts: Sequence[Checkpoint]) -> list[ProviderStatus]:
        procs.reap(self._children)
        out = []
        for name, last in zip(names, lasts):
            last = last or {}
            sched = last.get("scheduler")
            alive = await asyncio.to_thread(procs.verified, sched, self._mark(name, "scheduler")) is not None
            workers = last.get("workers", [])
            running = [w for w in workers if await asyncio.to_thread(
                procs.verified, w, self._mark(name, f"worker-{w['id']}")) is not None]
            detail: dict[str, Any] = {"dir": last.get("dir"), "worker_processes": len(running)}
            ready = 0
            if alive and "address" in sched:
                try:
                    mine = {w["name"] for w in running}
                    ready = len(await self._scheduler_workers(last, timeout=3.0) & mine)
                    detail["source"] = "scheduler"
                except (OSError, asyncio.TimeoutError):
                    ready, detail["source"] = len(running), "processes"
            out.append(ProviderStatus(name=name, alive=alive, workers_ready=ready,
                                      workers_desired=len(workers), nodes=1 if alive else 0, detail=detail))
        return out

    def endpoints(self, name: str, last: Checkpoint) -> Endpoints:
        sched = (last or {}).get("scheduler", {})
        if "port" not in sched:
            raise ClusterNotReady(f"local cluster {name!r} has no scheduler address yet")
        dashboard = Endpoint(HOST, sched["dashboard_port"]) if sched.get("dashboard_port") else None
        return Endpoints(scheduler=Endpoint(HOST, sched["port"]), dashboard=dashboard)

    async def logs(self, name: str, last: Checkpoint, tail: int | None = None) -> dict[str, list[str]]:
        folder = self._dir(name)

        def read() -> dict[str, list[str]]:
            files = sorted(folder.glob("*.log"), key=lambda p: (p.stem != "scheduler", len(p.stem), p.stem))
            return {p.stem: procs.tail(p, tail) for p in files}

        return await asyncio.to_thread(read)

    async def list_owned(self) -> list[str]:
        prefix = str(self.workdir) + os.sep

        def owned(mark: str) -> bool:
            cluster = mark.split(procs.SEP, 1)[0]
            rest = cluster[len(prefix):]
            # the spares' folder is not a cluster (unclaimed spares end with the daemon that made them)
            return cluster.startswith(prefix) and os.sep not in rest and rest != SPARES_DIR

        found = await asyncio.to_thread(procs.find_marked, owned)
        return sorted({Path(mark.split(procs.SEP, 1)[0]).name for _, mark in found})


def cp_gone(before: Checkpoint, after: Checkpoint) -> list[dict]:
    """Workers of ``before`` that are not in ``after``."""
    kept = {w["id"] for w in after.get("workers", [])}
    return [w for w in before.get("workers", []) if w["id"] not in kept]


def popen_dead(popen: subprocess.Popen | None) -> bool:
    return popen is not None and popen.poll() is not None


def _why(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _failed(what: str, log: Path) -> ProviderError:
    lines = procs.tail(log, LOG_TAIL)
    return ProviderError(f"{what}; see {log}. Last lines:\n" + "\n".join(lines or ["(empty)"]),
                         hint=f"the full log is {log}")
