"""Shared pieces of the examples: the synthetic panel, checksums, the client and the results table."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

ROOT = str(Path(__file__).resolve().parent.parent)  # on the workers' path, so `examples.*` imports there

# dates x securities (the daily panel of `dataframe` and `combined`; `by_date` reads a day of minute bars for
# ``intraday_securities`` per date); "large" is a daily panel of ~200 MB in memory and ~300 MB of minute bars
# (over a 1 GiB worker's comfortable share)
SIZES = {
    "small": {"dates": 8, "securities": 400, "features": 4, "intraday_securities": 10},
    # the bench's size: a few hundred ms of work per date, so the speedup measures the parallel part
    "medium": {"dates": 12, "securities": 20_000, "features": 8, "intraday_securities": 80},
    "large": {"dates": 80, "securities": 20_000, "features": 8, "intraday_securities": 200},
}


def dates_for(size: str) -> list[str]:
    return [d.strftime("%Y-%m-%d") for d in pd.bdate_range("2026-01-02", periods=SIZES[size]["dates"])]


def day_panel(date: str, size: str) -> pd.DataFrame:
    """One date's cross-section of the synthetic panel, reproducible from the date and size alone."""
    spec = SIZES[size]
    n, k = spec["securities"], spec["features"]
    rng = np.random.default_rng(int(pd.Timestamp(date).strftime("%Y%m%d")))
    features = rng.standard_normal((n, k))
    beta = np.linspace(0.01, -0.01, k)
    ret = features @ beta * 0.02 + rng.normal(0.0, 0.02, n)
    frame = pd.DataFrame(features, columns=[f"f{i}" for i in range(k)])
    frame.insert(0, "security", np.arange(n, dtype=np.int64))
    frame.insert(0, "date", pd.Timestamp(date))
    frame["ret"] = ret
    frame["volume"] = rng.integers(1_000, 1_000_000, n).astype(np.float64)
    return frame


@functools.lru_cache(maxsize=1)
def full_panel(size: str) -> pd.DataFrame:
    """The whole panel, built once per process: it stands for a dataset already loaded on the client, so
    the timed runs (serial and parallel alike) start from it rather than from generating it.
    Callers must not modify it."""
    return pd.concat([day_panel(d, size) for d in dates_for(size)], ignore_index=True)


def cross_section(df: pd.DataFrame) -> pd.DataFrame:
    """The per-date research step: ranked features, a cross-sectional regression and quintile returns.

    Deterministic for a given set of rows whatever their order (it sorts by security first).
    """
    df = df.sort_values("security", kind="stable")
    feats = [c for c in df.columns if c.startswith("f")]
    x = df[feats].rank(pct=True).to_numpy() - 0.5
    y = df["ret"].to_numpy()
    # a few ridge fits over a penalty grid: the compute-heavy part
    xtx, xty = x.T @ x, x.T @ y
    out: dict[str, Any] = {"date": pd.Timestamp(df["date"].iloc[0]), "n": len(df)}
    for lam in (0.0, 1.0, 10.0):
        coef = np.linalg.solve(xtx + lam * np.eye(len(feats)), xty)
        out[f"r2_{lam:g}"] = 1.0 - float(np.var(y - x @ coef)) / float(np.var(y))
        out[f"b0_{lam:g}"] = float(coef[0])
    score = pd.Series(x @ np.ones(len(feats)), index=df.index)
    quint = pd.qcut(score.rank(method="first"), 5, labels=False)
    by_q = df["ret"].groupby(quint.to_numpy()).mean()
    out["long_short"] = float(by_q.iloc[-1] - by_q.iloc[0])
    out["vw_ret"] = float(np.average(y, weights=df["volume"].to_numpy()))
    # extra work that scales with the panel: rolling-style smoothing of sorted returns
    out["smooth"] = float(pd.Series(np.sort(y)).rolling(50, min_periods=1).mean().sum())
    return pd.DataFrame([out])


def checksum(df: pd.DataFrame) -> str:
    """Exactly reproducible: numeric values rounded to 6 decimals, summed in a fixed order."""
    numeric = df.select_dtypes("number")
    numeric = numeric[sorted(numeric.columns)]
    values = np.round(numeric.to_numpy(dtype=np.float64), 6)
    # sum rows in a canonical (sorted) order so partition order does not matter
    rows = sorted(map(tuple, values.tolist()))
    total = sum(round(sum(r), 6) for r in rows)
    return f"{total:.6f}/{len(rows)}"


