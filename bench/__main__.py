"""`python -m bench [--quick] [--json FILE]`: every benchmark in one run, as a Markdown table and JSON.

Each existing bench runs as a subprocess (small settings under ``--quick``) and its ratios are parsed from its
output; the three example workloads are timed against their serial pandas runs in this process.
JSON rows: ``{name, value, unit, baseline, ratio}``. It reports; it does not assert targets.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def row(name: str, value: float | None, unit: str, baseline: float | None, ratio: float | None = None) -> dict[str, Any]:
    if ratio is None and value is not None and baseline:
        ratio = value / baseline
    return {"name": name, "value": value, "unit": unit, "baseline": baseline, "ratio": ratio}


def _run(script: str, *args: str, timeout: float = 240) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=str(ROOT))
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed: {proc.stderr.strip().splitlines()[-1:] }")
    return proc.stdout


def _num(pattern: str, text: str) -> float | None:
    m = re.search(pattern, text)
    return float(m.group(1)) if m else None


def tunnel(mib: int, runs: int, trips: int) -> list[dict[str, Any]]:
    out = _run("tunnel_throughput.py", "--mib", str(mib), "--runs", str(runs), "--trips", str(trips))
    d_bulk = _num(r"direct\s+([\d.]+) s", out)
    t_bulk = _num(r"tunnel\s+([\d.]+) s", out)
    d_rt = _num(r"direct\s+([\d.]+) ms", out)
    t_rt = _num(r"tunnel\s+([\d.]+) ms", out)
    thr = (lambda s: mib / s if s else None)
    return [row(f"tunnel throughput {mib} MiB (relay vs direct)", thr(t_bulk), "MiB/s", thr(d_bulk)),
            row(f"tunnel {trips} round trips (relay vs direct)", t_rt, "ms", d_rt)]


def cluster(mb: int, runs: int, tasks: int, route_runs: int) -> list[dict[str, Any]]:
    out = _run("cluster_bench.py", "--mb", str(mb), "--runs", str(runs), "--tasks", str(tasks),
               "--route-runs", str(route_runs), timeout=400)
    rows = []
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and "socat not installed" in cells[1]:
            rows.append(row("tunnel vs socat relay", None, "socat not installed", None))
        elif len(cells) == 4 and re.fullmatch(r"[\d.]+", cells[1]):
            name, value, base = cells[0], float(cells[1]), float(cells[2])
            if "throughput" in name:  # the bench prints other s / tunnel s: report throughputs
                rows.append(row(name.replace(" (throughput ratio)", " (throughput)"), mb / base, "MiB/s", mb / value))
            else:
                rows.append(row(name, value, "s", base))
    return rows


def api(clusters: int, requests: int) -> list[dict[str, Any]]:
    out = _run("daemon_api.py", "--clusters", str(clusters), "--requests", str(requests), timeout=300)
    d = json.loads(out.strip().splitlines()[-1])
    rows = [row(f"daemon API GET /v1/clusters ({clusters} clusters) {q} at {n} client{'s' if n > 1 else ''} "
                "(vs 10 ms target)", d[f"{q}_ms_{n}"], "ms", 10.0) for n in (1, 50) for q in ("p50", "p99")]
    rows.append(row(f"daemon RSS with {clusters} clusters registered (vs none)", d["rss_mib"], "MiB", d["rss_empty_mib"]))
    return rows


def read_df(mb: float, runs: int) -> list[dict[str, Any]]:
    out = _run("read_df_bench.py", "--mb", str(mb), "--runs", str(runs))
    rows = []
    for label, key in (("read_df local vs pandas.read_parquet", "ratio local"),
                       ("read_df S3 fall-through vs raw s3fs", "ratio S3 fall-through"),
                       ("read_df S3 direct vs raw s3fs", "ratio S3 direct")):
        rows.append(row(label, None, "ratio", None, _num(re.escape(key) + r"[^:]*:\s*([\d.]+)", out)))
    return rows


def tui(clusters: int, runs: int) -> list[dict[str, Any]]:
    out = _run("tui_refresh.py", "--clusters", str(clusters), "--runs", str(runs), "--json")
    data = json.loads(out.strip().splitlines()[-1])
    return [row(f"TUI refresh with {clusters} rows (vs 50 ms target)", data["refresh_median_ms"], "ms",
                float(data["target_ms"]))]


def workloads(size: str) -> list[dict[str, Any]]:
    from examples import by_date, combined, dataframe
    from examples._common import local_datastore

    rows = []
    cores = os.cpu_count() or 1
    with local_datastore():
        for mod in (by_date, dataframe, combined):
            result = mod.measure(["--size", size, "--workers", str(cores)])
            rows.append(row(f"workload {mod.NAME} ({size}) speedup vs serial on {cores} cores",
                            result["serial_seconds"] / result["seconds"], "x", float(cores)))
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    def fmt(v: Any) -> str:
        return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    lines = ["| figure | value | unit | baseline | ratio |", "|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {fmt(r['value'])} | {r['unit']} | {fmt(r['baseline'])} | {fmt(r['ratio'])} |"
              for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small settings (under 3 minutes on 2 cores)")
    parser.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # the smallest settings, for a test
    args = parser.parse_args(argv)
    if args.smoke:
        plan = [("tunnel", lambda: tunnel(4, 1, 50)), ("tui", lambda: tui(50, 1)), ("api", lambda: api(10, 100)),
                ("workloads", lambda: workloads("small"))]
    elif args.quick:
        plan = [("tunnel", lambda: tunnel(64, 3, 1000)), ("cluster", lambda: cluster(256, 3, 300, 1)),
                ("api", lambda: api(100, 1000)),
                ("read_df", lambda: read_df(20, 3)), ("tui", lambda: tui(1000, 5)),
                ("workloads", lambda: workloads("medium"))]  # small is all overhead: no speedup to see
    else:
        plan = [("tunnel", lambda: tunnel(256, 5, 1000)), ("cluster", lambda: cluster(256, 5, 1000, 3)),
                ("api", lambda: api(100, 5000)),
                ("read_df", lambda: read_df(100, 5)), ("tui", lambda: tui(1000, 9)),
                ("workloads", lambda: workloads("large"))]
    if not args.smoke:  # EKS call counts on moto and the fake (bench/eks_calls.py), about 30 s
        plan.append(("eks", lambda: __import__("bench.eks_calls", fromlist=["rows"]).rows()))
    rows: list[dict[str, Any]] = []
    for name, fn in plan:
        try:
            rows += fn()
        except Exception as exc:  # noqa: BLE001 - one failing bench must not hide the others
            print(f"bench {name}: skipped ({exc})", file=sys.stderr)
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
