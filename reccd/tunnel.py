"""Localhost tunnels from the daemon to a cluster's scheduler and dashboard.

A :class:`Tunnel` is a 127.0.0.1 listener whose every accepted connection is relayed, byte for
byte, to the cluster's upstream endpoint. TLS is end to end between the Dask client and the
scheduler, so the relay only ever moves ciphertext and never parses the stream. The upstream is
looked up again for every new connection, so a rescheduled scheduler pod or a new load-balancer
address is picked up while the local port (and every link handed out) stays the same.

:class:`DashboardTunnel` is the same relay for the plain-HTTP dashboard, with a gate in front:
the first request head of each connection must carry the dashboard token (``?token=`` once,
then a per-port cookie), because anyone on the machine can connect to a localhost port.

Everything runs on the daemon's single asyncio event loop; the relay uses protocols and
transports (not streams) to keep per-chunk overhead low, with write-through flow control.
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

Resolver = Callable[[], Awaitable[Endpoint | None]]

READ_SIZE = 256 * 1024  # one recv_into per loop wake-up moves up to this much
HEAD_READ = 16 * 1024  # before linking (dashboard gate): idle or hostile connections stay cheap
WRITE_HIGH = 1024 * 1024  # pause the source once this much waits for the destination
# Keepalive below every load-balancer idle timeout we know of (AWS NLB: 350 s), and a dead
# peer is noticed within ~40 s even when the application is silent.
KEEPALIVE = (("TCP_KEEPIDLE", 20), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 4))
CLOSE_GRACE = 10.0  # a peer that will not take the last bytes is aborted after this


def _tune(transport: asyncio.BaseTransport) -> None:
    """Keepalive and no-Nagle on one relayed socket (each option only where the OS has it)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in KEEPALIVE:
        # macOS spells the idle time TCP_KEEPALIVE.
        opt = getattr(socket, name, None) or (getattr(socket, "TCP_KEEPALIVE", None) if name == "TCP_KEEPIDLE" else None)
        if opt is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, opt, value)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__  # TimeoutError and friends have no message


class _Side(asyncio.BufferedProtocol):
    """One socket of a relayed connection: whatever it reads is written to its peer."""

    def __init__(self, conn: _Conn, upstream: bool) -> None:
        self.conn = conn
        self.upstream = upstream
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None  # set once both sockets exist
        self.write_paused = False
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
        if len(self._buf) < (READ_SIZE if self.peer is not None else HEAD_READ):
            self._buf = memoryview(bytearray(READ_SIZE if self.peer is not None else HEAD_READ))
        return self._buf

    def buffer_updated(self, nbytes: int) -> None:
        # Copy: a transport may keep a reference to what it could not send yet, and the
        # receive buffer is reused on the next read.
        data = bytes(self._buf[:nbytes])
        self.nbytes += nbytes
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self.conn.tunnel._early(self.conn, data)

    def eof_received(self) -> bool:
        # No half-close: Dask's comms never use it, and a half-open pair would hide a dead peer.
        self.conn.finish(self, None)
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.finish(self, exc)
        if not self.lost.done():
            self.lost.set_result(None)
        self.conn.tunnel._forget(self.conn)

    def pause_writing(self) -> None:
        # Our outgoing buffer is full: stop reading from the socket that fills it.
        self.write_paused = True
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class _Conn:
    """One accepted local connection and, once connected, its upstream connection."""

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel
        self.local = _Side(self, upstream=False)
        self.remote: _Side | None = None
        self.pending = bytearray()  # bytes read from the local side before the upstream exists
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.gated = False  # DashboardTunnel: the head has been judged
        self.closed = False

    def made(self, side: _Side) -> None:
        if not side.upstream:
            self.tunnel._conns.add(self)
            self.tunnel.accepted += 1
            self.tunnel._accepted(self)
        elif self.closed:  # the local side went away while we were connecting
            assert side.transport is not None
            side.transport.abort()
        else:
            self.link(side)

    def link(self, remote: _Side) -> None:
        """Start relaying both ways; what the local side sent early goes first."""
        assert remote.transport is not None and self.local.transport is not None
        self.remote = remote
        if self.pending:
            remote.transport.write(bytes(self.pending))
            self.pending.clear()
        self.local.peer, remote.peer = remote, self.local
        if not remote.write_paused:
            self.local.transport.resume_reading()

    def finish(self, side: _Side, exc: Exception | None) -> None:
        """One side ended (EOF or error): end the other at once so the client notices."""
        if side is self.remote and exc is not None and not self.closed:
            self.tunnel.last_error = f"upstream connection lost: {_describe(exc)}"
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

    def abort(self) -> list[_Side]:
        """Drop both sides now (tunnel shutdown); returns the sides still to be reported lost."""
        self._stop()
        sides = [s for s in (self.local, self.remote) if s is not None and s.transport is not None]
        for side in sides:
            assert side.transport is not None
            side.transport.abort()
        return [s for s in sides if not s.lost.done()]