@contextlib.contextmanager
def local_datastore() -> Iterator[str]:
    """A temporary LOCAL datastore when none is set (before the client is made, so workers see it too)."""
    if os.environ.get("RECC_DATASTORE_LOCAL"):
        yield os.environ["RECC_DATASTORE_LOCAL"]
        return
    folder = tempfile.mkdtemp(prefix="recc-examples-")
    os.environ["RECC_DATASTORE_LOCAL"] = folder
    try:
        yield folder
    finally:
        os.environ.pop("RECC_DATASTORE_LOCAL", None)
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def make_client(n_workers: int = 2) -> Any:
    """`RSHClient` locally (in-process cluster) or, with ``RECC_CLUSTER`` set, on a RECC cluster."""
    from recc import RSHClient

    # source_paths reach the workers and the scheduler (which unpickles the task graphs)
    return RSHClient(n_workers=n_workers, source_paths=[ROOT])


def where_of(client: Any) -> tuple[str, Any]:
    from recc import RECCCluster

    cluster = getattr(client, "cluster", None)
    if isinstance(cluster, RECCCluster):
        return f"recc:{cluster.spec.template if cluster.spec else cluster.name}", cluster.cost_per_hour
    return "local", None


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def format_table(row: dict[str, Any]) -> str:
    head = "| " + " | ".join(row) + " |"
    rule = "|" + "|".join("---" for _ in row) + "|"
    body = "| " + " | ".join(str(v) for v in row.values()) + " |"
    return "\n".join((head, rule, body))


def _warm_imports() -> None:
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import recc.pandasextensions.io  # noqa: F401


def run_main(name: str, argv: list[str] | None, prepare: Callable[[str], None] | None,
             serial: Callable[[str], str], run: Callable[[Any, str], str], note: str = "") -> dict[str, Any]:
    """The shared `main`: the workload serially and on the client, ``--repeat`` times each (alternating, so
    both see the same machine), medians reported; prints one table row.

    Outside the timed parts: the inputs (``prepare``), the cluster's start-up and the workers' imports. Inside:
    everything the workload does from its inputs to its checksum, the same for the serial run.
    """
    parser = argparse.ArgumentParser(prog=f"examples.{name}")
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1,
                        help="time each run this many times and report medians (the first includes warm-up)")
    parser.add_argument("--no-serial", action="store_true", help="skip the serial baseline")
    args = parser.parse_args(argv)
    serial_times: list[float] = []
    times: list[float] = []
    with local_datastore():
        if prepare:
            prepare(args.size)
        with make_client(args.workers) as client:
            where, cost_per_hour = where_of(client)
            client.wait_for_workers(args.workers)
            # the workers' one-off imports (pandas, pyarrow, recc's IO) are start-up, not the workload
            client.run(_warm_imports)
            for _ in range(max(1, args.repeat)):
                if not args.no_serial:
                    serial_sum, serial_s = timed(lambda: serial(args.size))
                    serial_times.append(serial_s)
                result, seconds = timed(lambda: run(client, args.size))
                times.append(seconds)
                if not args.no_serial and serial_sum != result:
                    raise SystemExit(f"checksum mismatch: serial {serial_sum} vs {where} {result}")
    seconds = statistics.median(times)
    serial_s = statistics.median(serial_times) if serial_times else None
    row = {"workload": name, "size": args.size, "where": where, "checksum": result,
           "seconds": f"{seconds:.2f}", "serial seconds": f"{serial_s:.2f}" if serial_s else "-",
           "speedup": f"{serial_s / seconds:.2f}x" if serial_s else "-",
           "est. cost": f"${cost_per_hour * seconds / 3600:.6f}" if cost_per_hour is not None else "-"}
    if len(times) > 1:
        print(f"{name}: medians of {len(times)} runs")
    if note:
        print(f"{name}: {note}")
    print(format_table(row))
    return {**row, "seconds": seconds, "serial_seconds": serial_s}
