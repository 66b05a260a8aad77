"""Warm spare interpreters for the ``local`` provider: a new cluster starts without import time.

A cold ``python -m distributed.cli.dask_scheduler`` spends about a second of CPU importing
distributed, bokeh and the dashboard before it listens, and each nanny another 0.6 s; on a
2-core machine that import time was most of create-to-first-result. The daemon therefore keeps
a few interpreters that have already imported what a scheduler or a nanny needs and that wait
on their stdin for one command: the argv, environment, folder and log of the process to become.

Identity stays what :mod:`reccd.procs` relies on. A spare starts with a placeholder mark as the
*last* variable of its environment block, padded to leave room, and a padded command line.
When claimed, it first rewrites both in place in its own memory (the kernel shows
``/proc/<pid>/environ`` and ``cmdline`` from those areas), so from then on it carries the
cluster's mark ``<cluster dir>::<role>`` and its cold command line, exactly like a process
spawned cold; the daemon returns the spare only once ``/proc`` shows the new mark. Linux only
(the areas' addresses come from ``/proc/self/stat``); elsewhere every process starts cold.

Spend safety: an unclaimed spare exits when its stdin reaches EOF, i.e. when the daemon closes
the pool or dies, so spares never outlive the daemon; a claimed one is a cluster process like
any other (dead-man switch, death timeout, found by its mark).

``python -m reccd.providers.spares scheduler|worker PADDING`` is the spare's side.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

MODULES = {"scheduler": "distributed.cli.dask_scheduler", "worker": "distributed.cli.dask_worker"}
SPARES_DIR = ".spares"
ROOM = 4096  # bytes kept free in the command line and in the mark for the cluster's own
ACK_TIMEOUT = 2.0  # a ready spare rewrites its mark within milliseconds of its command
SUPPORTED = sys.platform == "linux"


class SparePool:
    """Keeps ``n_workers`` worker spares and one scheduler spare ready (none when ``n_workers`` is 0)."""

    def __init__(self, workdir: Path, python: str, n_workers: int, base_env: Mapping[str, str],
                 refill_delay: float = 20.0) -> None:
        self.folder = workdir / SPARES_DIR
        self.python = python
        self.want = {"scheduler": 1 if n_workers > 0 and SUPPORTED else 0,
                     "worker": n_workers if SUPPORTED else 0}
        self.base_env = dict(base_env)
        # Refill after a pause (or when a cluster is deleted, see `refill_soon`): the new spares'
        # imports would otherwise compete for the CPU with the cluster that was just made while
        # its workers start and it runs its first tasks.
        self.refill_delay = refill_delay
        self._spares: dict[str, list[Any]] = {"scheduler": [], "worker": []}  # reccd.procs.Spawned
        self._counter = 0
        self._refill: asyncio.TimerHandle | None = None
        self._closed = False

    def _ready_file(self, spare: Any) -> Path:
        return self.folder / f"{spare.pid}.ready"

    def fill(self) -> None:
        """Start the spares that are missing (quick: it only spawns)."""
        from reccd import procs

        if self._closed:
            return
        self.folder.mkdir(mode=0o700, exist_ok=True)
        for role, want in self.want.items():
            self._spares[role] = [s for s in self._spares[role] if s.popen.poll() is None]
            while len(self._spares[role]) < want:
                self._counter += 1
                placeholder = f"{self.folder}{procs.SEP}{role}-{self._counter}{procs.SEP}" + "-" * ROOM
                spawned = procs.spawn([self.python, "-m", __name__, role, "-" * ROOM], env=self.base_env,
                                      mark=placeholder, log=self.folder / f"{role}-{self._counter}.log",
                                      cwd=self.folder, stdin_pipe=True)
                self._spares[role].append(spawned)

    def refill_soon(self) -> None:
        """Refill now: a cluster was deleted, so its CPU is free again."""
        if self._refill is not None:
            self._refill.cancel()
            self._refill = None
        self.fill()

    def _schedule_refill(self) -> None:
        if self._refill is None and not self._closed:
            def run() -> None:
                self._refill = None
                self.fill()

            self._refill = asyncio.get_running_loop().call_later(self.refill_delay, run)

    def claim(self, role: str, argv: Sequence[str], env: Mapping[str, str], mark: str, log: Path,
              cwd: Path) -> Any | None:
        """A ready spare turned into the process ``argv`` describes (a `reccd.procs.Spawned`), or None.

        Only spares that finished their imports are used (a half-imported one saves little), and
        only once ``/proc`` shows the cluster's mark on it is it returned, so it is found by that
        mark (delete, reconcile) from the moment its record exists. Blocks for a few milliseconds.
        """
        from reccd import procs

        self._schedule_refill()
        for spare in list(self._spares.get(role, [])):
            if spare.popen.poll() is not None or not self._ready_file(spare).exists():
                continue
            self._spares[role].remove(spare)
            self._ready_file(spare).unlink(missing_ok=True)
            env = {k: v for k, v in env.items() if k != procs.MARK_VAR}
            command = {"argv": list(argv), "env": {**env, procs.MARK_VAR: mark}, "log": str(log), "cwd": str(cwd)}
            try:
                spare.popen.stdin.write(json.dumps(command).encode() + b"\n")
                spare.popen.stdin.close()  # from now on the daemon's death does not end it
            except OSError:
                continue
            if _wait_mark(spare, mark):
                return spare
            spare.popen.kill()  # it did not become what it was told to: it must not run unrecognised
            spare.popen.wait()
        return None

    def close(self) -> None:
        """Let the unclaimed spares go (EOF on their stdin ends them)."""
        self._closed = True
        if self._refill is not None:
            self._refill.cancel()
        for spares in self._spares.values():
            for spare in spares:
                try:
                    spare.popen.stdin.close()
                except OSError:
                    pass
                try:
                    spare.popen.wait(2.0)
                except subprocess.TimeoutExpired:
                    spare.popen.kill()
                    spare.popen.wait()
            spares.clear()


def _wait_mark(spare: Any, mark: str) -> bool:
    import psutil

    from reccd import procs

    deadline = time.monotonic() + ACK_TIMEOUT
    while time.monotonic() < deadline and spare.popen.poll() is None:
        try:
            if procs.mark_of(psutil.Process(spare.pid)) == mark:
                return True
        except psutil.Error:
            return False
        time.sleep(0.001)
    return False


# ------------------------------------------------------------------ the spare's side


def _areas() -> tuple[int, int, int, int]:
    """arg_start, arg_end, env_start, env_end of this process (fields 48-51 of /proc/self/stat)."""
    stat = Path("/proc/self/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # fields[0] is field 3 (the state)
    return tuple(int(f) for f in fields[45:49])  # type: ignore[return-value]


def _rewrite(argv: Sequence[str], mark: str) -> None:
    """Show ``argv`` as this process's command line and ``mark`` as its RECC_PROC_MARK, in place."""
    import ctypes

    from reccd.procs import MARK_VAR

    arg_start, arg_end, env_start, env_end = _areas()
    env = ctypes.string_at(env_start, env_end - env_start)
    key = MARK_VAR.encode() + b"="
    at = env.rfind(b"\0" + key) + 1
    if at == 0 or env.find(b"\0", at) not in (-1, len(env) - 1):
        raise RuntimeError("the mark is not the last variable of the environment block")
    entry = key + mark.encode()
    room = len(env) - at - 1  # keep the block's final NUL
    if len(entry) > room:
        raise RuntimeError("the cluster's mark does not fit in the room kept for it")
    ctypes.memmove(env_start + at, entry + b"\0" * (room - len(entry)), room)
    line = b"\0".join(a.encode() for a in argv)[:arg_end - arg_start - 1]
    ctypes.memmove(arg_start, line + b"\0" * (arg_end - arg_start - len(line)), arg_end - arg_start)


