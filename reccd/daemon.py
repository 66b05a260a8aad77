"""The daemon process: one per user, on a private Unix socket, until told to stop.

Start-up order matters: the private runtime folder and the lock come first (so two
daemons never race for the socket), then a stale socket is replaced only if connecting
to it is refused, then state, then the listener, then the info file that says we are up.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import secrets
import os
import shutil
import signal
import socket
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import IO

from aiohttp import web

from recc import __version__
from recc.errors import DaemonAlreadyRunning
from recc.paths import (check_socket_path, daemon_log_path, data_dir, ensure_private_dir, runtime_dir,
                        socket_path, write_private_file)
from recc.config import load_user_config
from reccd.accounting import BudgetWatch
from reccd.credentials import DaemonCredentials, detach_own_endpoint
from reccd.credserver import CredentialsEndpoint, credential_routes, refresh_loop
from reccd.providers import PROVIDER_ARGS
from reccd.events import EventBus
from reccd.keepalive import KeepAlive
from reccd.identity import daemon_id
from reccd.manager import ClusterManager
from reccd.reconcile import reconcile
from reccd.server import RUNNER_LIMITS, make_app
from reccd.state import State

# Warm interpreters the local provider keeps, so a local cluster starts without import time
# (``reccd.providers.spares``); each is an idle Python with distributed imported (~60-100 MB).
LOCAL_SPARES = int(os.environ.get("RECC_LOCAL_SPARES", "2"))
log = logging.getLogger("reccd")

SHUTDOWN_TIMEOUT = float(os.environ.get("RECC_SHUTDOWN_TIMEOUT", "10"))
BUDGET_INTERVAL = float(os.environ.get("RECC_BUDGET_INTERVAL", "60"))


def acquire_lock(path: Path, sock: Path) -> IO[str]:
    """Hold an exclusive lock for the daemon's lifetime; a second daemon is refused."""
    handle = open(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+")
    try:
        if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise DaemonAlreadyRunning(f"a RECC daemon is already running at {sock}",
                                   hint="see `recc daemon status`; stop it with `recc daemon stop`") from None
    return handle


def clear_stale_socket(sock: Path) -> None:
    """Remove a socket file nobody listens on. Only 'connection refused' means stale."""
    if not sock.exists():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(sock))
    except ConnectionRefusedError:
        sock.unlink()
        log.warning("removed a stale socket at %s (its daemon is gone)", sock)
        return
    except FileNotFoundError:
        return
    finally:
        probe.close()
    raise DaemonAlreadyRunning(f"another process is listening on {sock}", hint="stop it with `recc daemon stop`")


def setup_logging() -> Path:
    path = daemon_log_path()
    ensure_private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    handler = logging.StreamHandler(os.fdopen(fd, "a", buffering=1))
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return path


async def watch_parent(pid: int, stop: asyncio.Event) -> None:
    """A job daemon lives as long as its job's process, however that process ends."""
    import psutil

    try:
        parent = psutil.Process(pid)
        born = parent.create_time()
    except psutil.Error:
        stop.set()
        return
    while not stop.is_set():
        try:
            alive = parent.is_running() and parent.create_time() == born and parent.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            alive = False
        if not alive:
            log.info("the job's process %s ended: deleting the job's clusters", pid)
            stop.set()
            return
        await asyncio.sleep(0.5)


async def watch_budgets(watch: BudgetWatch) -> None:
    while True:
        try:
            await watch.check()
        except Exception:  # noqa: BLE001 - alerts must not stop the daemon
            log.exception("budget check failed")
        await asyncio.sleep(BUDGET_INTERVAL)


