"""`python -m bench` at its smallest settings, so it cannot rot (shape only; targets are not asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick_smoke_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "RECC_DATASTORE_LOCAL": str(tmp_path / "local")}
    env.pop("RECC_CLUSTER", None)
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--smoke", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| figure |" in proc.stdout
    rows = json.loads(out.read_text())
    assert isinstance(rows, list) and rows
    for r in rows:
        assert set(r) == {"name", "value", "unit", "baseline", "ratio"}
        assert isinstance(r["name"], str) and isinstance(r["unit"], str)
    assert any(r["name"].startswith("workload ") for r in rows)


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


def test_a_sub_bench_that_times_out_leaves_no_daemon_or_cluster_behind(tmp_path):
    # tunnel_throughput starts a daemon (in a session of its own) and a cluster; 15 s is enough to get there
    # and far too little for 100,000 tiny tasks, so `_run` times out while they are all up
    code = ("from bench.__main__ import _become_subreaper, _run\n"
            "_become_subreaper()\n"
            "try:\n"
            "    _run('tunnel_throughput.py', '--mib', '4', '--runs', '1', '--trips', '100000',"
            " '--no-asyncio-relay', timeout=15)\n"
            "except RuntimeError as exc:\n"
            "    print(exc)\n")
    env = {**os.environ, "TMPDIR": str(tmp_path), "RECC_LOCAL_SPARES": "0"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=150)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "timed out after 15 s" in proc.stdout
    assert _processes_under(tmp_path) == []
