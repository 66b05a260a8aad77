"""Create-to-first-result and a 256 MB gather: RECC's local path vs plain `distributed`.

Not a test: ``python bench/cluster_bench.py [--runs N] [--mb MB]`` prints each figure, its
baseline measured in the same run, and the ratio. The daemon is started once before the
timings (a desktop daemon is already running when a researcher creates a cluster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from distributed import Client, LocalCluster
from distributed.security import Security


def inc(x: int) -> int:
    return x + 1


def median_time(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def first_result_recc() -> None:
    from recc import RECCCluster, RSHClient

    with RECCCluster("local", n_workers=2, quiet=True) as cluster, RSHClient(cluster) as client:
        assert client.submit(inc, 1).result() == 2


def first_result_local(security: Security | None) -> None:
    kwargs: dict[str, Any] = {"security": security, "protocol": "tls://"} if security else {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", **kwargs) as cluster:
        with Client(cluster) as client:
            assert client.submit(inc, 1).result() == 2


def make_blob(mb: int) -> bytes:
    return os.urandom(mb * 2**20)


def gather_ratio(mb: int, runs: int) -> tuple[float, float]:
    """Seconds to gather an ``mb`` MB result through the tunnel and straight from the scheduler."""
    from recc import RECCCluster, RSHClient

    with RECCCluster("local", n_workers=1, quiet=True, worker_memory="2GiB") as cluster:
        folder = Path(os.environ["RECC_DATA_DIR"]) / "clusters" / "local" / cluster.name
        direct = json.loads((folder / "scheduler.json").read_text())["address"]
        with RSHClient(cluster) as tunnelled, Client(direct, security=cluster.security) as straight:
            # pure=True: both clients name the same key, so the blob is made once and both gather the same bytes
            future = tunnelled.submit(make_blob, mb, pure=True)
            same = straight.submit(make_blob, mb, pure=True)
            assert future.key == same.key

            def via_tunnel() -> None:
                assert len(tunnelled.gather(future)) == mb * 2**20

            def via_direct() -> None:
                assert len(straight.gather(same)) == mb * 2**20

            via_tunnel(), via_direct()  # warm both connections
            return median_time(via_tunnel, runs), median_time(via_direct, runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mb", type=int, default=256)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="recc-b"))
    for key, sub in (("RECC_RUNTIME_DIR", "run"), ("RECC_DATA_DIR", "data"), ("RECC_LOG_DIR", "log")):
        os.environ.setdefault(key, str(base / sub))
    from recc.daemon_client import DaemonClient

    daemon = DaemonClient.connect(start=True, quiet=True)
    try:
        rows = []
        recc_t = median_time(first_result_recc, args.runs)
        plain_t = median_time(lambda: first_result_local(None), args.runs)
        tls_t = median_time(lambda: first_result_local(Security.temporary()), args.runs)
        rows.append(("create-to-first-result RECCCluster vs LocalCluster", recc_t, plain_t))
        rows.append(("create-to-first-result RECCCluster vs LocalCluster+TLS", recc_t, tls_t))
        tunnel_t, direct_t = gather_ratio(args.mb, args.runs)
        rows.append((f"{args.mb} MB gather: tunnel vs direct (throughput ratio)", direct_t, tunnel_t))
        print(f"| figure | value s | baseline s | ratio |\n|---|---|---|---|")
        for name, value, baseline in rows:
            print(f"| {name} | {value:.3f} | {baseline:.3f} | {value / baseline:.2f} |")
        print("(gather row: value = direct seconds, baseline = tunnel seconds, so the ratio is "
              "tunnel throughput / direct throughput)")
    finally:
        daemon.shutdown()


if __name__ == "__main__":
    main()
