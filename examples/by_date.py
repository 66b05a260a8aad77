"""Embarrassingly parallel by date: date-partitioned files read, processed and written back.

The inputs are one parquet file per date in the LOCAL datastore (``write_df``); each date is a
`dask.delayed` task that reads its file (``read_df``), runs the cross-sectional step and writes its
result back (``write_df``); the client reads the results and checksums them. ``serial`` does the same
with plain pandas, one date after another.

    python -m examples.by_date --size small            # RSHClient(n_workers=2), in-process
    RECC_CLUSTER=local python -m examples.by_date      # a RECC cluster through the daemon
"""

from __future__ import annotations

import os
import sys
import uuid
from typing import Any

import pandas as pd

from examples._common import checksum, cross_section, dates_for, day_panel, run_main

NAME = "by_date"


def input_path(size: str, date: str) -> str:
    return f"examples/by_date/{size}/input/{date}.parquet"


def prepare(size: str) -> None:
    """Write the date-partitioned inputs into the LOCAL datastore (once)."""
    from recc.datastore import get_datastore
    from recc.pandasextensions.io import write_df

    store = get_datastore("LOCAL")
    for date in dates_for(size):
        if not os.path.exists(store.full(input_path(size, date))):
            write_df(day_panel(date, size), input_path(size, date), datastores="LOCAL")


def process_date(size: str, date: str, out_prefix: str) -> str:
    """One task: read a date's file, run the cross-sectional step, write the result back."""
    from recc.pandasextensions.io import read_df, write_df

    result = cross_section(read_df(input_path(size, date), datastores="LOCAL", quiet=True))
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
        result = cross_section(pd.read_parquet(store.full(input_path(size, date))))
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
