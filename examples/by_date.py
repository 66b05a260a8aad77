"""Embarrassingly parallel by date: date-partitioned files read, processed and written back.

The inputs are one parquet file per date in the LOCAL datastore (``write_df``): a day of minute bars for
a universe of securities. Each date is a `dask.delayed` task that reads its file (``read_df``), runs the
per-security intraday step (`intraday`: rolling 30-minute betas to the market and a regression of each
minute's return on the last minute's return, order imbalance and volume surprise; a few hundred ms per
date at the bench's size) and writes its result back (``write_df``); the client reads the results and
checksums them. ``serial`` is the loop a researcher would write over the same files with plain pandas:
read, compute, write, one date after another, then read the results back.

    python -m examples.by_date --size small            # RSHClient(n_workers=2), in-process
    RECC_CLUSTER=local python -m examples.by_date      # a RECC cluster through the daemon
"""

from __future__ import annotations

import os
import sys
import uuid
from typing import Any

import numpy as np
import pandas as pd

from examples._common import SIZES, checksum, dates_for, run_main

NAME = "by_date"
BARS = 390  # minute bars in a trading day
WINDOW = 30  # minutes in the rolling windows


def day_bars(date: str, size: str) -> pd.DataFrame:
    """One date's minute bars for the universe (``SIZES[size]["intraday_securities"]``), reproducible
    from the date and size alone: returns with a market factor, a security beta and an imbalance effect."""
    n = SIZES[size]["intraday_securities"]
    rng = np.random.default_rng(int(pd.Timestamp(date).strftime("%Y%m%d")) + 7)
    mkt = rng.normal(0.0, 0.0008, BARS)
    beta = rng.uniform(0.5, 1.5, n)
    imbalance = rng.standard_normal((n, BARS))
    ret = beta[:, None] * mkt[None, :] + 0.0002 * np.roll(imbalance, 1, axis=1) + rng.normal(0.0, 0.001, (n, BARS))
    return pd.DataFrame({"date": pd.Timestamp(date), "security": np.repeat(np.arange(n, dtype=np.int64), BARS),
                         "minute": np.tile(np.arange(BARS, dtype=np.int64), n), "ret": ret.ravel(),
                         "imbalance": imbalance.ravel(),
                         "volume": rng.integers(100, 10_000, n * BARS).astype(np.float64)})


def per_security(g: pd.DataFrame) -> pd.Series:
    """One security's day: rolling beta to the market, realised volatility, and an OLS of each minute's
    return on the previous minute's return, order imbalance and volume surprise."""
    r, m, vol = g["ret"], g["mkt"], g["volume"]
    beta = r.rolling(WINDOW).cov(m) / m.rolling(WINDOW).var()
    vol_z = (vol - vol.rolling(WINDOW, min_periods=2).mean()) / vol.rolling(WINDOW, min_periods=2).std()
    x = np.column_stack([np.ones(len(g)), r.shift(1), g["imbalance"].shift(1), vol_z.shift(1)])[WINDOW + 1:]
    y = r.to_numpy()[WINDOW + 1:]
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    return pd.Series({"beta_mean": beta.mean(), "beta_last": beta.iloc[-1], "rv": float(np.sqrt((r ** 2).sum())),
                      "b_rev": coef[1], "b_imb": coef[2], "b_vol": coef[3], "r2": 1.0 - resid.var() / y.var()})


def intraday(bars: pd.DataFrame) -> pd.DataFrame:
    """The per-date research step: one row per security (deterministic whatever the input's row order)."""
    bars = bars.sort_values(["security", "minute"], kind="stable")
    bars["mkt"] = bars.groupby("minute")["ret"].transform("mean")  # equal-weighted market return
    out = bars.groupby("security", sort=True)[["ret", "mkt", "volume", "imbalance"]].apply(per_security)
    out.insert(0, "date", bars["date"].iloc[0])
    return out.reset_index()


def input_path(size: str, date: str) -> str:
    return f"examples/by_date/{size}/bars/{date}.parquet"


def prepare(size: str) -> None:
    """Write the date-partitioned inputs into the LOCAL datastore (once)."""
    from recc.datastore import get_datastore
    from recc.pandasextensions.io import write_df

    store = get_datastore("LOCAL")
    for date in dates_for(size):
        if not os.path.exists(store.full(input_path(size, date))):
            write_df(day_bars(date, size), input_path(size, date), datastores="LOCAL")


def process_date(size: str, date: str, out_prefix: str) -> str:
    """One task: read a date's file, run the intraday step, write the result back."""
    from recc.pandasextensions.io import read_df, write_df

    result = intraday(read_df(input_path(size, date), datastores="LOCAL", quiet=True))
    path = f"{out_prefix}/{date}.parquet"
    write_df(result, path, datastores="LOCAL")
    return path


def collect(paths: list[str]) -> pd.DataFrame:
    from recc.pandasextensions.io import read_df

    return pd.concat([read_df(p, datastores="LOCAL", quiet=True) for p in paths], ignore_index=True)


def run(client: Any, size: str) -> str:
    """The parallel run on ``client``: one `dask.delayed` task per date; returns the checksum."""
    import dask

    prepare(size)
    out = f"examples/by_date/{size}/output/{uuid.uuid4().hex[:8]}"
    tasks = [dask.delayed(process_date, pure=False)(size, d, out) for d in dates_for(size)]
    paths = list(client.compute(tasks, sync=True))
    try:
        return checksum(collect(paths))
    finally:
        _remove(out)


def serial(size: str) -> str:
    """The plain serial pandas run: the same files, read and written one date after another."""
    from recc.datastore import get_datastore

    prepare(size)
    store = get_datastore("LOCAL")
    out = f"examples/by_date/{size}/serial-{uuid.uuid4().hex[:8]}"
    os.makedirs(store.full(out), exist_ok=True)
    results = []
    for date in dates_for(size):
        result = intraday(pd.read_parquet(store.full(input_path(size, date))))
        result.to_parquet(store.full(f"{out}/{date}.parquet"))
        results.append(pd.read_parquet(store.full(f"{out}/{date}.parquet")))
    _remove(out)
    return checksum(pd.concat(results, ignore_index=True))


def _remove(prefix: str) -> None:
    import shutil

    from recc.datastore import get_datastore

    shutil.rmtree(get_datastore("LOCAL").full(prefix), ignore_errors=True)


def measure(argv: list[str] | None = None) -> dict[str, Any]:
    return run_main(NAME, argv, prepare, serial, run)


def main(argv: list[str] | None = None) -> int:
    measure(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
