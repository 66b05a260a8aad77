"""Partitioned data in the datastores: one file per date (``panel/{date:%Y-%m-%d}.parquet``) or a glob.

Listing globs each read datastore once (not one request per date) and keeps, for every path,
the first store in fall-through order that has it. Reading many partitions builds a
`dask.dataframe` (or a list of `dask.delayed`) whose tasks read on the workers; the client reads
at most the Parquet schema (or, for other formats without ``meta=``, the first partition).
"""

from __future__ import annotations

import functools
import glob as globlib
import os
import re
from collections import Counter
from dataclasses import dataclass
from datetime import date as Date, datetime
from typing import Any, Iterable

import pandas as pd

from recc.datastore import Datastore, access_error, clean_path, datastores_for, locate
from recc.datasync import TMP_MARK

DATE_FIELD = re.compile(r"\{date(?::([^{}]*))?\}")


@dataclass(frozen=True)
class Partition:
    path: str  # relative to the datastore roots
    datastore: str  # the first read datastore that has it
    date: pd.Timestamp | None = None


def format_date(pattern: str, when: Any) -> str:
    """``pattern`` with each ``{date:FMT}`` (default ``%Y-%m-%d``) filled in."""
    stamp = pd.Timestamp(when)
    return DATE_FIELD.sub(lambda m: stamp.strftime(m.group(1) or "%Y-%m-%d"), pattern)


def _glob_of(pattern: str, sample: pd.Timestamp) -> str:
    # one '*' per path segment the formatted date spans ('%Y/%m/%d' spans three)
    return DATE_FIELD.sub(lambda m: "/".join("*" for _ in sample.strftime(m.group(1) or "%Y-%m-%d").split("/")),
                          pattern)


def _glob(store: Datastore, pattern: str) -> list[str]:
    rel = clean_path(pattern)
    try:
        if store.is_local:
            # root_dir: the root's own name is never read as a pattern
            names = [h.replace(os.sep, "/") for h in globlib.glob(rel, root_dir=store.base, recursive=True)]
        else:
            prefix = store.base + "/"
            names = [h[len(prefix):] for h in store.fs.glob(store.full(rel)) if h.startswith(prefix)]
    except FileNotFoundError:  # no root or no bucket: nothing there
        return []
    except Exception as exc:  # noqa: BLE001 - name the store
        raise access_error(store, "list", rel, exc) from exc
    return [n for n in names if not n.endswith(TMP_MARK)]


def list_partitions(pattern: str, start: str | Date | datetime | None = None,
                    end: str | Date | datetime | None = None, *, freq: str = "D",
                    datastores: str | Iterable[str] | None = None) -> list[Partition]:
    """The partitions that exist, each from the first read datastore that has it.

    With a ``{date:FMT}`` field, the dates ``pd.date_range(start, end, freq=freq)`` (both ends
    included; ``freq="B"`` for business days), missing dates left out; otherwise ``pattern`` is a
    glob (``panel/*.parquet``, ``**`` crosses folders). Sorted by date, else by path.
    """
    expected: dict[str, pd.Timestamp] | None = None
    query = pattern
    if DATE_FIELD.search(pattern):
        if start is None or end is None:
            raise ValueError(f"{pattern!r} has a {{date}} field: give start and end")
        dates = pd.date_range(start, end, freq=freq)
        if len(dates) == 0:
            return []
        expected = {format_date(pattern, d): d for d in dates}
        query = _glob_of(pattern, dates[0])
    found: dict[str, str] = {}
    for store in datastores_for("read", datastores):
        for name in _glob(store, query):
            if expected is None or name in expected:
                found.setdefault(name, store.name)
    parts = [Partition(name, store, expected[name] if expected else None) for name, store in found.items()]
    return sorted(parts, key=lambda p: (p.date, p.path) if expected else (0, p.path))


def _read_one(part: Partition, kwargs: dict[str, Any] | None = None) -> pd.DataFrame:
    from recc.pandasextensions.io import read_df

    return read_df(part.path, datastores=[part.datastore], quiet=True, allow_pickle=False, **(kwargs or {}))


def read_partition(pattern: str, when: Any, datastores: str | Iterable[str] | None = None, quiet: bool = False,
                   **kwargs: Any) -> pd.DataFrame:
    """One date's partition as pandas (through the fall-through, like `read_df`)."""
    from recc.pandasextensions.io import read_df

    return read_df(format_date(pattern, when), datastores=datastores, quiet=quiet, **kwargs)


def _meta(part: Partition, kwargs: dict[str, Any]) -> pd.DataFrame:
    from recc.pandasextensions.io import format_of, read_found

    if format_of(part.path) == "parquet":
        import pyarrow.parquet as pq

        found = locate(part.path, [part.datastore])
        source = found.full if found.store.is_local else found.store.fs.open(found.full, "rb")
        try:
            meta = pq.read_schema(source).empty_table().to_pandas()
        finally:
            if not isinstance(source, str):
                source.close()
        columns = kwargs.get("columns")
        return meta[list(columns)] if columns is not None else meta
    found = locate(part.path, [part.datastore])
    return read_found(found, format_of(part.path), kwargs).iloc[:0]


def read_partitions(pattern: str, start: Any = None, end: Any = None, *, freq: str = "D",
                    datastores: str | Iterable[str] | None = None, as_: str = "dask", meta: Any = None,
                    quiet: bool = False, **kwargs: Any) -> Any:
    """Many partitions: a `dask.dataframe` (``as_="dask"``), a list of `dask.delayed` (``"delayed"``)
    or, reading everything here, one pandas frame (``"pandas"``).

    The tasks read on the workers (each names the store the listing found). ``meta=`` skips
    reading a schema or first partition on the client. `FileNotFoundError` when none exist.
    """
    if as_ not in ("dask", "delayed", "pandas"):
        raise ValueError(f"as_ must be 'dask', 'delayed' or 'pandas', not {as_!r}")
    parts = list_partitions(pattern, start, end, freq=freq, datastores=datastores)
    if not parts:
        where = ", ".join(s.name for s in datastores_for("read", datastores))
        between = f" between {start} and {end}" if DATE_FIELD.search(pattern) else ""
        raise FileNotFoundError(f"no partitions of {pattern}{between} in {where}")
    if not quiet:
        counts = Counter(p.datastore for p in parts)
        print(f"Loading {len(parts)} partitions from " + ", ".join(f"{k} ({v})" for k, v in counts.items()),
              flush=True)
    if as_ == "pandas":
        return pd.concat([_read_one(p, kwargs) for p in parts], ignore_index=False)
    if as_ == "delayed":
        import dask

        read = dask.delayed(_read_one, pure=True)
        return [read(p, kwargs) for p in parts]
    import dask.dataframe as dd

    if meta is None:
        meta = _meta(parts[0], kwargs)
    return dd.from_map(functools.partial(_read_one, kwargs=kwargs), parts, meta=meta, label="read-df",
                       enforce_metadata=False)
