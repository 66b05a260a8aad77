"""Tunnel resilience with real TLS Dask processes: a cut link, a moved upstream, a restarted scheduler.

The test owns every piece: a TLS scheduler (and a worker) on a fixed port, a TCP relay between the
tunnel and the scheduler that it can cut and move, and the tunnel itself. The Dask client only ever
sees the tunnel's port, which must never change.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
from distributed import Client

from reccd.providers import Endpoint
from reccd.tls import client_security, make_cluster_tls, write_tls_files
from reccd.tunnel import Tunnel

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def inc(x: int) -> int:
    return x + 1


class CutRelay:
    """A TCP relay the test controls: :meth:`cut` drops every link and stops listening."""

    def __init__(self, target: int) -> None:
        self.target, self.port = target, 0
        self.server: asyncio.AbstractServer | None = None
        self.links: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self.links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(1 << 16):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.links -= {writer, up_writer}

    async def cut(self) -> None:
        """The link breaks: every relayed connection is reset and nothing new gets through."""
        if self.server is not None:
            self.server.close()
            for writer in list(self.links):
                writer.transport.abort()
            await self.server.wait_closed()
            self.server = None

    async def resolve(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port)


class Processes:
    """TLS scheduler and worker processes on a fixed scheduler port, killed at the end."""

    def __init__(self, folder: Path) -> None:
        self.tls = make_cluster_tls("resilience")
        self.files = write_tls_files(self.tls, folder)
        self.port = free_port()
        self.procs: list[subprocess.Popen[bytes]] = []

    def _spawn(self, *argv: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        """A scheduler on ``self.port`` (the same port every time) and one worker."""
        f = self.files
        self._spawn("distributed.cli.dask_scheduler", "--protocol", "tls", "--host", "127.0.0.1",
                    "--port", str(self.port), "--no-dashboard", "--tls-ca-file", str(f["ca"]),
                    "--tls-cert", str(f["scheduler_cert"]), "--tls-key", str(f["scheduler_key"]))
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                break
            assert time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.1)
        self._spawn("distributed.cli.dask_worker", f"tls://127.0.0.1:{self.port}", "--no-nanny", "--nthreads", "1",
                    "--host", "127.0.0.1", "--no-dashboard", "--death-timeout", "60", "--tls-ca-file", str(f["ca"]),
                    "--tls-cert", str(f["worker_cert"]), "--tls-key", str(f["worker_key"]))

    def kill(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        self.procs.clear()


async def eventually(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def closed_within(port: int, cut: Callable[[], object], seconds: float) -> float:
    """Open a raw connection through the tunnel, run ``cut``, and return how long until it is closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await asyncio.sleep(0.2)  # relayed all the way to the scheduler by now
        start = time.monotonic()
        result = cut()
        if asyncio.iscoroutine(result):
            await result
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(reader.read(), seconds) == b""
        return time.monotonic() - start
    finally:
        writer.close()