def _become(command: dict[str, Any], module: Any) -> None:
    """Turn this interpreter into the process ``command`` describes, then run its CLI."""
    import dask.config

    from reccd.procs import MARK_VAR

    _rewrite(command["argv"], command["env"][MARK_VAR])  # first: from now on it is found by its mark
    os.environ.clear()
    os.environ.update(command["env"])
    dask.config.refresh()  # the configuration came from the spare's environment; take the cluster's
    os.chdir(command["cwd"])
    fd = os.open(command["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    argv = list(command["argv"])
    # argv is the cold command line, ``python -m <module> args...``: the CLI reads sys.argv[1:]
    sys.argv = [str(module.__file__), *(argv[3:] if argv[1:2] == ["-m"] else argv[1:])]
    # Should a nanny spawn its worker (its fork preload, `recc.forkworker`, makes it fork on Linux), the
    # spawn re-imports __main__: make that the CLI module, as when the process is started cold.
    sys.modules["__main__"] = module
    module.main()


def main(role: str) -> None:
    import importlib

    module = importlib.import_module(MODULES[role])
    if role == "scheduler":
        import distributed.dashboard.scheduler  # noqa: F401 - the dashboard's bokeh: most of the import time
        import recc.deadman  # noqa: F401 - the scheduler's preload
    else:
        import distributed.nanny  # noqa: F401
    Path(f"{os.getpid()}.ready").touch()  # in the spares' folder (its cwd): claim only ready spares
    line = sys.stdin.buffer.readline()
    if not line:
        return  # the daemon closed the pool or is gone
    _become(json.loads(line), module)


if __name__ == "__main__":
    main(sys.argv[1])
