"""The daemon API under load: `GET /v1/clusters` latency with 1 and 50 concurrent clients, and RSS.

Not a test: ``python bench/daemon_api.py [--clusters 100] [--requests 2000]`` prints one JSON line.

A real daemon (``reccd``'s own `serve`, in a subprocess with private folders) serves its real API
over its Unix socket. ``--clusters`` clusters are registered through ``POST /v1/clusters`` with a
bench-only provider whose clusters cost nothing to run (no processes), so the daemon holds
each one's state, tunnels, heartbeats and observations as it would for real clusters; the
listing each request returns names all of them.

Clients are asyncio connections in this process (one per simulated client, keep-alive, each
sending its next request when the last one is answered): with 50 of them the daemon always
has 50 requests in flight, so p99 includes the queueing behind the others. The headline
figures are conditional requests, as the library and the TUI make them (``If-None-Match`` with
the ETag last received: 304 while the listing is unchanged). They run for ``--load-seconds``, so that
they include the listing's changes: every bench cluster reports task activity at each heartbeat, so
the listing changes every time the daemon remakes it (every 5 s, `reccd.manager.LIST_REFRESH`) and
then every client fetches the whole body at once. The ``full_`` figures ask for the whole body every time.
The ``bare_`` figures are the same 50 conditional clients against an aiohttp app that does nothing
but answer 304 (`serve_bare`): the floor of the daemon's HTTP server on this machine, measured in the same run.
``daemon_cpu_ms`` is the daemon's own CPU per answer (its process's CPU time over the run divided by
the requests): what the API costs, apart from the clients' share of the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, AsyncIterator

ROOT = Path(__file__).resolve().parent.parent


class NullProvider:
    """Clusters that exist only in the daemon's books: every step succeeds at once."""

    name = "bench"

    def __init__(self, workdir: Path, **_: Any) -> None:
        self.workdir = workdir

    async def create(self, name: str, spec: Any, tls: Any) -> AsyncIterator[dict[str, Any]]:
        yield {"name": name, "ready": True}

    async def delete(self, name: str, last: Any) -> None:
        return None

    async def scale(self, name: str, n: int, last: Any) -> dict[str, Any]:
        return dict(last or {}, n=n)

    async def status(self, names: Any, lasts: Any) -> list[Any]:
        from reccd.providers import ProviderStatus

        return [ProviderStatus(name=n, alive=True, workers_ready=1, workers_desired=1, nodes=1, detail={})
                for n in names]

    def endpoints(self, name: str, last: Any) -> Any:
        from reccd.providers import Endpoint, Endpoints

        return Endpoints(scheduler=Endpoint("127.0.0.1", 9), dashboard=Endpoint("127.0.0.1", 9))

    async def logs(self, name: str, last: Any, tail: int | None = None) -> dict[str, list[str]]:
        return {}

    async def heartbeat(self, name: str, last: Any, ttl: float, timeout: float = 5.0) -> Any:
        from recc.harvest import IdleFacts

        now = time.time()
        return IdleFacts(last_activity=now, clients=1, last_client_left=None, observed_at=now, started_at=now)

    async def list_owned(self) -> list[str]:
        return []


def serve() -> None:
    """The daemon, with the bench provider registered."""
    import recc.spec
    import reccd.providers
    from reccd.__main__ import main

    recc.spec.PROVIDERS = (*recc.spec.PROVIDERS, "bench")
    reccd.providers.PROVIDERS["bench"] = "bench.daemon_api:NullProvider"
    sys.exit(main([]))


# the response head's fields, found without splitting it (the clients share a core with the daemon: the less
# each spends per answer, the less of the latency measured is the clients' own queueing)
_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)
_ETAG = re.compile(rb"\r\netag: *([^\r]*)", re.IGNORECASE)


def serve_bare(sock: str) -> None:
    """The floor of the HTTP server the daemon uses: an aiohttp app with no middleware and no work, answering
    ``GET /v1/clusters`` with a constant 304 (or a 2-byte body without ``If-None-Match``)."""
    from aiohttp import web

    async def listing(request: web.Request) -> web.Response:
        headers = {"ETag": '"bare"', "Cache-Control": "no-cache"}
        if request.headers.get("If-None-Match") == '"bare"':
            return web.Response(status=304, headers=headers)
        return web.Response(body=b"{}", content_type="application/json", headers=headers)

    async def run() -> None:
        app = web.Application()
        app.router.add_get("/v1/clusters", listing)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.UnixSite(runner, sock).start()
        await asyncio.Event().wait()

    asyncio.run(run())


async def _client(sock: str, n: int, latencies: list[float], conditional: bool = True,
                  every: float = 0.0, until: float = float("inf")) -> None:
    """``n`` requests on one keep-alive connection (fewer if ``until``, a `time.perf_counter`, comes
    first), back to back or (``every`` > 0) one every ``every`` seconds from a random phase, as a polling
    client does. ``conditional``: like the library and the TUI, send the ETag of the listing last received
    (``If-None-Match``); an unchanged listing is a 304."""
    reader, writer = await asyncio.open_unix_connection(sock)
    etag = b""
    due = time.perf_counter() + random.uniform(0, every)
    try:
        for _ in range(n):
            if time.perf_counter() >= until:
                break
            if every:
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                due += every
            start = time.perf_counter()
            writer.write(b"GET /v1/clusters HTTP/1.1\r\nHost: localhost\r\n"
                         + (b"If-None-Match: " + etag + b"\r\n" if conditional and etag else b"") + b"\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 304"):
                length = _LENGTH.search(head)
                await reader.readexactly(int(length.group(1)) if length else 0)
            tag = _ETAG.search(head)
            etag = tag.group(1) if tag else etag
            latencies.append(time.perf_counter() - start)
    finally:
        writer.close()


