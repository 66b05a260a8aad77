"""Combined serial and parallel: a serial local stage, a parallel Dask stage, a join back on the client.

1. serial, on the client: per-security characteristics from the whole panel (mean volume, return volatility);
2. parallel, on the cluster: one task per date scores each security against those characteristics
   (the small characteristics table is scattered once and shared by every task);
3. on the client: the per-date scores are joined back to the characteristics and aggregated by size bucket.

    python -m examples.combined --size small
    RECC_CLUSTER=local python -m examples.combined
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pandas as pd

from examples._common import checksum, dates_for, day_panel, full_panel, run_main

NAME = "combined"


def characteristics(panel: pd.DataFrame) -> pd.DataFrame:
    """Stage 1 (serial, local): per-security characteristics."""
    chars = panel.groupby("security").agg(mean_volume=("volume", "mean"), vol=("ret", "std"))
    chars["bucket"] = pd.qcut(chars["mean_volume"].rank(method="first"), 5, labels=False).astype(np.int64)
    return chars.reset_index()


def score_date(date: str, size: str, chars: pd.DataFrame) -> pd.DataFrame:
    """Stage 2 (parallel): one date's risk-adjusted scores, regenerated from the date on the worker."""
    df = day_panel(date, size).merge(chars[["security", "vol"]], on="security", how="left")
    feats = [c for c in df.columns if c.startswith("f")]
    x = df[feats].to_numpy()
    signal = x @ np.linspace(1.0, -1.0, len(feats))
    # a little heavier work: a trimmed, demeaned signal and its cross-sectional rank
    lo, hi = np.quantile(signal, [0.01, 0.99])
    signal = np.clip(signal, lo, hi) - signal.mean()
    return pd.DataFrame({"date": pd.Timestamp(date), "security": df["security"].to_numpy(),
                         "score": signal / df["vol"].to_numpy(),
                         "rank": pd.Series(signal).rank(pct=True).to_numpy(),
                         "ret": df["ret"].to_numpy()})


def join_back(scores: pd.DataFrame, chars: pd.DataFrame) -> pd.DataFrame:
    """Stage 3 (client): join the scores to the characteristics and aggregate by date and bucket."""
    joined = scores.merge(chars, on="security", how="inner")
    joined["pnl"] = joined["score"] * joined["ret"]
    out = joined.groupby(["date", "bucket"], sort=True).agg(pnl=("pnl", "sum"), rank=("rank", "mean"),
                                                           n=("security", "size"))
    return out.reset_index()


def run(client: Any, size: str) -> str:
    chars = characteristics(full_panel(size))
    shared = client.scatter(chars, broadcast=True)
    futures = client.map(score_date, dates_for(size), size=size, chars=shared)
    scores = pd.concat(client.gather(futures), ignore_index=True)
    return checksum(join_back(scores, chars))


def serial(size: str) -> str:
    chars = characteristics(full_panel(size))
    scores = pd.concat([score_date(d, size, chars) for d in dates_for(size)], ignore_index=True)
    return checksum(join_back(scores, chars))


def measure(argv: list[str] | None = None) -> dict[str, Any]:
    return run_main(NAME, argv, full_panel, serial, run)


def main(argv: list[str] | None = None) -> int:
    measure(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
