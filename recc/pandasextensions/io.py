"""`read_df` / `write_df`: pandas frames in the named datastores, by file extension.

Reads fall through the read datastores (`recc.datastore`) and report the one used
("Loading from S3"); writes go to the write datastores. ``datastores=`` (a name, ``"A,B"`` or
a list) overrides either per call. Writes are atomic: a temporary file and a rename on a
filesystem; one PUT or one multipart upload on an object store (the frame is serialised once,
in memory, and its SHA-256 goes into the object's metadata for `recc.datastore.sync`).
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any, Callable, Iterable

import pandas as pd
from fsspec.spec import AbstractBufferedFile

from recc.datastore import (SHA256_KEY, Datastore, DatastoreError, Found, access_error, clean_path,
                            datastores_for, locate, report_read)
from recc.datasync import temp_name
from recc.pandasextensions.partitions import (Partition, format_date, list_partitions, read_partition,
                                              read_partitions)

# longest suffix first
SUFFIXES = ((".csv.gz", "csv"), (".csv", "csv"), (".parquet", "parquet"), (".pq", "parquet"),
            (".feather", "feather"), (".jsonl.gz", "jsonl"), (".jsonl", "jsonl"), (".ndjson", "jsonl"),
            (".pickle", "pickle"), (".pkl", "pickle"))

__all__ = ["read_df", "write_df", "format_of", "SUFFIXES", "Partition", "format_date", "list_partitions",
           "read_partition", "read_partitions"]


def format_of(path: str) -> str:
    """``csv``, ``parquet``, ``feather``, ``jsonl`` or ``pickle``, from the file name."""
    lower = os.fspath(path).lower()
    for suffix, fmt in SUFFIXES:
        if lower.endswith(suffix):
            return fmt
    known = ", ".join(s for s, _ in SUFFIXES)
    raise ValueError(f"cannot tell the format of {path!r} from its extension; known: {known}")


def _read_kwargs(fmt: str, path: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    kw = dict(kwargs)
    if path.lower().endswith(".gz"):  # a file object carries no name to infer it from
        kw.setdefault("compression", "gzip")
    if fmt == "jsonl":
        kw.setdefault("lines", True)
        kw.setdefault("orient", "records")
    return kw


_READERS: dict[str, Callable[..., pd.DataFrame]] = {
    "csv": pd.read_csv, "parquet": pd.read_parquet, "feather": pd.read_feather,
    "jsonl": pd.read_json, "pickle": pd.read_pickle,
}


def read_found(found: Found, fmt: str, kwargs: dict[str, Any]) -> pd.DataFrame:
    """Read a located file: a local path goes to pandas as is (pyarrow's own I/O); others as an open file."""
    reader, kw = _READERS[fmt], _read_kwargs(fmt, found.path, kwargs)
    store = found.store
    if store.is_local:
        return reader(found.full, **kw)
    s3 = store.protocol in ("s3", "s3a") and found.info.get("type") == "file"
    try:
        # s3fs: the size and details (ETag) from `locate` spare the file its own HEAD request
        f = store.fs.open(found.full, "rb", **({"size": found.info["size"]} if s3 else {}))
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - name the store
        raise access_error(store, "read", found.path, exc) from exc
    if s3 and isinstance(f, AbstractBufferedFile):
        f.details = dict(found.info)
    with f:
        return reader(f, **kw)


def read_df(path: str, datastores: str | Iterable[str] | None = None, quiet: bool = False,
            allow_pickle: bool = False, **kwargs: Any) -> pd.DataFrame:
    """Read a frame from the first read datastore that has ``path`` (relative to the roots).

    Prints "Loading from <NAME>" unless ``quiet`` (or the ``recc.io`` logger is set above INFO);
    on a worker with `DatastoreSetup` the worker's log says it instead. Keyword arguments go to
    the pandas reader. Pickle needs ``allow_pickle=True``: unpickling runs code from the file.
    """
    fmt = format_of(path)
    if fmt == "pickle" and not allow_pickle:
        raise DatastoreError(f"refusing to read the pickle {path}: unpickling runs code from the file",
                             hint="pass allow_pickle=True if you trust every datastore it could come from")
    found = locate(path, datastores)
    report_read(found, quiet)
    return read_found(found, fmt, kwargs)


def _write(df: pd.DataFrame, fmt: str, target: Any, path: str, kwargs: dict[str, Any]) -> None:
    kw = dict(kwargs)
    if fmt in ("csv", "jsonl", "pickle"):
        kw.setdefault("compression", "gzip" if path.lower().endswith(".gz") else None)
    if fmt == "csv":
        kw.setdefault("index", False)
        df.to_csv(target, **kw)
    elif fmt == "parquet":
        df.to_parquet(target, **kw)
    elif fmt == "feather":
        df.to_feather(target, **kw)
    elif fmt == "jsonl":
        kw.setdefault("orient", "records")
        kw.setdefault("lines", True)
        df.to_json(target, **kw)
    else:
        df.to_pickle(target, **kw)


def _write_local(df: pd.DataFrame, fmt: str, store: Datastore, rel: str, kwargs: dict[str, Any]) -> None:
    full = store.full(rel)
    tmp = temp_name(full)
    try:
        os.makedirs(os.path.dirname(full), exist_ok=True)
    except OSError as exc:
        raise access_error(store, "write", rel, exc) from exc
    try:
        _write(df, fmt, tmp, rel, kwargs)
        os.replace(tmp, full)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise access_error(store, "write", rel, exc) from exc
        raise


def _put(store: Datastore, rel: str, data: bytes) -> None:
    full = store.full(rel)
    try:
        if store.protocol in ("s3", "s3a"):
            meta = {SHA256_KEY: hashlib.sha256(data).hexdigest()}
            store.fs.pipe_file(full, data, chunksize=store.fs.default_block_size, Metadata=meta)
        else:
            store.fs.pipe_file(full, data)
    except Exception as exc:  # noqa: BLE001 - rights, bucket, credentials: name the store
        raise access_error(store, "write", rel, exc) from exc


def write_df(df: pd.DataFrame, path: str, datastores: str | Iterable[str] | None = None,
             **kwargs: Any) -> list[str]:
    """Write ``df`` to ``path`` in every write datastore (or ``datastores``); returns their names.

    Keyword arguments go to the pandas writer; CSV defaults to ``index=False`` so the frame
    reads back the same.
    """
    fmt = format_of(path)
    rel = clean_path(path)
    data: bytes | None = None
    written = []
    for store in datastores_for("write", datastores):
        if store.is_local:
            _write_local(df, fmt, store, rel, kwargs)
        else:
            if data is None:
                buf = io.BytesIO()
                _write(df, fmt, buf, rel, kwargs)
                data = buf.getvalue()
            _put(store, rel, data)
        written.append(store.name)
    return written