async def load(sock: str, clients: int, total: int, conditional: bool = True, every: float = 0.0,
               seconds: float | None = None) -> dict[str, float]:
    """``total`` requests over ``clients`` clients, or as many as they make in ``seconds``."""
    latencies: list[float] = []
    per = max(1, total // clients) if seconds is None else 1 << 40
    await asyncio.gather(*(_client(sock, 3, [], conditional) for _ in range(clients)))  # warm up
    start = time.perf_counter()
    until = start + seconds if seconds is not None else float("inf")
    await asyncio.gather(*(_client(sock, per, latencies, conditional, every, until) for _ in range(clients)))
    wall = time.perf_counter() - start
    latencies.sort()
    return {"p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            "requests_per_s": len(latencies) / wall, "requests": len(latencies) + 3 * clients}


def cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def rss_mib(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--requests", type=int, default=2000, help="requests per load level asking for the body")
    parser.add_argument("--load-seconds", type=float, default=12.0,
                        help="length of each conditional load level (longer than the listing's 5 s reuse)")
    parser.add_argument("--poll-seconds", type=float, default=3.0, help="length of the polling run")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds to wait once the clusters run, before measuring (a keep-alive round)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="recc-api"))
    env = {**os.environ, "RECC_RUNTIME_DIR": str(base / "run"), "RECC_DATA_DIR": str(base / "data"),
           "RECC_LOG_DIR": str(base / "log"), "RECC_LOCAL_SPARES": "0",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    os.environ.update({k: env[k] for k in ("RECC_RUNTIME_DIR", "RECC_DATA_DIR", "RECC_LOG_DIR")})
    daemon = subprocess.Popen([sys.executable, "-c", "from bench.daemon_api import serve; serve()"], env=env,
                              cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from recc.daemon_client import DaemonClient
    from recc.paths import socket_path
    from recc.templates import resolve

    client = DaemonClient()
    try:
        deadline = time.monotonic() + 60
        while not client.is_alive():
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise SystemExit("the daemon did not start")
            time.sleep(0.1)
        rss_empty = rss_mib(daemon.pid)
        spec = resolve("local", n_workers=1).to_dict()
        spec.update(provider="bench", instance_type="m5.xlarge")  # priced like a small cloud cluster
        for i in range(args.clusters):
            client.create_cluster(spec, f"bench-{i:03d}")
        while sum(c["status"] == "running" for c in client.list_clusters()) < args.clusters:
            time.sleep(0.1)
        time.sleep(args.settle)  # a keep-alive round (heartbeats, observations) has run over all of them
        out: dict[str, Any] = {"clusters": args.clusters, "rss_empty_mib": rss_empty}
        out["listing_bytes"] = len(json.dumps({"clusters": client.list_clusters()}, separators=(",", ":")))
        # conditional (what the library and the TUI send), then every request asking for the whole body
        for mode, conditional in (("", True), ("full_", False)):
            for clients in (1, 50):
                used = cpu_seconds(daemon.pid)
                result = asyncio.run(load(str(socket_path()), clients, args.requests, conditional,
                                          seconds=args.load_seconds if conditional else None))
                # the daemon's own CPU per answer: what the API costs, whatever the clients' share of the cores
                result["daemon_cpu_ms"] = 1000 * (cpu_seconds(daemon.pid) - used) / result.pop("requests")
                out.update({f"{mode}{k}_{clients}": v for k, v in result.items()})
        # the same 50 clients against a bare aiohttp app: what any handler on this HTTP server and machine gets
        bare_sock = str(base / "bare.sock")
        bare = subprocess.Popen([sys.executable, "-c", f"from bench.daemon_api import serve_bare; serve_bare({bare_sock!r})"],
                                env=env, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while not os.path.exists(bare_sock):
                if bare.poll() is not None:
                    raise SystemExit("the bare aiohttp app did not start")
                time.sleep(0.05)
            used = cpu_seconds(bare.pid)
            result = asyncio.run(load(bare_sock, 50, args.requests, True, seconds=args.load_seconds))
            result["cpu_ms"] = 1000 * (cpu_seconds(bare.pid) - used) / result.pop("requests")
            out.update({f"bare_{k}_50": v for k, v in result.items()})
        finally:
            bare.kill()
            bare.wait()
        # 50 pollers at 4 requests/s each (faster than the TUI's 5 s or a notebook's wait loop): latency
        # when the daemon is not saturated by construction, as back-to-back clients make it
        result = asyncio.run(load(str(socket_path()), 50, 50 * int(4 * args.poll_seconds), True, 0.25))
        out.update({f"poll_{k}_50": v for k, v in result.items()})
        out["rss_mib"] = rss_mib(daemon.pid)
        print(json.dumps(out))
    finally:
        try:
            client.shutdown()
            daemon.wait(30)
        except Exception:  # noqa: BLE001 - make sure it goes
            daemon.kill()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
