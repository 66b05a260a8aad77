"""`python -m bench [--quick] [--json FILE]`: every benchmark in one run, as a Markdown table and JSON.

Each existing bench runs as a subprocess (small settings under ``--quick``) and its ratios are parsed from its
output; the three example workloads are timed against their serial pandas runs in this process.
JSON rows: ``{name, value, unit, baseline, ratio}``. It reports; it does not assert targets.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GRACE = 20.0  # seconds a timed-out sub-bench gets to stop what it started before it is killed


def row(name: str, value: float | None, unit: str, baseline: float | None, ratio: float | None = None) -> dict[str, Any]:
    if ratio is None and value is not None and baseline:
        ratio = value / baseline
    return {"name": name, "value": value, "unit": unit, "baseline": baseline, "ratio": ratio}


def _run(script: str, *args: str, timeout: float = 240, hold: Callable[[], bool] | None = None) -> str:
    """Run ``bench/<script>`` (or ``-m module``) and return its stdout, within ``timeout`` seconds.

    ``hold`` (for tests): while it returns True the ``timeout`` clock has not started yet (the sub-bench's
    output is read meanwhile, and one that ends is reported as usual), so a test can time a sub-bench out at
    a chosen point of its run, however loaded the machine.

    The sub-bench runs in a session of its own under a wrapper that turns SIGTERM into ``SystemExit``,
    so on a timeout its ``finally`` blocks still stop the daemon it started (a daemon lives in a session
    of its own and a group kill alone would miss it); the group is killed after a grace period, and any
    process it left behind is swept (`_sweep`).
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    target = ["-m", *args] if script == "-m" else ["-f", str(HERE / script), *args]
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, *target], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=str(ROOT), start_new_session=True)
    try:
        ended = None
        while ended is None and hold is not None and hold():
            with contextlib.suppress(subprocess.TimeoutExpired):
                ended = proc.communicate(timeout=0.5)
        out, err = ended or proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.communicate(timeout=GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        raise RuntimeError(f"{script if script != '-m' else args[0]} timed out after {timeout:.0f} s") from None
    finally:
        _sweep()
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed: {err.strip().splitlines()[-1:]}")
    return out


# Runs a sub-bench (``-f path`` or ``-m module``) as if started directly, with SIGTERM as SystemExit.
WRAPPER = """
import runpy, signal, sys
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
mode, target = sys.argv[1], sys.argv[2]
sys.argv = [target, *sys.argv[3:]]
if mode == "-m":
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    runpy.run_path(target, run_name="__main__")
"""


def _become_subreaper() -> None:
    """Adopt orphaned descendants (Linux ``PR_SET_CHILD_SUBREAPER``), so `_sweep` can find a daemon whose
    sub-bench was killed before it could stop it."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # 36 = PR_SET_CHILD_SUBREAPER


def _describe(proc: Any) -> str:
    """A short name for a leftover process (its interpreter's first two arguments)."""
    try:
        return " ".join(proc.cmdline()[1:3])[:60]
    except Exception:  # noqa: BLE001 - it may be gone already
        return str(proc.pid)


def _sweep() -> None:
    """Stop every process a finished sub-bench left behind: SIGTERM first (a daemon then deletes its
    clusters), SIGKILL after a grace period; a few rounds, since killed parents orphan their children to us."""
    import psutil

    # a daemon told to stop may still be deleting its clusters when its sub-bench exits: let it finish
    psutil.wait_procs(psutil.Process().children(recursive=True), timeout=10)
    for _ in range(3):
        left = psutil.Process().children(recursive=True)
        if not left:
            return
        names = sorted({_describe(p) for p in left})
        print(f"bench: stopping {len(left)} process(es) a sub-bench left behind: {names}", file=sys.stderr)
        for p in left:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _, alive = psutil.wait_procs(left, timeout=GRACE)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(alive, timeout=5)


def _num(pattern: str, text: str) -> float | None:
    m = re.search(pattern, text)
    return float(m.group(1)) if m else None


def tunnel(mib: int, runs: int, trips: int, quick: bool = False, timeout: float = 240) -> list[dict[str, Any]]:
    """Gather and tiny tasks through the daemon's tunnel vs direct and vs socat (bench/tunnel_throughput.py)."""
    extra = ("--no-asyncio-relay",) if quick else ()  # not an issue figure: quick mode skips it
    out = _run("tunnel_throughput.py", "--mib", str(mib), "--runs", str(runs), "--trips", str(trips), *extra,
               timeout=timeout)
    thr = (lambda s: mib / s if s else None)
    t_bulk, t_rt = _num(r"tunnel\s+([\d.]+) s", out), _num(r"tunnel\s+([\d.]+) ms", out)
    rows = []
    for other in ("direct", "socat"):
        o_bulk, o_rt = _num(other + r"\s+([\d.]+) s", out), _num(other + r"\s+([\d.]+) ms", out)
        if o_bulk is None:
            rows.append(row(f"tunnel vs {other} relay", None, f"{other} not installed", None))
            continue
        rows += [row(f"{mib} MiB gather over TLS: tunnel vs {other} (throughput, median of {runs})", thr(t_bulk),
                     "MiB/s", thr(o_bulk)),
                 row(f"{trips} sequential tiny tasks: tunnel vs {other} (time, median of {runs})", t_rt, "ms", o_rt)]
    return rows


def cluster(mb: int, runs: int, tasks: int, route_runs: int, settle: float = 4.0,
            timeout: float = 400) -> list[dict[str, Any]]:
    """Create-to-first-result and close (bench/cluster_bench.py); its gather/tiny-task routes unless
    ``route_runs`` is 0 (quick mode: `tunnel` measures those)."""
    out = _run("cluster_bench.py", "--mb", str(mb), "--runs", str(runs), "--tasks", str(tasks),
               "--route-runs", str(route_runs), "--settle", str(settle), timeout=timeout)
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


def api(clusters: int, requests: int, timeout: float = 300, poll_seconds: float | None = None,
        settle: float = 3.0, load_seconds: float = 12.0) -> list[dict[str, Any]]:
    if poll_seconds is None:
        poll_seconds = 2 if requests < 5000 else 5
    out = _run("daemon_api.py", "--clusters", str(clusters), "--requests", str(requests), "--poll-seconds",
               str(poll_seconds), "--settle", str(settle), "--load-seconds", str(load_seconds), timeout=timeout)
    d = json.loads(out.strip().splitlines()[-1])
    kb = d["listing_bytes"] / 1000
    rows = [row(f"daemon API GET /v1/clusters ({clusters} clusters, {label}) {q} at {n} client{'s' if n > 1 else ''} "
                "(vs 10 ms target)", d[f"{mode}{q}_ms_{n}"], "ms", 10.0)
            for mode, label in (("", "If-None-Match as the library/TUI send"),
                                ("full_", f"whole {kb:.0f} kB body"))
            for n in (1, 50) for q in ("p50", "p99")]
    rows += [row(f"daemon API GET /v1/clusters ({clusters} clusters) {q} with 50 clients polling 4x/s each "
                 "(If-None-Match; vs 10 ms target)", d[f"poll_{q}_ms_50"], "ms", 10.0) for q in ("p50", "p99")]
    # the floor: a bare aiohttp app answering a constant 304 to the same 50 clients, in the same run
    rows += [row(f"daemon API GET /v1/clusters ({clusters} clusters, If-None-Match) {q} at 50 clients vs a bare "
                 "aiohttp app answering 304 (the HTTP server's floor)", d[f"{q}_ms_50"], "ms", d[f"bare_{q}_ms_50"])
             for q in ("p50", "p99")]
    rows.append(row("CPU per 304 at 50 clients: daemon vs a bare aiohttp app", d["daemon_cpu_ms_50"], "ms",
                    d["bare_cpu_ms_50"]))
    # the daemon's own CPU per answer at 50 clients, whole body vs 304: what a changed listing costs it per poller
    rows.append(row(f"daemon CPU per GET /v1/clusters answer at 50 clients: whole {kb:.0f} kB body vs 304",
                    d["full_daemon_cpu_ms_50"], "ms", d["daemon_cpu_ms_50"]))
    rows.append(row(f"daemon RSS with {clusters} clusters registered (vs none)", d["rss_mib"], "MiB", d["rss_empty_mib"]))
    return rows


def read_df(mb: float, runs: int, timeout: float = 240) -> list[dict[str, Any]]:
    out = _run("read_df_bench.py", "--mb", str(mb), "--runs", str(runs), timeout=timeout)
    rows = []
    for label, key in (("read_df local vs pandas.read_parquet", "ratio local"),
                       ("read_df S3 fall-through vs raw s3fs", "ratio S3 fall-through"),
                       ("read_df S3 direct vs raw s3fs", "ratio S3 direct")):
        rows.append(row(label, None, "ratio", None, _num(re.escape(key) + r"[^:]*:\s*([\d.]+)", out)))
    return rows


def tui(clusters: int, runs: int, timeout: float = 240) -> list[dict[str, Any]]:
    out = _run("tui_refresh.py", "--clusters", str(clusters), "--runs", str(runs), "--json", timeout=timeout)
    data = json.loads(out.strip().splitlines()[-1])
    return [row(f"TUI refresh with {clusters} rows (vs 50 ms target)", data["refresh_median_ms"], "ms",
                float(data["target_ms"]))]


def workloads(size: str, timeout: float = 600, repeat: int = 3) -> list[dict[str, Any]]:
    """The three examples vs their serial runs (medians of ``repeat``), in a subprocess so the time bound and
    sweep apply."""
    out = _run("-m", "bench", "--workloads-only", size, "--workloads-repeat", str(repeat), timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


def eks(timeout: float) -> list[dict[str, Any]]:
    """EKS call counts on moto and the fake Kubernetes API (bench/eks_calls.py)."""
    from bench.eks_calls import rows as eks_rows

    try:
        return eks_rows(timeout=timeout)
    finally:
        _sweep()


def _spin(n: int = 3_000_000) -> float:
    """Pure-Python CPU work (no I/O, no shared memory): the seconds one process takes for ``n`` additions."""
    start = time.perf_counter()
    total = 0
    for i in range(n):
        total += i
    return time.perf_counter() - start


def _ceiling(pool: Any, cores: int, runs: int) -> list[float]:
    """Speedups of ``cores`` processes over one on the same pure-CPU loop, alternating, ``runs`` times: what
    the machine gives parallel work while the workloads run (less than ``cores`` when others use it too)."""
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(cores):
            _spin()
        one = time.perf_counter() - start
        start = time.perf_counter()
        list(pool.map(_spin, [3_000_000] * cores, chunksize=1))
        out.append(one / (time.perf_counter() - start))
    return out


def _workloads_here(size: str, repeat: int = 3) -> list[dict[str, Any]]:
    import multiprocessing
    import statistics
    from concurrent.futures import ProcessPoolExecutor

    from examples import by_date, combined, dataframe
    from examples._common import local_datastore

    rows = []
    cores = os.cpu_count() or 1
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(cores, mp_context=context) as pool:
        list(pool.map(_spin, [1] * cores))
        ceiling = _ceiling(pool, cores, repeat)  # before the workloads and after: the load may change meanwhile
        with local_datastore():
            for mod in (by_date, dataframe, combined):
                result = mod.measure(["--size", size, "--workers", str(cores), "--repeat", str(repeat)])
                rows.append(row(f"workload {mod.NAME} ({size}) speedup vs serial on {cores} cores (median of "
                                f"{repeat})", result["serial_seconds"] / result["seconds"], "x", float(cores)))
        ceiling += _ceiling(pool, cores, repeat)
    rows.insert(0, row(f"machine ceiling: pure-Python loop, {cores} processes vs 1 during the workloads (median of "
                       f"{len(ceiling)})", statistics.median(ceiling), "x", float(cores)))
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
    parser.add_argument("--workloads-only", metavar="SIZE", help=argparse.SUPPRESS)  # `workloads`' subprocess
    parser.add_argument("--workloads-repeat", type=int, default=3, help=argparse.SUPPRESS)  # its medians of N
    args = parser.parse_args(argv)
    if args.workloads_only:
        print(json.dumps(_workloads_here(args.workloads_only, args.workloads_repeat)))
        return 0
    _become_subreaper()
    # (name, run) per sub-bench; each has a time bound (`_run`'s timeout), so the whole run has one too
    if args.smoke:  # every code path once, nothing repeated: tests/test_bench_smoke.py checks the shape only
        plan = [("tunnel", lambda: tunnel(4, 1, 10, quick=True, timeout=120)), ("tui", lambda: tui(50, 1)),
                ("api", lambda: api(10, 100, timeout=120, poll_seconds=0.5, settle=0.5, load_seconds=0.3)),
                ("workloads", lambda: workloads("small", timeout=120, repeat=1))]
    elif args.quick:  # about 2.5 minutes on 2 cores: fewer round trips and runs, the gather routes measured once
        plan = [("tunnel", lambda: tunnel(64, 3, 100, quick=True, timeout=120)),
                ("cluster", lambda: cluster(64, 2, 100, 0, timeout=120)),  # pauses as in full mode: spares refill
                ("api", lambda: api(100, 2000, timeout=120, load_seconds=6)),  # over one listing change
                ("read_df", lambda: read_df(10, 3, timeout=60)), ("tui", lambda: tui(1000, 3, timeout=60)),
                ("workloads", lambda: workloads("medium", timeout=150))]  # small is all overhead: no speedup to see
    else:
        plan = [("tunnel", lambda: tunnel(256, 5, 1000, timeout=600)), ("cluster", lambda: cluster(256, 5, 1000, 3)),
                ("api", lambda: api(100, 5000)),
                ("read_df", lambda: read_df(100, 5)), ("tui", lambda: tui(1000, 9)),
                ("workloads", lambda: workloads("large", timeout=900))]
    if not args.smoke:  # EKS call counts on moto and the fake (bench/eks_calls.py), about 30 s
        plan.append(("eks", lambda: eks(120 if args.quick else 600)))
    rows: list[dict[str, Any]] = []
    for name, fn in plan:
        start = time.monotonic()
        try:
            rows += fn()
        except Exception as exc:  # noqa: BLE001 - one failing bench must not hide the others
            print(f"bench {name}: skipped ({exc})", file=sys.stderr)
        print(f"bench {name}: {time.monotonic() - start:.0f} s", file=sys.stderr)
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