async def test_cut_link_moved_upstream_and_restarted_scheduler_keep_the_client_working(tmp_path: Path) -> None:
    cluster = Processes(tmp_path / "tls")
    cluster.start()
    relay = CutRelay(cluster.port)
    await relay.start()
    tunnel = Tunnel(relay.resolve, backoff_base=0.05, backoff_cap=0.5)
    port = await tunnel.start()
    client = None
    try:
        client = await Client(f"tls://127.0.0.1:{port}", security=client_security(cluster.tls), asynchronous=True,
                              timeout="60s", direct_to_workers=False)
        assert await client.submit(inc, 1) == 2
        assert tunnel.state == "up" and tunnel.retries == 0

        # 1. The link is cut: the local connection closes at once, and the tunnel shows down.
        first_port = relay.port
        assert await closed_within(port, relay.cut, 1.0) < 1.0
        await eventually(lambda: tunnel.state == "down", 5, "the tunnel to show down")
        assert tunnel.retries >= 1 and f"127.0.0.1:{first_port}" in (tunnel.last_error or "")
        assert tunnel.info()["state"] == "down"

        # 2. The upstream comes back at another address: re-resolved, and the client carries on.
        assert await relay.start() != first_port
        assert await asyncio.wait_for(client.submit(inc, 2), 60) == 3
        assert tunnel.state == "up" and tunnel.retries == 0 and tunnel.port == port
        assert tunnel.info()["upstream"] == f"127.0.0.1:{relay.port}"

        # 3. The scheduler restarts on the same port: the client's next computation succeeds.
        assert await closed_within(port, cluster.kill, 2.0) < 2.0
        await asyncio.to_thread(cluster.start)
        await asyncio.wait_for(client.wait_for_workers(1), 60)
        assert await asyncio.wait_for(client.submit(inc, 10), 60) == 11
        assert tunnel.port == port and tunnel.state == "up"

        # 4. Gone for good: down, and it stays down (never up) while the tunnel keeps probing.
        await asyncio.to_thread(cluster.kill)
        await relay.cut()
        await client.close()
        client = None
        await eventually(lambda: tunnel.state == "down", 5, "the tunnel to show down")
        retries = tunnel.retries
        for _ in range(50):
            assert tunnel.state == "down"
            await asyncio.sleep(0.04)
        assert tunnel.retries > retries  # still re-resolving in the background, with backoff
        assert tunnel.port == port
    finally:
        if client is not None:
            await client.close()
        await tunnel.close()
        await relay.cut()
        cluster.kill()


def recc_ls_json(daemon, *args: str) -> list[dict]:
    import json

    out = subprocess.run([sys.executable, "-m", "recc.cli", "ls", "--json", *args], env=daemon.env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return json.loads(out)


def listener_pid(port: int) -> int:
    import psutil

    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return conn.pid
    raise AssertionError(f"nothing listens on {port}")


def test_recc_ls_and_the_library_show_a_dead_tunnel_as_down(daemon) -> None:
    import os
    import signal

    from recc import RECCCluster, RSHClient

    lib = daemon.client()
    with RECCCluster("local", n_workers=1, worker_memory="1GiB", quiet=True) as cluster:
        with RSHClient(cluster) as client:
            assert client.submit(sum, [40, 2]).result() == 42
        [row] = [r for r in recc_ls_json(daemon) if r["name"] == cluster.name]
        tunnel = row["tunnel"]
        assert tunnel["state"] == "up" and tunnel["retries"] == 0 and tunnel["last_error"] is None
        assert cluster.scheduler_address == f"tls://127.0.0.1:{tunnel['port']}"
        upstream = int(tunnel["upstream"].rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", tunnel["port"]), timeout=5) as link:
            time.sleep(0.3)  # relayed to the scheduler, which waits for a TLS hello
            os.kill(listener_pid(upstream), signal.SIGKILL)  # the scheduler dies under an open connection
            start = time.monotonic()
            with contextlib.suppress(ConnectionResetError):
                assert link.recv(1) == b""
            assert time.monotonic() - start < 1.0  # the local connection closed at once
        seen: list[dict] = []
        deadline = time.monotonic() + 20
        while not (seen and seen[-1]["state"] == "down"):
            assert time.monotonic() < deadline, f"the library never showed the tunnel down: {seen[-3:]}"
            seen.append(lib.get_cluster(cluster.name)["tunnel"])
            time.sleep(0.02)
        # The daemon may already have removed the cluster (its scheduler died), leaving no tunnel at all;
        # while the tunnel is still there, it says why it is down.
        for snapshot in (s for s in seen if s["state"] == "down" and "port" in s):
            assert snapshot["retries"] >= 1 and f"127.0.0.1:{upstream}" in snapshot["last_error"], snapshot
        for _ in range(10):  # and it never goes back to up while the cluster is listed
            info = lib.get_cluster(cluster.name)["tunnel"]
            assert info["state"] != "up", info
            time.sleep(0.05)
    # The daemon removes a cluster whose scheduler died; `recc ls --json --all` still shows no live tunnel.
    rows = [r for r in recc_ls_json(daemon, "--all") if r["name"] == cluster.name]
    assert rows and all(r["tunnel"]["state"] != "up" for r in rows)
