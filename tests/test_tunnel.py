"""The daemon's localhost tunnels, against real loopback servers (no mocks)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
from typing import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from reccd.providers import Endpoint
from reccd.tunnel import DashboardTunnel, Tunnel

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Upstream:
    """A loopback TCP server whose port a resolver can follow across restarts."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.writers: set[asyncio.StreamWriter] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.writers.discard(writer)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self.writers):
                writer.transport.abort()
            await self.server.wait_closed()
            self.server = None

    async def resolve(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port)


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(256 * 1024):
        writer.write(data)
        await writer.drain()


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[Upstream]:
    upstream = Upstream(handler)
    await upstream.start()
    try:
        yield upstream
    finally:
        await upstream.stop()


@contextlib.asynccontextmanager
async def tunnel_to(resolve: Callable[[], Awaitable[Endpoint]], cls: type[Tunnel] = Tunnel, **kw) -> AsyncIterator[Tunnel]:
    tunnel = cls(resolve, backoff_base=0.02, backoff_cap=0.1, **kw)
    await tunnel.start()
    try:
        yield tunnel
    finally:
        await tunnel.close()


@contextlib.asynccontextmanager
async def connect(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1024 * 1024)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_to_end(reader: asyncio.StreamReader, timeout: float = 1.0) -> bytes:
    """Everything until EOF (a reset counts as EOF): fails if EOF does not come in time."""
    chunks = []
    async with asyncio.timeout(timeout):
        try:
            while data := await reader.read(65536):
                chunks.append(data)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


