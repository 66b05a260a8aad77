"""Shared test harness: every test fails if it leaves a process or a listening port behind."""

from __future__ import annotations

import os
import time
import uuid

import psutil
import pytest

# Every process a test starts inherits this marker (unless a test deliberately starts one
# with a clean environment; those are found as descendants instead).
SESSION_MARK = uuid.uuid4().hex
os.environ["RECC_TEST_SESSION"] = SESSION_MARK
# Daemons keep no warm spare interpreters unless a test asks (`spares` below): on two cores, three
# idle interpreters importing distributed per daemon start, never claimed by most tests, were CPU
# the whole suite waited for. tests/test_local_spares.py and the daemon end-to-end test use them.
os.environ["RECC_LOCAL_SPARES"] = "0"


def _marked_processes() -> set[int]:
    me = os.getpid()
    found: set[int] = set()
    try:
        found.update(p.pid for p in psutil.Process(me).children(recursive=True))
    except psutil.Error:
        pass
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            with open(f"/proc/{proc.pid}/environ", "rb") as f:
                if f"RECC_TEST_SESSION={SESSION_MARK}".encode() in f.read():
                    found.add(proc.pid)
        except OSError:
            continue
    return found


def _describe(pids: set[int]) -> list[str]:
    out = []
    for pid in sorted(pids):
        try:
            out.append(f"{pid}: {' '.join(psutil.Process(pid).cmdline())[:200]}")
        except psutil.Error:
            pass
    return out


def _listening_ports() -> set[int]:
    try:
        conns = psutil.Process(os.getpid()).net_connections(kind="tcp")
    except psutil.Error:
        return set()
    return {c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN}


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.Error:
            pass
    return alive


@pytest.fixture(autouse=True)
def check_leaks(request):
    """Fail a test that leaves a process (daemon, scheduler, worker) or a listening port behind."""
    before = _marked_processes()
    ports_before = _listening_ports()
    yield
    deadline = time.monotonic() + 10
    leaked = _alive(_marked_processes() - before)
    while leaked and time.monotonic() < deadline:
        time.sleep(0.2)
        leaked = _alive(_marked_processes() - before)
    if leaked:
        description = _describe(leaked)
        for pid in leaked:
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
        pytest.fail("test left processes behind:\n" + "\n".join(description))
    leaked_ports = _listening_ports() - ports_before
    if leaked_ports:
        pytest.fail(f"test left listening ports behind: {sorted(leaked_ports)}")


@pytest.fixture(autouse=True)
def restore_environ():
    """Each test ends with this process's environment as it began. The library sets variables in its own
    process (`RSHClient` points AWS SDKs at the daemon's credentials endpoint; a job sets RECC_DAEMON): left
    in a test process, they reached later tests' daemons, which then read a token file long gone."""
    saved = dict(os.environ)
    yield
    if dict(os.environ) != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def recc_dirs(monkeypatch):
    """Private RECC folders for this test, exported to this process and its children."""
    from tests.harness import make_dirs

    dirs = make_dirs()
    for key, value in dirs.items():
        if not key.startswith("_"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("RECC_DAEMON", raising=False)
    monkeypatch.delenv("RECC_CLUSTER", raising=False)
    yield dirs
    import shutil

    shutil.rmtree(dirs["_base"], ignore_errors=True)


@pytest.fixture
def spares() -> str:
    """How many warm worker interpreters the `daemon` fixture's daemon keeps (override to turn them on)."""
    return "0"


@pytest.fixture
def daemon(recc_dirs, spares):
    """A running `reccd` in private folders; stopped (and its clusters deleted) after the test."""
    from tests.harness import Daemon

    d = Daemon(recc_dirs)
    d.env["RECC_LOCAL_SPARES"] = spares
    d.start()
    try:
        yield d
    finally:
        d.cleanup()
