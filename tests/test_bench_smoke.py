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
