"""`read_df` of a ~100 MB Parquet file against plain pandas / raw s3fs on the same file, same run.

Not a test: run ``python bench/read_df_bench.py`` and read the ratios (targets: <= 1.03 local,
<= 1.05 S3). Medians of ``--runs`` (3), the contenders interleaved, after one warm-up read each.

* local: the file only in the second read store (``LOCAL`` misses, ``FP_LOCAL`` has it), so the
  fall-through is exercised; baseline ``pandas.read_parquet(path)``.
* S3: moto in server mode in its own process on 127.0.0.1; the file only in ``FP_S3``, the last
  of four stores (three misses first), and with ``datastores="FP_S3"``; baseline
  ``pandas.read_parquet(s3fs.S3FileSystem().open(url))``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Callable

import numpy as np
import pandas as pd

MiB = 2**20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).read()
            return proc, url
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto server did not start")
            time.sleep(0.1)


def median_times(contenders: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    for fn in contenders.values():  # warm-up: page cache, connections, imports
        fn()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    names = list(contenders)
    for run in range(runs):
        for name in names[run % len(names):] + names[:run % len(names)]:  # rotate: no contender always first
            t0 = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - t0)
    for name, values in times.items():
        print(f"  {name:38s} " + " ".join(f"{t * 1000:7.1f}" for t in values) + " ms")
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=100, help="approximate file size in MB")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    base = tempfile.mkdtemp(prefix="recc-bench-")
    moto, endpoint = start_moto()
    try:
        os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench",
                           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
                           "RECC_CONFIG_DIR": os.path.join(base, "config"), "RECC_DATA_DIR": os.path.join(base, "data"),
                           "RECC_DATASTORE_LOCAL": os.path.join(base, "local"),
                           "RECC_DATASTORE_FP_LOCAL": os.path.join(base, "fp_local"),
                           "RECC_DATASTORE_S3": "s3://recc-bench/s3", "RECC_DATASTORE_FP_S3": "s3://recc-bench/fp-s3"})
        for key in ("RECC_READ_DATASTORES", "RECC_WRITE_DATASTORES", "RECC_CONTEXT", "AWS_PROFILE"):
            os.environ.pop(key, None)
        import s3fs

        import recc.pandasextensions.io as pdx
        from recc.datastore import get_datastore, get_read_datastore_names

        rows = int(args.mb * 1e6 / 8 / 4)
        rng = np.random.default_rng(0)
        df = pd.DataFrame({c: rng.standard_normal(rows) for c in "wxyz"})
        pdx.write_df(df, "bench/big.parquet", datastores="FP_LOCAL")
        local_path = get_datastore("FP_LOCAL").full("bench/big.parquet")
        size = os.path.getsize(local_path)
        raw = s3fs.S3FileSystem()
        raw.mkdir("recc-bench")
        # in FP_S3 only, under another name: the fall-through must miss LOCAL, FP_LOCAL and S3 first
        raw.put_file(local_path, "recc-bench/fp-s3/bench/s3only.parquet")
        url = "s3://recc-bench/fp-s3/bench/s3only.parquet"
        print(f"file: {size / MiB:.1f} MiB, {rows:,} rows; read order {get_read_datastore_names()}; "
              f"median of {args.runs}")

        def raw_s3() -> pd.DataFrame:
            with raw.open(url, "rb") as f:
                return pd.read_parquet(f)

        local = median_times({
            "pandas.read_parquet": lambda: pd.read_parquet(local_path),
            "read_df (fall-through to FP_LOCAL)": lambda: pdx.read_df("bench/big.parquet", quiet=True),
        }, args.runs)
        s3 = median_times({
            "raw s3fs + pandas": raw_s3,
            "read_df (fall-through to FP_S3)": lambda: pdx.read_df("bench/s3only.parquet", quiet=True),
            "read_df (datastores='FP_S3')": lambda: pdx.read_df("bench/s3only.parquet", quiet=True,
                                                                 datastores="FP_S3"),
        }, args.runs)
        for name, t in {**local, **s3}.items():
            print(f"  median {name:38s} {t * 1000:8.1f} ms")
        print(f"ratio local (read_df / pandas.read_parquet):            {list(local.values())[1] / list(local.values())[0]:.3f}"
              "  (target <= 1.03)")
        s3_base = s3["raw s3fs + pandas"]
        print(f"ratio S3 fall-through (read_df / raw s3fs):             {s3['read_df (fall-through to FP_S3)'] / s3_base:.3f}"
              "  (target <= 1.05)")
        print(f"ratio S3 direct (read_df datastores='FP_S3' / raw s3fs): {s3['read_df (datastores=' + repr('FP_S3') + ')'] / s3_base:.3f}"
              "  (target <= 1.05)")
    finally:
        moto.terminate()
        moto.wait(10)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