class Tunnel:
    """A 127.0.0.1 port relaying raw bytes to an upstream looked up for each connection.

    ``state`` is ``"down"`` before :meth:`start` and while the last upstream attempt failed,
    ``"connecting"`` while listening with the upstream not (re)confirmed, ``"up"`` after a
    successful upstream connect, ``"closed"`` after :meth:`close`. ``retries`` counts
    consecutive failed attempts; each one delays the next by a jittered exponential backoff.
    """

    kind = "scheduler"

    def __init__(self, resolve: Resolver, port: int = 0, *, host: str = "127.0.0.1",
                 connect_timeout: float = 10.0, backoff_base: float = 0.1, backoff_cap: float = 5.0) -> None:
        self._resolve = resolve
        self._want_port = port
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.state = "down"
        self.state_since = time.time()
        self.last_error: str | None = None
        self.retries = 0
        self.accepted = 0
        self.bytes_up = 0  # local -> upstream, of closed connections (open ones added in info())
        self.bytes_down = 0
        self.upstream: Endpoint | None = None
        self._not_before = 0.0  # loop time before which no upstream attempt is made
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[_Conn] = set()

    # -- public ---------------------------------------------------------------------

    async def start(self) -> int:
        """Bind the local port (a given one, or any free one for port 0) and return it."""
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
        tasks = [c.task for c in self._conns if c.task is not None]
        sides = [side for conn in list(self._conns) for side in conn.abort()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if sides:  # wait until the sockets are really closed (connection_lost ran)
            await asyncio.wait([s.lost for s in sides], timeout=5)
        if self._server is not None:
            await self._server.wait_closed()

    @property
    def connections(self) -> int:
        """Local connections currently open."""
        return sum(1 for c in self._conns if not c.local.lost.done())

    def info(self) -> dict[str, Any]:
        """JSON-able state for ``recc ls --json``, the TUI and the library."""
        up = self.bytes_up + sum(c.local.nbytes for c in self._conns)
        down = self.bytes_down + sum(c.remote.nbytes for c in self._conns if c.remote is not None)
        return {
            "kind": self.kind, "local": f"{self.host}:{self.port}", "port": self.port,
            "state": self.state, "state_since": self.state_since, "last_error": self.last_error,
            "retries": self.retries, "connections": self.connections, "accepted": self.accepted,
            "upstream": f"{self.upstream.host}:{self.upstream.port}" if self.upstream else None,
            "bytes_up": up, "bytes_down": down,
        }

    # -- relay ----------------------------------------------------------------------

    def _set_state(self, state: str) -> None:
        if self.state != state and self.state != "closed":
            self.state, self.state_since = state, time.time()
            log.info("%s tunnel on port %s is %s%s", self.kind, self.port, state,
                     f" ({self.last_error})" if state == "down" else "")

    def _accepted(self, conn: _Conn) -> None:
        """A local connection arrived: hold its bytes until the upstream is there."""
        assert conn.local.transport is not None
        conn.local.transport.pause_reading()
        conn.task = asyncio.get_running_loop().create_task(self._connect(conn))

    def _early(self, conn: _Conn, data: bytes) -> None:
        conn.pending += data

    def _forget(self, conn: _Conn) -> None:
        if conn.local.lost.done() and (conn.remote is None or conn.remote.lost.done()) and conn in self._conns:
            self._conns.discard(conn)
            self.bytes_up += conn.local.nbytes
            self.bytes_down += conn.remote.nbytes if conn.remote is not None else 0

    def _backoff(self) -> float:
        """Jittered exponential delay after ``retries`` consecutive failures."""
        return min(self.backoff_cap, self.backoff_base * 2 ** (self.retries - 1)) * random.uniform(0.5, 1.0)

    async def _connect(self, conn: _Conn) -> None:
        """Connect this local connection's upstream; on failure close only this connection."""
        loop = asyncio.get_running_loop()
        where = "resolving the upstream"
        try:
            delay = self._not_before - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.state != "up":
                self._set_state("connecting")
            endpoint = await asyncio.wait_for(self._resolve(), self.connect_timeout)
            if endpoint is None:
                raise ConnectionError("no upstream endpoint (yet)")
            self.upstream, where = endpoint, f"{endpoint.host}:{endpoint.port}"
            await asyncio.wait_for(
                loop.create_connection(lambda: _Side(conn, upstream=True), endpoint.host, endpoint.port),
                self.connect_timeout)
        except Exception as exc:  # noqa: BLE001 - any failure only ends this one connection
            self.retries += 1
            self.last_error = f"{where}: {_describe(exc)}"
            self._not_before = loop.time() + self._backoff()
            self._set_state("down")
            log.debug("tunnel %s: upstream attempt %d failed: %s", self.port, self.retries, self.last_error)
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


class DashboardTunnel(Tunnel):
    """A :class:`Tunnel` for the dashboard that relays only requests carrying the token.

    ``?token=<token>`` in the request target is answered with a redirect to the same target
    without the token and a cookie ``recc_dash_<port>`` (cookies are not port-scoped, hence the
    port in the name); a request with that cookie is relayed, and from then on the connection
    is piped both ways. Anything else gets 403 (no/wrong token), 400 (not HTTP), 408 (head too
    slow) or 431 (head too large) and is closed.
    """

    kind = "dashboard"

    def __init__(self, resolve: Resolver, port: int = 0, *, token: str | None = None,
                 max_head: int = 16 * 1024, head_timeout: float = 10.0, **kwargs: Any) -> None:
        super().__init__(resolve, port, **kwargs)
        self.token = token or secrets.token_urlsafe(24)
        self.max_head = max_head
        self.head_timeout = head_timeout

    @property
    def cookie_name(self) -> str:
        return f"recc_dash_{self.port}"

    def dashboard_link(self, path: str = "/status") -> str:
        """The link to hand to a person: it logs their browser in once."""
        return f"http://127.0.0.1:{self.port}{path}?token={self.token}"

    def _valid(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode("utf-8", "replace"), self.token.encode())

    def _accepted(self, conn: _Conn) -> None:
        # Unlike the plain tunnel, read at once: the head decides whether to connect at all.
        conn.timer = asyncio.get_running_loop().call_later(
            self.head_timeout, self._reply, conn, _response("408 Request Timeout", body="request head too slow\n"))

    def _reply(self, conn: _Conn, response: bytes) -> None:
        conn.gated = True
        if conn.timer is not None:
            conn.timer.cancel()
        transport = conn.local.transport
        if transport is not None and not transport.is_closing():
            transport.write(response)
            transport.close()

    def _early(self, conn: _Conn, data: bytes) -> None:
        conn.pending += data
        if conn.gated:  # judged already: keep what arrives until the upstream is linked
            return
        head = conn.pending
        end = _HEAD_END.search(head)
        size = end.end() if end else len(head)
        bad = _response("400 Bad Request", body="not an HTTP request\n")
        if _CONTROL.search(head, 0, min(size, self.max_head)):
            return self._reply(conn, bad)
        if size > self.max_head:
            return self._reply(conn, _response("431 Request Header Fields Too Large", body="request head too large\n"))
        first = head.split(b"\n", 1)
        if len(first) > 1 and not _REQUEST_LINE.fullmatch(first[0].rstrip(b"\r").decode("latin-1")):
            return self._reply(conn, bad)  # say so as soon as the request line is wrong
        if end is None:
            return
        verdict, location = self._judge(bytes(head[:end.start()]).decode("latin-1"))
        if verdict == "relay":
            conn.gated = True
            assert conn.timer is not None and conn.local.transport is not None
            conn.timer.cancel()
            conn.local.transport.pause_reading()
            conn.task = asyncio.get_running_loop().create_task(self._connect(conn))
        elif verdict == "redirect":
            cookie = f"Set-Cookie: {self.cookie_name}={self.token}; HttpOnly; SameSite=Strict; Path=/"
            self._reply(conn, _response("302 Found", (f"Location: {location}", cookie, "Referrer-Policy: no-referrer")))
        elif verdict == "forbidden":
            self._reply(conn, _response(
                "403 Forbidden", body="forbidden: open the dashboard with the link RECC gives (it carries a token)\n"))
        else:
            self._reply(conn, bad)

    def _judge(self, head: str) -> tuple[str, str | None]:
        """Decide on one request head: ("relay"|"redirect"|"forbidden"|"bad", Location)."""
        lines = re.split(r"\r?\n", head)
        match = _REQUEST_LINE.fullmatch(lines[0])
        if match is None or not match.group(1).startswith("/"):
            return "bad", None
        cookies: list[str] = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                return "bad", None
            if name.lower() == "cookie":
                cookies.extend(value.split(";"))
        path, _, query = match.group(1).partition("?")
        params = query.split("&") if query else []
        tokens = [unquote_plus(v) for k, _, v in (p.partition("=") for p in params) if unquote_plus(k) == "token"]
        if tokens:
            if not any(self._valid(t) for t in tokens):
                return "forbidden", None
            kept = [p for p in params if unquote_plus(p.partition("=")[0]) != "token"]
            # One leading slash only: "//host" or "/\host" in Location would leave this origin.
            clean = "/" + path.lstrip("/\\")
            return "redirect", clean + ("?" + "&".join(kept) if kept else "")
        for cookie in cookies:
            name, _, value = cookie.strip().partition("=")
            if name.strip() == self.cookie_name and self._valid(value.strip().strip('"')):
                return "relay", None
        return "forbidden", None
