"""`python -m bench` at its smallest settings, so it cannot rot (shape only; targets are not asserted)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
# `--smoke`'s plan (bench/__main__.py `main`): each sub-bench, and a part of the name of a row it must produce
SMOKE_BENCHES = {"tunnel": "tunnel vs direct", "tui": "TUI refresh", "api": "daemon API",
                 "workloads": "workload "}


def test_bench_quick_smoke_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "RECC_DATASTORE_LOCAL": str(tmp_path / "local")}
    env.pop("RECC_CLUSTER", None)
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--smoke", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # a failing sub-bench is reported and skipped, not fatal, for `python -m bench`: not so here
    assert re.findall(r"^bench \w+: skipped .*$", proc.stderr, re.M) == [], proc.stderr[-2000:]
    assert set(re.findall(r"^bench (\w+): \d+ s$", proc.stderr, re.M)) == set(SMOKE_BENCHES), proc.stderr[-2000:]
    assert "| figure |" in proc.stdout
    rows = json.loads(out.read_text())
    assert isinstance(rows, list) and rows
    for r in rows:
        assert set(r) == {"name", "value", "unit", "baseline", "ratio"}
        assert isinstance(r["name"], str) and isinstance(r["unit"], str)
    for name, part in SMOKE_BENCHES.items():
        assert any(part in r["name"] and r["value"] is not None for r in rows), f"no {name} row: {rows}"


def _processes_under(folder: Path) -> list[str]:
    """Command lines of live processes whose environment names ``folder`` (a bench's private folders)."""
    import psutil

    found = []
    for proc in psutil.process_iter():
        try:
            if any(str(folder) in v for v in proc.environ().values()) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(" ".join(proc.cmdline())[:120])
        except psutil.Error:
            continue
    return found


# tunnel_throughput starts a daemon (in a session of its own) and a cluster, then runs 100,000 tiny tasks (far
# more than any timeout here allows). `_run`'s clock is held (its ``hold``) until its daemon says the cluster is
# running and the daemon, scheduler and worker processes are there, however loaded the machine, and is then
# given 3 s: the sub-bench times out with all of them up (and its clients connecting or running tasks).
TIMEOUT_CODE = """
import glob, os, sys, time

import psutil

from bench.__main__ import _become_subreaper, _run
from recc.daemon_client import DaemonClient

FOLDER = sys.argv[1]
WANTED = {"reccd": "daemon", "distributed.cli.dask_scheduler": "scheduler", "distributed.cli.dask_worker": "worker"}
UP = {"cluster running", *WANTED.values()}


def running() -> set:
    seen = set()
    for sock in glob.glob(os.path.join(FOLDER, "recc-tb*", "run", "reccd.sock")):  # the bench's private daemon
        try:
            if any(c["status"] == "running" for c in DaemonClient(sock, timeout=5).list_clusters()):
                seen.add("cluster running")
        except Exception:
            pass
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and any(FOLDER in v for v in proc.environ().values()):
                args = proc.cmdline()  # `python -m MODULE ...`
                if "-m" in args[:-1] and args[args.index("-m") + 1] in WANTED:
                    seen.add(WANTED[args[args.index("-m") + 1]])
        except psutil.Error:
            continue
    return seen


deadline = time.monotonic() + 90


def not_up_yet() -> bool:
    seen = running()
    if seen != UP and time.monotonic() < deadline:
        return True
    print("up at the timeout's start:", ", ".join(sorted(seen)), flush=True)
    return False


_become_subreaper()
try:
    _run("tunnel_throughput.py", "--mib", "4", "--runs", "1", "--trips", "100000", "--no-asyncio-relay", timeout=3,
         hold=not_up_yet)
except RuntimeError as exc:
    print(exc)
"""


def test_a_sub_bench_that_times_out_leaves_no_daemon_or_cluster_behind(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path), "RECC_LOCAL_SPARES": "0"}
    proc = subprocess.run([sys.executable, "-c", TIMEOUT_CODE, str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "up at the timeout's start: cluster running, daemon, scheduler, worker" in proc.stdout, \
        (proc.stdout, proc.stderr[-2000:])
    assert "timed out after 3 s" in proc.stdout, (proc.stdout, proc.stderr[-2000:])
    assert _processes_under(tmp_path) == []
