"""Local processes: spawn in their own session, recognise them later, kill whole trees.

Every process RECC spawns carries a mark in its environment (``RECC_PROC_MARK``), which its
children inherit (a Dask nanny's worker process too). Marks are ``<group>::<role>``; a
*selector* picks a mark equal to it or starting with ``selector + "::"``, so the selector
``/w/c1`` picks a whole cluster and ``/w/c1::worker-3`` one worker. A recorded pid is trusted
only while the process at that pid has the recorded create time and a matching mark, so a
reused pid is never signalled. Nothing here judges liveness by ``kill(pid, 0)``.

All functions are blocking and quick, except where noted; callers in async code run the
slow ones (:func:`kill_all`, :func:`find_marked`) with ``asyncio.to_thread``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import psutil

MARK_VAR = "RECC_PROC_MARK"
SEP = "::"
CREATE_TIME_SLACK = 0.05  # seconds; psutil create times are rounded to clock ticks


@dataclass(frozen=True)
class Spawned:
    pid: int
    pgid: int
    create_time: float
    popen: subprocess.Popen

    def record(self) -> dict:
        """The JSON-able part, for a checkpoint."""
        return {"pid": self.pid, "pgid": self.pgid, "create_time": self.create_time}


def spawn(argv: Sequence[str], *, env: Mapping[str, str], mark: str, log: Path, cwd: Path,
          stdin_pipe: bool = False) -> Spawned:
    """Start ``argv`` in a new session (its own process group) with output appended to ``log``.

    ``env`` is added to this process's environment, with ``RECC_PROC_MARK=mark``. With
    ``stdin_pipe`` its stdin is a pipe from this process (``popen.stdin``), else /dev/null.
    """
    full_env = {**os.environ, **env}
    full_env.pop(MARK_VAR, None)
    full_env[MARK_VAR] = mark  # last in the environment block: a warm spare rewrites it in place
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        popen = subprocess.Popen(
            list(argv), env=full_env, cwd=cwd, stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
            stdout=fd, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )
    finally:
        os.close(fd)
    try:
        create_time = psutil.Process(popen.pid).create_time()
    except psutil.Error:  # died at once: keep a record anyway, it will simply not verify
        create_time = 0.0
    # With start_new_session the child is its own session and group leader: pgid == pid.
    return Spawned(popen.pid, popen.pid, create_time, popen)


def selects(selector: str, mark: str | None) -> bool:
    return bool(mark) and (mark == selector or mark.startswith(selector + SEP))


def mark_of(proc: psutil.Process) -> str | None:
    try:
        return proc.environ().get(MARK_VAR)
    except (psutil.Error, OSError):
        return None


def _marked(proc: psutil.Process, selector: str) -> bool:
    return selects(selector, mark_of(proc))


def verified(record: Mapping | None, selector: str) -> psutil.Process | None:
    """The live process ``record`` ({"pid", "create_time"}) describes, or None.

    None when the pid is gone, a zombie, or now belongs to another process (different create
    time, or no marker).
    """
    if not record or not record.get("pid"):
        return None
    try:
        proc = psutil.Process(int(record["pid"]))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        recorded = record.get("create_time")
        if recorded is not None and abs(proc.create_time() - float(recorded)) > CREATE_TIME_SLACK:
            return None
    except psutil.Error:
        return None
    return proc if _marked(proc, selector) else None


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def find_marked(select: Callable[[str], bool]) -> list[tuple[psutil.Process, str]]:
    """Live processes of this user whose mark passes ``select``, with their marks."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        mark = mark_of(proc)
        if mark and select(mark):
            found.append((proc, mark))
    return found


def _descendants(proc: psutil.Process, selector: str) -> list[psutil.Process]:
    try:
        return [c for c in proc.children(recursive=True) if _marked(c, selector)]
    except psutil.Error:
        return []


def _signal(procs: Iterable[psutil.Process], sig: int, groups: Iterable[int]) -> None:
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    groups = set(groups)
    for proc in procs:
        try:
            if os.getpgid(proc.pid) in groups:
                continue  # already signalled with its group; a second SIGTERM is not graceful
        except OSError:
            continue
        try:
            proc.send_signal(sig)  # psutil refuses if the pid was reused since it looked
        except psutil.Error:
            pass


def kill_all(records: Iterable[Mapping | None], selector: str, grace: float = 3.0) -> list[int]:
    """Terminate everything ``selector`` picks: the recorded processes, their descendants, and
    any other process with a matching mark (spawned but never recorded). SIGTERM to the
    verified process groups and processes first, SIGKILL to what is left after ``grace``
    seconds. Returns the pids still alive at the end (normally none). Blocking.
    """
    def select(mark: str) -> bool:
        return selects(selector, mark)

    targets: dict[int, psutil.Process] = {}
    groups: set[int] = set()
    for record in records:
        leader = verified(record, selector)
        if leader is None:
            continue
        targets[leader.pid] = leader
        if record.get("pgid") == leader.pid:  # the group is ours only while its leader is
            groups.add(leader.pid)
        for child in _descendants(leader, selector):
            targets[child.pid] = child
    for proc, _ in find_marked(select):
        targets.setdefault(proc.pid, proc)
    procs = list(targets.values())
    if not procs:
        return []
    _signal(procs, signal.SIGTERM, groups)
    left = _wait_gone(procs, grace)
    if left:
        _signal(left, signal.SIGKILL, [g for g in groups if any(p.pid == g for p in left)])
        left = _wait_gone(left, grace)
    # A nanny may have started a fresh worker process just before it died: sweep once more.
    stragglers = [p for p, _ in find_marked(select) if p.pid not in targets]
    if stragglers:
        _signal(stragglers, signal.SIGKILL, [])
        more = _wait_gone(stragglers, grace)
        left = list(left) + list(more)
    return [p.pid for p in left if alive(p)]


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` for ``procs`` to end; those still alive. Our own children are reaped on the way;
    a zombie whose parent is someone else counts as gone (`psutil.wait_procs` alone waited the whole timeout
    on it, e.g. on a cluster process whose parent, not the daemon, had yet to reap it)."""
    deadline = time.monotonic() + timeout
    left = procs
    while True:
        _, left = psutil.wait_procs(left, timeout=min(0.1, max(0.0, deadline - time.monotonic())))
        left = [p for p in left if alive(p)]
        if not left or time.monotonic() >= deadline:
            return left


def reap(popens: dict[int, subprocess.Popen]) -> None:
    """Collect exit statuses of our own children so none lingers as a zombie."""
    for pid, popen in list(popens.items()):
        if popen.poll() is not None:
            del popens[pid]


def tail(path: Path, n: int | None = None) -> list[str]:
    """The last ``n`` lines of a text file (all when None); [] when it does not exist."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = deque(f, maxlen=n) if n is not None else list(f)
    except OSError:
        return []
    return [line.rstrip("\n") for line in lines]


def wait_gone(pids: Iterable[int], timeout: float) -> bool:
    """Poll until none of ``pids`` is alive (zombies count as gone). Blocking."""
    deadline = time.monotonic() + timeout
    while True:
        live = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    live.append(pid)
            except psutil.Error:
                pass
        if not live or time.monotonic() > deadline:
            return not live
        time.sleep(0.1)
