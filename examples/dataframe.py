"""Dataframe parallelisation: `dask.dataframe`, ``set_index`` on date, a custom groupby-apply per partition.

The panel is built on the client and sent with the tasks (``dd.from_pandas``); after ``set_index("date")``
every date sits in one partition, so ``map_partitions`` of a ``groupby(level="date").apply`` of the
cross-sectional step gives the same rows as the serial ``df.groupby("date").apply``.

    python -m examples.dataframe --size small
    RECC_CLUSTER=local python -m examples.dataframe
"""

from __future__ import annotations

import sys
from typing import Any

import pandas as pd

from examples._common import checksum, cross_section, full_panel, run_main

NAME = "dataframe"


def per_partition(part: pd.DataFrame) -> pd.DataFrame:
    """The custom groupby-apply on one partition (indexed by date)."""
    if part.empty:
        return _empty()
    frames = [cross_section(group.reset_index()) for _, group in part.groupby(level="date", sort=True)]
    return pd.concat(frames, ignore_index=True)


def _empty() -> pd.DataFrame:
    from examples._common import SIZES, day_panel

    return cross_section(day_panel("2026-01-02", "small")).iloc[:0]


def run(client: Any, size: str, npartitions: int | None = None) -> str:
    import dask.dataframe as dd

    panel = full_panel(size)  # the client-side dataset
    nparts = npartitions or max(2, 2 * len(client.scheduler_info().get("workers", {})) or 2)
    ddf = dd.from_pandas(panel, npartitions=nparts, sort=False).set_index("date")
    result = ddf.map_partitions(per_partition, meta=_empty())
    return checksum(client.compute(result, sync=True))


def serial(size: str) -> str:
    panel = full_panel(size)
    frames = [cross_section(group) for _, group in panel.groupby("date", sort=True)]
    return checksum(pd.concat(frames, ignore_index=True))


# said with every result: at the sizes here the dask.dataframe run is expected to be slower than pandas
NOTE = ("expect < 1x at small and medium sizes: the whole panel is shipped from the client and shuffled between "
        "processes by set_index, which costs more than the few tens of ms of work per date save; the pattern pays off "
        "when the work per date, not the data, dominates")


def measure(argv: list[str] | None = None) -> dict[str, Any]:
    return run_main(NAME, argv, full_panel, serial, run, note=NOTE)


def main(argv: list[str] | None = None) -> int:
    measure(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