async def serve(job_parent: int | None = None) -> None:
    log_path = setup_logging()
    runtime = ensure_private_dir(runtime_dir())
    sock = socket_path()
    check_socket_path(sock)
    lock = acquire_lock(runtime / "reccd.lock", sock)
    try:
        if hasattr(socket, "AF_UNIX"):
            clear_stale_socket(sock)
        data = ensure_private_dir(data_dir())
        state = State(data / "state.db")
        await state.open()
        bus = EventBus()
        manager = ClusterManager(state, bus, ensure_private_dir(data / "clusters"))
        manager.daemon_id = daemon_id(data)  # stamps what this daemon makes (scopes its orphan sweep)
        config = load_user_config()
        if config.get("max_cost_per_hour") is not None:
            manager.max_cost_per_hour = float(config["max_cost_per_hour"])
        stop = asyncio.Event()
        info = {"pid": os.getpid(), "socket": str(sock), "version": __version__, "started_at": time.time(),
                "log": str(log_path), "job": os.environ.get("RECC_JOB_ID") if job_parent else None}
        tcp = os.environ.get("RECC_TRANSPORT", "unix" if hasattr(socket, "AF_UNIX") else "tcp") == "tcp"
        token = secrets.token_urlsafe(32) if tcp else None
        loop = asyncio.get_running_loop()
        # AWS credentials (docs/credentials.md): events come from worker threads, so hop to the loop
        detach_own_endpoint(runtime)
        creds = DaemonCredentials(lambda kind, **fields: loop.call_soon_threadsafe(
            lambda: bus.publish(kind, **fields)))
        PROVIDER_ARGS["eks"] = creds.eks_provider_args
        aws_endpoint = CredentialsEndpoint(creds, runtime, data)
        await aws_endpoint.start()
        info["aws_credentials"] = aws_endpoint.info()
        app = make_app(manager, bus, info, stop.set, str(log_path), token=token)
        app.add_routes(credential_routes(creds, aws_endpoint))
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0, **RUNNER_LIMITS)
        await runner.setup()
        if tcp:
            # No AF_UNIX (Windows) or asked for: loopback TCP, and a token only the user can read.
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            info["url"] = f"http://127.0.0.1:{port}"
            write_private_file(runtime / "reccd.token", token or "")
        else:
            old_umask = os.umask(0o177)  # the socket is 0600 from the moment it exists
            try:
                await web.UnixSite(runner, str(sock)).start()
            finally:
                os.umask(old_umask)
            os.chmod(sock, 0o600)
        for sig in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", signal.SIGTERM)):
            with suppress(NotImplementedError, AttributeError):
                loop.add_signal_handler(sig, stop.set)
        stopped = threading.Event()
        if sys.platform == "win32":  # pragma: no cover - logout reaches a Windows process as window messages
            from reccd.winsession import EndSessionHandler, run_hidden_window

            def at_logout() -> None:
                loop.call_soon_threadsafe(stop.set)
                stopped.wait(SHUTDOWN_TIMEOUT)

            run_hidden_window(EndSessionHandler(at_logout, timeout=SHUTDOWN_TIMEOUT))
        await reconcile(manager)
        if not job_parent:  # a job daemon lives for one job: its first cluster would not find spares ready
            local = manager.provider("local")
            keep = getattr(local, "keep_spares", None)
            if keep is not None:
                keep(LOCAL_SPARES)
        keepalive = KeepAlive(manager)
        keepalive.start()
        background = [asyncio.create_task(watch_budgets(BudgetWatch(state, bus.publish, manager.owner, config))),
                      asyncio.create_task(refresh_loop(creds))]
        if job_parent:
            background.append(asyncio.create_task(watch_parent(job_parent, stop)))
        # What start-up made (modules, the app) lives as long as the daemon: out of the collector's sight, a
        # full collection does not walk those ~70k objects (~30 ms with every request in flight waiting)
        gc.freeze()
        write_private_file(runtime / "reccd.json", json.dumps(info))
        log.info("reccd %s listening on %s (pid %s)", __version__, info.get("url") or sock, os.getpid())
        print(f"reccd {__version__} listening on {info.get('url') or sock}", flush=True)
        await stop.wait()
        log.info("stopping: deleting this daemon's ad hoc clusters")
        for task in background:
            task.cancel()
        await keepalive.stop()
        # a job daemon's clusters belong to the job: none survive it
        await manager.shutdown(SHUTDOWN_TIMEOUT, logout=not job_parent)
        await runner.cleanup()
        await aws_endpoint.stop()
        creds.forget()  # short-lived sessions never outlive the daemon
        await state.close()
        stopped.set()
    finally:
        for leftover in ("reccd.json", "reccd.token", "aws-credentials.token"):
            with suppress(FileNotFoundError):
                (runtime / leftover).unlink()
        with suppress(FileNotFoundError):
            sock.unlink()
        lock.close()
        if job_parent:  # a job daemon's folder dies with it
            shutil.rmtree(runtime, ignore_errors=True)
    log.info("stopped")
