"""Localhost tunnels from the daemon to a cluster's scheduler and dashboard.

:class:`Tunnel` relays a 127.0.0.1 port byte for byte to the cluster. TLS is end to end between
client and scheduler, so it moves ciphertext and never parses the stream. The upstream is
looked up for every new connection: a moved pod or load balancer is picked up while the local
port, and every address and link handed out, stays the same. :class:`DashboardTunnel` adds a
token gate, because anyone on the machine can connect to a localhost port. Both run on the
daemon's one event loop, with protocols and transports (not streams) to keep per-chunk cost low.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import random
import re
import secrets
import socket
import time
from typing import Any, Awaitable, Callable
from urllib.parse import unquote_plus

from reccd.providers import Endpoint

log = logging.getLogger("reccd.tunnel")

# A resolver returns an Endpoint (host, port) or any object with ``host``, ``port`` (for
# display) and ``async def open_connection() -> socket.socket`` that makes the upstream socket.
Resolver = Callable[[], Awaitable[Any]]

READ_SIZE = 256 * 1024  # one recv_into per loop wake-up moves up to this much
HEAD_READ = 16 * 1024  # before an upstream exists: idle or hostile connections stay cheap
WRITE_HIGH = 1024 * 1024  # pause the source once this much waits for the destination
# Probe well below load-balancer idle timeouts (AWS NLB: 350 s); a dead peer shows in ~40 s.
# (TCP_KEEPALIVE is macOS's name for the idle time; each option is set where the OS has it.)
KEEPALIVE = (("TCP_KEEPIDLE", 20), ("TCP_KEEPALIVE", 20), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 4))
CLOSE_GRACE = 10.0  # a peer that will not take the last bytes is aborted after this


def _tune(transport: asyncio.BaseTransport) -> None:
    """Keepalive and no-Nagle on one relayed socket (each option only where the OS has it)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    options = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1), (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    options += [(socket.IPPROTO_TCP, getattr(socket, n), v) for n, v in KEEPALIVE if hasattr(socket, n)]
    for level, option, value in options:
        with contextlib.suppress(OSError):
            sock.setsockopt(level, option, value)


class _Side(asyncio.BufferedProtocol):
    """One socket of a relayed connection: whatever it reads is written to its peer."""

    def __init__(self, conn: _Conn, upstream: bool) -> None:
        self.conn, self.upstream = conn, upstream
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None  # set once both sockets exist
        self.nbytes = 0
        self._buf = memoryview(bytearray(0))
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        _tune(transport)
        transport.set_write_buffer_limits(high=WRITE_HIGH)
        self.conn.made(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        size = READ_SIZE if self.peer is not None else HEAD_READ
        if len(self._buf) < size:
            self._buf = memoryview(bytearray(size))
        return self._buf

    def buffer_updated(self, nbytes: int) -> None:
        # Copy: a transport may keep what it could not send yet, and this buffer is reused.
        data = bytes(self._buf[:nbytes])
        self.nbytes += nbytes
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self.conn.tunnel._early(self.conn, data)

    def eof_received(self) -> bool:
        # No half-close: Dask's comms never use it, and a half-open pair would hide a dead peer.
        self.conn.finish(self, None)
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.finish(self, exc)
        self.lost.set_result(None)
        self.conn.tunnel._forget(self.conn)

    def pause_writing(self) -> None:  # our outgoing buffer is full: stop reading its source
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class _Conn:
    """One accepted local connection and, once connected, its upstream connection."""

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel
        self.local = _Side(self, upstream=False)
        self.remote: _Side | None = None
        self.pending = bytearray()  # read from the local side before the upstream exists
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False

    def made(self, side: _Side) -> None:
        assert side.transport is not None
        if not side.upstream:
            self.tunnel._conns.add(self)
            self.tunnel.accepted += 1
            self.tunnel._accepted(self)
        elif self.closed:  # the local side went away while we were connecting
            side.transport.abort()
        else:  # relay both ways; what the local side sent early goes first
            assert self.local.transport is not None
            self.remote = side
            if self.pending:
                side.transport.write(bytes(self.pending))
                self.pending.clear()
            self.local.peer, side.peer = side, self.local
            self.local.transport.resume_reading()

    def finish(self, side: _Side, exc: Exception | None) -> None:
        """One side ended (EOF or error): end the other at once so the client notices."""
        if side is self.remote and exc is not None and not self.closed:
            self.tunnel.last_error = f"upstream connection lost: {str(exc) or type(exc).__name__}"
        self._stop()
        other = self.remote if side is self.local else self.local
        transport = other.transport if other is not None else None
        if transport is None or transport.is_closing():
            return
        if exc is not None:
            transport.abort()
        else:
            transport.close()  # flushes what the peer already sent us, then closes
            if transport.get_write_buffer_size():
                asyncio.get_running_loop().call_later(CLOSE_GRACE, transport.abort)

    def _stop(self) -> None:
        self.closed = True
        for pending in (self.task, self.timer):
            if pending is not None:
                pending.cancel()

    def abort(self) -> None:
        """Drop both sides now (tunnel shutdown)."""
        self._stop()
        for side in (self.local, self.remote):
            if side is not None and side.transport is not None:
                side.transport.abort()


class Tunnel:
    """A 127.0.0.1 port relaying raw bytes to an upstream looked up for each connection.

    ``state``: ``"down"`` before :meth:`start` and after a failed upstream attempt,
    ``"connecting"`` while listening with the upstream not yet confirmed, ``"up"`` after a
    successful upstream connect, ``"closed"`` after :meth:`close`. ``retries`` counts
    consecutive failed attempts; each delays the next one by a jittered exponential backoff.
    """

    kind = "scheduler"

    def __init__(self, resolve: Resolver, port: int = 0, *, host: str = "127.0.0.1",
                 connect_timeout: float = 10.0, backoff_base: float = 0.1, backoff_cap: float = 5.0) -> None:
        self._resolve = resolve
        self.host, self.port, self._want_port = host, port, port
        self.connect_timeout, self.backoff_base, self.backoff_cap = connect_timeout, backoff_base, backoff_cap
        self.state, self.state_since = "down", time.time()
        self.last_error: str | None = None
        self.retries = 0
        self.accepted = 0
        self.bytes_up = self.bytes_down = 0  # of finished connections; info() adds open ones
        self.upstream: Endpoint | None = None  # the last endpoint resolved
        self._not_before = 0.0  # loop time before which no upstream attempt is made
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[_Conn] = set()

    async def start(self) -> int:
        """Bind the local port (the given one, or any free one for 0) and return it."""
        if self.state == "closed":
            raise RuntimeError("a closed tunnel cannot be started again")
        if self._server is None:
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(lambda: _Conn(self).local, self.host, self._want_port)
            self.port = self._server.sockets[0].getsockname()[1]
            self._set_state("connecting")
        return self.port

    async def close(self) -> None:
        """Stop listening and drop every relayed connection. Idempotent."""
        if self.state == "closed":
            return
        self._set_state("closed")
        if self._server is not None:
            self._server.close()
        conns = list(self._conns)
        lost = [s.lost for c in conns for s in (c.local, c.remote) if s is not None and not s.lost.done()]
        for conn in conns:
            conn.abort()
        await asyncio.gather(*(c.task for c in conns if c.task is not None), return_exceptions=True)
        if lost:  # return only once the sockets are really closed
            await asyncio.wait(lost, timeout=5)
        if self._server is not None:
            await self._server.wait_closed()

    @property
    def connections(self) -> int:
        """Local connections currently open."""
        return sum(1 for c in self._conns if not c.local.lost.done())

    def info(self) -> dict[str, Any]:
        """JSON-able state for ``recc ls --json``, the TUI and the library (no secrets)."""
        return {
            "kind": self.kind, "local": f"{self.host}:{self.port}", "port": self.port,
            "state": self.state, "state_since": self.state_since, "last_error": self.last_error,
            "retries": self.retries, "connections": self.connections, "accepted": self.accepted,
            "upstream": f"{self.upstream.host}:{self.upstream.port}" if self.upstream else None,
            "bytes_up": self.bytes_up + sum(c.local.nbytes for c in self._conns),
            "bytes_down": self.bytes_down + sum(c.remote.nbytes for c in self._conns if c.remote)}

    def _set_state(self, state: str) -> None:
        if self.state != state and self.state != "closed":
            self.state, self.state_since = state, time.time()
            # An outage flips down/connecting on every retry: tell the log once, not each time.
            quiet = state == "connecting" or (state == "down" and self.retries > 1)
            log.log(logging.DEBUG if quiet else logging.INFO, "%s tunnel on port %s is %s%s", self.kind,
                    self.port, state, f" ({self.last_error})" if state == "down" else "")

    def _accepted(self, conn: _Conn) -> None:
        """A local connection arrived: hold its bytes until the upstream is there."""
        assert conn.local.transport is not None
        conn.local.transport.pause_reading()
        conn.task = asyncio.get_running_loop().create_task(self._connect(conn))

    def _early(self, conn: _Conn, data: bytes) -> None:
        conn.pending += data

    def _forget(self, conn: _Conn) -> None:
        if conn in self._conns and conn.local.lost.done() and (conn.remote is None or conn.remote.lost.done()):
            self._conns.discard(conn)
            self.bytes_up += conn.local.nbytes
            self.bytes_down += conn.remote.nbytes if conn.remote is not None else 0

    async def _connect(self, conn: _Conn) -> None:
        """Connect this local connection's upstream; a failure closes only this connection."""
        loop = asyncio.get_running_loop()
        where = "resolving the upstream"
        try:
            if (delay := self._not_before - loop.time()) > 0:
                await asyncio.sleep(delay)
            if self.state != "up":
                self._set_state("connecting")
            endpoint = await asyncio.wait_for(self._resolve(), self.connect_timeout)
            if endpoint is None:
                raise ConnectionError("no upstream endpoint (yet)")
            self.upstream, where = endpoint, f"{endpoint.host}:{endpoint.port}"
            opener = getattr(endpoint, "open_connection", None)
            if opener is not None:  # e.g. a Kubernetes port-forward: the resolver makes the socket
                sock = await asyncio.wait_for(opener(), self.connect_timeout)
                try:
                    await loop.create_connection(lambda: _Side(conn, upstream=True), sock=sock)
                except BaseException:
                    sock.close()
                    raise
            else:
                await asyncio.wait_for(
                    loop.create_connection(lambda: _Side(conn, upstream=True), endpoint.host, endpoint.port),
                    self.connect_timeout)
        except Exception as exc:  # noqa: BLE001 - any failure ends this one connection only
            self.retries += 1
            self.last_error = f"{where}: {str(exc) or type(exc).__name__}"
            # Jittered so that many clients reconnecting at once do not retry in lockstep.
            backoff = min(self.backoff_cap, self.backoff_base * 2 ** (self.retries - 1)) * random.uniform(0.5, 1)
            self._not_before = loop.time() + backoff
            self._set_state("down")
            assert conn.local.transport is not None
            conn.local.transport.close()
            return
        self.retries, self._not_before = 0, 0.0
        self._set_state("up")


# -- the dashboard gate ----------------------------------------------------------------

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # never in an HTTP head
_REQUEST_LINE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ (\S+) HTTP/1\.[01]")


def _response(status: str, headers: tuple[str, ...] = (), body: str = "") -> bytes:
    lines = [f"HTTP/1.1 {status}", *headers, "Content-Type: text/plain; charset=utf-8",
             f"Content-Length: {len(body.encode())}", "Cache-Control: no-store", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body.encode()


_BAD = _response("400 Bad Request", body="not an HTTP request\n")
_FORBIDDEN = _response("403 Forbidden", body="forbidden: open the dashboard with the link RECC gives (it has a token)\n")
_SLOW = _response("408 Request Timeout", body="request head too slow\n")
_TOO_LARGE = _response("431 Request Header Fields Too Large", body="request head too large\n")


class DashboardTunnel(Tunnel):
    """A :class:`Tunnel` that relays a connection only if its first request head shows the token.

    ``?token=`` gets a redirect to the same target without it, setting the cookie
    ``recc_dash_<port>`` (browsers do not scope cookies by port); a head with that cookie is
    relayed, then the connection is piped both ways. Anything else gets 403 (no or wrong
    token), 400 (not HTTP), 408 (too slow) or 431 (too large) and is closed.
    """

    kind = "dashboard"

    def __init__(self, resolve: Resolver, port: int = 0, *, token: str | None = None,
                 max_head: int = 16 * 1024, head_timeout: float = 10.0, **kwargs: Any) -> None:
        super().__init__(resolve, port, **kwargs)
        self.token = token or secrets.token_urlsafe(24)
        self.max_head, self.head_timeout = max_head, head_timeout

    @property
    def cookie_name(self) -> str:
        return f"recc_dash_{self.port}"

    def dashboard_link(self, path: str = "/status") -> str:
        """The link to hand to a person: it logs their browser in once."""
        return f"http://127.0.0.1:{self.port}{path}?token={self.token}"

    def _valid(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode("utf-8", "replace"), self.token.encode())

    def _accepted(self, conn: _Conn) -> None:
        # Read at once (the head decides whether to connect at all), but not for ever.
        conn.timer = asyncio.get_running_loop().call_later(self.head_timeout, self._reply, conn, _SLOW)

    def _reply(self, conn: _Conn, response: bytes) -> None:
        transport = conn.local.transport
        if transport is not None and not transport.is_closing():
            transport.write(response)
            transport.close()

    def _early(self, conn: _Conn, data: bytes) -> None:
        # Only reached before a verdict: answering closes, relaying pauses reading until linked.
        conn.pending += data
        head = conn.pending
        end = _HEAD_END.search(head)
        size = end.end() if end else len(head)
        if _CONTROL.search(head, 0, min(size, self.max_head)):
            return self._reply(conn, _BAD)
        if size > self.max_head:
            return self._reply(conn, _TOO_LARGE)
        first = head.split(b"\n", 1)
        if len(first) > 1 and not _REQUEST_LINE.fullmatch(first[0].rstrip(b"\r").decode("latin-1")):
            return self._reply(conn, _BAD)  # say so as soon as the request line is wrong
        if end is None:
            return
        response = self._judge(bytes(head[:end.start()]).decode("latin-1"))
        if response is not None:
            return self._reply(conn, response)
        assert conn.timer is not None and conn.local.transport is not None
        conn.timer.cancel()
        conn.local.transport.pause_reading()
        conn.task = asyncio.get_running_loop().create_task(self._connect(conn))

    def _judge(self, head: str) -> bytes | None:
        """The answer to one request head, or None to relay it."""
        lines = re.split(r"\r?\n", head)
        match = _REQUEST_LINE.fullmatch(lines[0])
        if match is None or not match.group(1).startswith("/"):
            return _BAD
        cookies: list[str] = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                return _BAD
            if name.lower() == "cookie":
                cookies.extend(value.split(";"))
        path, _, query = match.group(1).partition("?")
        params = query.split("&") if query else []
        tokens = [unquote_plus(v) for k, _, v in (p.partition("=") for p in params) if unquote_plus(k) == "token"]
        if tokens:
            if not any(self._valid(t) for t in tokens):
                return _FORBIDDEN
            kept = [p for p in params if unquote_plus(p.partition("=")[0]) != "token"]
            # One leading slash only: "//host" or "/\host" in Location would leave this origin.
            location = "/" + path.lstrip("/\\") + ("?" + "&".join(kept) if kept else "")
            # Lax, not Strict: the link is usually clicked on another site (Jupyter on localhost:8888), and a
            # Strict cookie set by this redirect would not come back on the redirected request.
            cookie = f"Set-Cookie: {self.cookie_name}={self.token}; HttpOnly; SameSite=Lax; Path=/"
            return _response("302 Found", (f"Location: {location}", cookie, "Referrer-Policy: no-referrer"))
        for cookie in cookies:
            name, _, value = cookie.strip().partition("=")
            if name.strip() == self.cookie_name and self._valid(value.strip().strip('"')):
                return None
        return _FORBIDDEN
