"""Create-to-first-result, a gather and 1,000 tiny tasks: RECC's local path vs plain `distributed`.

Not a test: ``python bench/cluster_bench.py [--runs N] [--mb MB] [--tasks N]`` prints each figure,
its baseline measured in the same run, and the ratio.

* create-to-first-result: from ``RECCCluster("local", n_workers=2)`` (or ``LocalCluster(n_workers=2,
  processes=True)``, plain and with TLS) to the first task's result; closing is timed apart.
  "cold" is the first creation with no daemon running (the library starts it); the other runs
  have the daemon up, as on a desktop where it starts at login. Runs alternate RECC, LocalCluster,
  LocalCluster+TLS, with a pause after each RECC run (a researcher does not make clusters back to
  back; the daemon refills its warm spares then).
* gather and tiny tasks: the same cluster reached through the daemon's tunnel, straight, and
  through a ``socat`` relay when socat is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

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


def first_result_recc() -> tuple[float, float]:
    """Seconds to the first result, and to close."""
    from recc import RECCCluster, RSHClient

    start = time.perf_counter()
    with RECCCluster("local", n_workers=2, quiet=True) as cluster, RSHClient(cluster) as client:
        assert client.submit(inc, 1).result() == 2
        first = time.perf_counter()
    return first - start, time.perf_counter() - first


def first_result_local(security: Security | None) -> tuple[float, float]:
    kwargs: dict[str, Any] = {"security": security, "protocol": "tls://"} if security else {}
    start = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", **kwargs) as cluster:
        with Client(cluster) as client:
            assert client.submit(inc, 1).result() == 2
            first = time.perf_counter()
    return first - start, time.perf_counter() - first


def make_blob(mb: int) -> bytes:
    return os.urandom(mb * 2**20)


@contextlib.contextmanager
def socat_relay(address: str) -> Iterator[str | None]:
    """A ``socat`` byte relay to ``address`` (tls://host:port); None when socat is not installed."""
    if shutil.which("socat") is None:
        yield None
        return
    host, port = address.removeprefix("tls://").rsplit(":", 1)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    mine = probe.getsockname()[1]
    probe.close()
    proc = subprocess.Popen(["socat", f"TCP-LISTEN:{mine},bind=127.0.0.1,reuseaddr,fork,nodelay",
                             f"TCP:{host}:{port},nodelay"], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", mine), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"tls://127.0.0.1:{mine}"
    finally:
        proc.terminate()
        proc.wait()


def routes(mb: int, runs: int, tasks: int) -> dict[str, tuple[float, float]]:
    """Per route (tunnel, direct, socat): seconds to gather an ``mb`` MB result, and ``tasks`` tiny tasks."""
    from recc import RECCCluster, RSHClient

    out: dict[str, tuple[float, float]] = {}
    with RECCCluster("local", n_workers=1, quiet=True, worker_memory="2GiB") as cluster:
        folder = Path(os.environ["RECC_DATA_DIR"]) / "clusters" / "local" / cluster.name
        direct = json.loads((folder / "scheduler.json").read_text())["address"]
        with RSHClient(cluster) as tunnelled, socat_relay(direct) as relayed:
            clients = {"tunnel": tunnelled, "direct": Client(direct, security=cluster.security)}
            if relayed:
                clients["socat"] = Client(relayed, security=cluster.security)
            # pure=True: every client names the same key, so the blob is made once and all gather the same bytes
            blobs = {k: c.submit(make_blob, mb, pure=True) for k, c in clients.items()}
            for k, c in clients.items():
                assert len(c.gather(blobs[k])) == mb * 2**20  # warm the connections

            def trips(c: Client) -> None:
                for i in range(tasks):
                    assert c.submit(inc, i, pure=False).result() == i + 1

            # interleaved: a burst of load from elsewhere on the machine hits every route alike
            gather = {k: [] for k in clients}  # type: dict[str, list[float]]
            small = {k: [] for k in clients}  # type: dict[str, list[float]]
            for _ in range(runs):
                for k, c in clients.items():
                    gather[k].append(timed(lambda: c.gather(blobs[k])))
                    small[k].append(timed(lambda: trips(c)))
            for k, c in clients.items():
                out[k] = (statistics.median(gather[k]), statistics.median(small[k]))
                if k != "tunnel":
                    c.close()
    return out


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--route-runs", type=int, default=None, help="runs of the gather and tasks (default --runs)")
    parser.add_argument("--settle", type=float, default=4.0, help="pause after each RECC run (seconds)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="recc-b"))
    for key, sub in (("RECC_RUNTIME_DIR", "run"), ("RECC_DATA_DIR", "data"), ("RECC_LOG_DIR", "log")):
        os.environ.setdefault(key, str(base / sub))
    from recc.daemon_client import DaemonClient

    try:
        first_result_local(None)  # this process imports distributed's deploy code once, for every run alike
        cold, _ = first_result_recc()  # no daemon yet: the library starts it
        time.sleep(args.settle * 2)  # the daemon's warm spares start
        recc_t, recc_c, plain_t, plain_c, tls_t, tls_c = [], [], [], [], [], []
        for _ in range(args.runs):
            t, c = first_result_recc()
            recc_t.append(t), recc_c.append(c)
            time.sleep(args.settle)
            t, c = first_result_local(None)
            plain_t.append(t), plain_c.append(c)
            t, c = first_result_local(Security.temporary())
            tls_t.append(t), tls_c.append(c)
        med = statistics.median
        rows = [("create-to-first-result RECCCluster vs LocalCluster", med(recc_t), med(plain_t)),
                ("create-to-first-result RECCCluster vs LocalCluster+TLS", med(recc_t), med(tls_t)),
                ("create-to-first-result RECCCluster, daemon not running (cold) vs LocalCluster+TLS", cold, med(tls_t)),
                ("close RECCCluster vs LocalCluster+TLS", med(recc_c), med(tls_c))]
        route_runs = args.runs if args.route_runs is None else args.route_runs
        by_route = routes(args.mb, route_runs, args.tasks) if route_runs else {}  # 0: `python -m bench --quick`
        tunnel_g, tunnel_s = by_route.get("tunnel", (0.0, 0.0))
        for other in ("direct", "socat"):
            if other in by_route:
                g, t = by_route[other]
                rows.append((f"{args.mb} MB gather: tunnel vs {other} (throughput ratio)", g, tunnel_g))
                rows.append((f"{args.tasks} sequential tiny tasks: tunnel vs {other} (time)", tunnel_s, t))
        print("| figure | value s | baseline s | ratio |\n|---|---|---|---|")
        for name, value, baseline in rows:
            print(f"| {name} | {value:.3f} | {baseline:.3f} | {value / baseline:.2f} |")
        if by_route and "socat" not in by_route:
            print("| gather/tiny tasks vs socat | socat not installed | - | - |")
        print("(gather rows: value = the other route's seconds, baseline = tunnel seconds, so the ratio is "
              "tunnel throughput / other throughput)")
    finally:
        DaemonClient().shutdown()


if __name__ == "__main__":
    main()