async def eventually(condition: Callable[[], bool], timeout: float = 1.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def closed_port() -> int:
    """A port nothing listens on (bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- Tunnel ---------------------------------------------------------------------------


async def test_round_trip_and_info() -> None:
    async with serving(echo) as up, tunnel_to(up.resolve) as tunnel:
        assert tunnel.state == "connecting"
        async with connect(tunnel.port) as (reader, writer):
            for message in (b"hello", b"x", b"\x00\xff" * 1000):
                writer.write(message)
                assert await asyncio.wait_for(reader.readexactly(len(message)), 2) == message
            assert tunnel.state == "up" and tunnel.retries == 0 and tunnel.connections == 1
            info = json.loads(json.dumps(tunnel.info()))
            assert info["port"] == tunnel.port and info["upstream"] == f"127.0.0.1:{up.port}"
            assert info["state"] == "up" and info["connections"] == 1 and info["bytes_up"] > 2000


async def test_large_transfer_echo_intact() -> None:
    payload = os.urandom(64 * 1024 * 1024)
    async with serving(echo) as up, tunnel_to(up.resolve) as tunnel:
        async with connect(tunnel.port) as (reader, writer):
            async def send() -> None:
                view = memoryview(payload)
                for i in range(0, len(view), 1024 * 1024):
                    writer.write(view[i:i + 1024 * 1024])
                    await writer.drain()

            sender = asyncio.create_task(send())
            digest, got = hashlib.sha256(), 0
            async with asyncio.timeout(60):
                while got < len(payload):
                    data = await reader.read(1024 * 1024)
                    assert data, "tunnel closed mid-transfer"
                    digest.update(data)
                    got += len(data)
            await sender
            assert got == len(payload)
            assert digest.digest() == hashlib.sha256(payload).digest()


async def test_upstream_sends_then_closes_all_bytes_arrive_before_eof() -> None:
    payload = os.urandom(64 * 1024 * 1024)

    async def blast(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(payload)
        await writer.drain()

    async with serving(blast) as up, tunnel_to(up.resolve) as tunnel:
        async with connect(tunnel.port) as (reader, _):
            data = await read_to_end(reader, timeout=60)
    assert hashlib.sha256(data).digest() == hashlib.sha256(payload).digest()


async def test_upstream_down_closes_local_and_listener_survives() -> None:
    port = closed_port()

    async def resolve() -> Endpoint:
        return Endpoint("127.0.0.1", port)

    async with tunnel_to(resolve) as tunnel:
        for attempt in (1, 2, 3):
            async with connect(tunnel.port) as (reader, writer):
                writer.write(b"anyone?")
                assert await read_to_end(reader, timeout=1) == b""
            assert tunnel.retries == attempt
            assert tunnel.state == "down" and tunnel.state != "up"
            assert tunnel.last_error and f"127.0.0.1:{port}" in tunnel.last_error
        assert tunnel.info()["retries"] == 3


async def test_resolver_failure_is_an_upstream_failure() -> None:
    async def resolve() -> Endpoint:
        raise LookupError("pod not scheduled")

    async with tunnel_to(resolve) as tunnel, connect(tunnel.port) as (reader, _):
        assert await read_to_end(reader) == b""
        assert tunnel.retries == 1 and "pod not scheduled" in (tunnel.last_error or "")


async def test_upstream_moves_to_new_port_and_local_port_stays() -> None:
    first = Upstream(echo)
    await first.start()
    current = {"endpoint": Endpoint("127.0.0.1", first.port)}

    async def resolve() -> Endpoint:
        return current["endpoint"]

    async with tunnel_to(resolve) as tunnel:
        port = tunnel.port
        async with connect(port) as (reader, writer):
            writer.write(b"one")
            assert await reader.readexactly(3) == b"one"
        old_port = first.port
        await first.stop()
        async with connect(port) as (reader, _):
            assert await read_to_end(reader) == b""
        assert tunnel.state == "down" and tunnel.retries == 1
        async with serving(echo) as second:
            assert second.port != old_port
            current["endpoint"] = Endpoint("127.0.0.1", second.port)
            async with connect(port) as (reader, writer):
                writer.write(b"two")
                assert await asyncio.wait_for(reader.readexactly(3), 2) == b"two"
            assert tunnel.port == port and tunnel.state == "up" and tunnel.retries == 0
            assert tunnel.info()["upstream"] == f"127.0.0.1:{second.port}"


async def test_upstream_close_reaches_local_within_a_second() -> None:
    async def close_after_one_message(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(4)
        writer.write(b"bye")  # then the handler returns and the server closes the connection

    async with serving(close_after_one_message) as up, tunnel_to(up.resolve) as tunnel:
        async with connect(tunnel.port) as (reader, writer):
            writer.write(b"ping")
            assert await read_to_end(reader, timeout=1) == b"bye"
        await eventually(lambda: tunnel.connections == 0)


async def test_local_close_reaches_upstream_promptly() -> None:
    seen = asyncio.get_running_loop().create_future()

    async def wait_for_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.set_result(await reader.read())

    async with serving(wait_for_eof) as up, tunnel_to(up.resolve) as tunnel:
        async with connect(tunnel.port) as (_, writer):
            writer.write(b"data")
            await writer.drain()
            writer.write_eof()  # a half-close from the client ends the whole relayed connection
            assert await asyncio.wait_for(seen, 1) == b"data"


async def test_close_drops_connections_and_frees_the_port() -> None:
    async with serving(echo) as up:
        tunnel = Tunnel(up.resolve)
        port = await tunnel.start()
        async with connect(port) as (reader, writer):
            writer.write(b"hi")
            assert await reader.readexactly(2) == b"hi"
            await tunnel.close()
            assert tunnel.state == "closed" and tunnel.connections == 0
            assert await read_to_end(reader) == b""
        await tunnel.close()  # idempotent
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        await eventually(lambda: not up.writers)  # the upstream side was closed too
        with socket.socket() as s:  # the port can be bound again
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))


async def test_given_port_is_used() -> None:
    port = closed_port()
    async with serving(echo) as up, tunnel_to(up.resolve, port=port) as tunnel:
        assert tunnel.port == port
        async with connect(port) as (reader, writer):
            writer.write(b"ok")
            assert await reader.readexactly(2) == b"ok"


async def test_keepalive_and_nodelay_on_relayed_sockets() -> None:
    async with serving(echo) as up, tunnel_to(up.resolve) as tunnel:
        async with connect(tunnel.port) as (reader, writer):
            writer.write(b"?")
            await reader.readexactly(1)
            socks = tunnel.relayed_sockets()
            assert len(socks) == 2
            for sock in socks:
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                if hasattr(socket, "TCP_KEEPIDLE"):
                    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 20


# -- DashboardTunnel --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def dashboard_upstream() -> AsyncIterator[Endpoint]:
    async def status(request: web.Request) -> web.Response:
        return web.Response(text=f"dashboard at {request.path_qs} cookie={request.headers.get('Cookie', '')!s}")

    app = web.Application()
    app.router.add_get("/{tail:.*}", status)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield Endpoint("127.0.0.1", runner.addresses[0][1])
    finally:
        await runner.cleanup()


async def http(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send a raw request head; return the status, headers and body the server sent before closing."""
    async with connect(port) as (reader, writer):
        writer.write(raw)
        data = await read_to_end(reader, timeout=5)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def get(target: str, *headers: str) -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@contextlib.asynccontextmanager
async def dashboard(**kw) -> AsyncIterator[DashboardTunnel]:
    async with dashboard_upstream() as endpoint:
        async def resolve() -> Endpoint:
            return endpoint

        async with tunnel_to(resolve, DashboardTunnel, **kw) as tunnel:
            assert isinstance(tunnel, DashboardTunnel)
            yield tunnel


async def test_dashboard_link_and_token() -> None:
    async with dashboard(token="fixed-token") as tunnel:
        assert tunnel.dashboard_link() == f"http://127.0.0.1:{tunnel.port}/status?token=fixed-token"
        assert tunnel.dashboard_link("/workers").endswith("/workers?token=fixed-token")
    async with dashboard() as tunnel:
        assert len(tunnel.token) >= 32


async def test_dashboard_without_token_or_with_wrong_token_is_forbidden() -> None:
    async with dashboard() as tunnel:
        for request in (get("/status"), get("/status?token=wrong"), get("/status?token="),
                        get("/status", f"Cookie: {tunnel.cookie_name}=wrong"),
                        get("/status", f"Cookie: recc_dash_1={tunnel.token}")):
            status, _, body = await http(tunnel.port, request)
            assert status == 403 and b"token" in body
        assert tunnel.retries == 0 and tunnel.state == "connecting"  # nothing reached the upstream


async def test_dashboard_token_in_query_redirects_with_cookie() -> None:
    async with dashboard() as tunnel:
        status, headers, _ = await http(tunnel.port, get(f"/status?token={tunnel.token}"))
        assert status == 302 and headers["location"] == "/status"
        assert headers["set-cookie"] == (
            f"recc_dash_{tunnel.port}={tunnel.token}; HttpOnly; SameSite=Lax; Path=/")
        status, headers, _ = await http(tunnel.port, get(f"/graph?a=1&token={tunnel.token}&b=%20x"))
        assert status == 302 and headers["location"] == "/graph?a=1&b=%20x"
        status, headers, _ = await http(tunnel.port, get(f"//evil.example/x?token={tunnel.token}"))
        assert status == 302 and headers["location"] == "/evil.example/x"


async def test_dashboard_cookie_is_proxied() -> None:
    async with dashboard() as tunnel:
        cookie = f"Cookie: other=1; {tunnel.cookie_name}={tunnel.token}"
        status, _, body = await http(tunnel.port, get("/status?x=1", cookie))
        assert status == 200
        assert body.startswith(b"dashboard at /status?x=1 cookie=other=1")
        assert tunnel.state == "up"


async def test_dashboard_keeps_piping_after_the_first_request() -> None:
    async with dashboard() as tunnel:
        cookie = f"Cookie: {tunnel.cookie_name}={tunnel.token}"
        first = get("/a", cookie).replace(b"Connection: close", b"Connection: keep-alive")
        async with connect(tunnel.port) as (reader, writer):
            writer.write(first + get("/b"))  # pipelined; only the first head is judged
            data = await read_to_end(reader, timeout=5)
        assert data.count(b"HTTP/1.1 200") == 2 and b"dashboard at /b" in data


async def test_dashboard_garbage_and_silence_are_rejected_and_listener_stays_up() -> None:
    async with dashboard(head_timeout=0.3, max_head=1024) as tunnel:
        for garbage in (b"\x16\x03\x01\x02\x00garbage", b"NOT HTTP AT ALL\r\n\r\n", b"GET /x HTTP/1.1\r\nno colon\r\n\r\n"):
            status, _, _ = await http(tunnel.port, garbage)
            assert status == 400
        status, _, _ = await http(tunnel.port, b"")
        assert status == 408
        status, _, _ = await http(tunnel.port, get("/status", "X-Filler: " + "a" * 2000))
        assert status == 431
        status, _, body = await http(tunnel.port, get("/status", f"Cookie: {tunnel.cookie_name}={tunnel.token}"))
        assert status == 200 and body.startswith(b"dashboard at /status")
        await eventually(lambda: tunnel.connections == 0)


# -- upstream loss: probing, backoff, state ---------------------------------------------


async def test_upstream_gone_shows_down_without_client_traffic_and_up_again_when_back() -> None:
    first = Upstream(echo)
    await first.start()
    current = {"port": first.port}
    resolved: list[float] = []

    async def resolve() -> Endpoint:
        resolved.append(asyncio.get_running_loop().time())
        return Endpoint("127.0.0.1", current["port"])

    async with tunnel_to(resolve) as tunnel:
        async with connect(tunnel.port) as (reader, writer):
            writer.write(b"hi")
            assert await reader.readexactly(2) == b"hi"
            await first.stop()  # the upstream goes away under an open connection
            assert await read_to_end(reader, timeout=1) == b""  # closed at once
        # Nobody connects any more: the tunnel's own probe finds the upstream gone.
        await eventually(lambda: tunnel.state == "down", timeout=2)
        assert "connection lost" in (tunnel.last_error or "") or f"127.0.0.1:{current['port']}" in tunnel.last_error
        await eventually(lambda: tunnel.retries >= 4, timeout=3)
        assert tunnel.state == "down" and tunnel.info()["state"] == "down"
        # Re-resolved after a jittered exponential backoff: gaps grow, and are not all alike.
        gaps = [b - a for a, b in zip(resolved[1:], resolved[2:])]
        assert all(gap >= 0.02 * 0.5 * 0.9 for gap in gaps)
        assert len({round(gap, 4) for gap in gaps}) > 1
        async with serving(echo) as second:  # back, at another port: found without a client
            current["port"] = second.port
            await eventually(lambda: tunnel.state == "up", timeout=2)
            assert tunnel.retries == 0 and tunnel.info()["upstream"] == f"127.0.0.1:{second.port}"


async def test_upstream_closing_a_link_cleanly_keeps_the_tunnel_up() -> None:
    async def one_reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(2))  # then the server closes, as HTTP servers do

    async with serving(one_reply) as up, tunnel_to(up.resolve) as tunnel:
        for _ in range(3):
            async with connect(tunnel.port) as (reader, writer):
                writer.write(b"ok")
                assert await read_to_end(reader) == b"ok"
        await asyncio.sleep(0.3)  # the probe after each close found the upstream alive
        assert tunnel.state == "up" and tunnel.retries == 0 and tunnel.last_error is None
