"""Localhost tunnels from the daemon to a cluster's scheduler and dashboard.

:class:`Tunnel` relays a 127.0.0.1 port byte for byte to the cluster. TLS is end to end between
client and scheduler, so it moves ciphertext and never parses the stream. The upstream is
looked up for every new connection: a moved pod or load balancer is picked up while the local
port, and every address and link handed out, stays the same. :class:`DashboardTunnel` adds a
token gate, because anyone on the machine can connect to a localhost port. Connections to a
plain TCP upstream are relayed in the kernel by ``reccd.relay.SpliceRelay`` where Linux allows;
the rest by the asyncio relay (``reccd.relay.Conn``) on the daemon's event loop.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import random
import re
import secrets
import socket
import time
from typing import Any, Awaitable, Callable
from urllib.parse import unquote_plus

from reccd import relay
from reccd.providers import Endpoint
from reccd.relay import Conn as _Conn, tune as _tune

log = logging.getLogger("reccd.tunnel")

# A resolver returns an Endpoint (host, port) or any object with ``host``, ``port`` (for
# display) and ``async def open_connection() -> socket.socket`` that makes the upstream socket.
Resolver = Callable[[], Awaitable[Any]]


async def _dial(host: str, port: int) -> socket.socket:
    """A connected, non-blocking, tuned TCP socket to ``host:port`` (each resolved address in turn)."""
    loop = asyncio.get_running_loop()
    error: OSError | None = None
    for family, kind, proto, _, address in await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:  # cancelled (timeout or shutdown): do not leak the socket
            sock.close()
            raise
        _tune(sock)
        return sock
    raise error or OSError(f"no address for {host}")


class UpstreamUnavailable(Exception):
    """Resolving or connecting the upstream failed (the tunnel's ``last_error`` says how)."""


class Tunnel:
    """A 127.0.0.1 port relaying raw bytes to an upstream looked up for each connection.

    ``state``: ``"down"`` before :meth:`start` and after a failed upstream attempt (it stays down
    while retries fail), ``"connecting"`` while listening with the upstream not yet tried,
    ``"up"`` after a successful upstream connect, ``"closed"`` after :meth:`close`. ``retries`` counts
    consecutive failed attempts; each delays the next one by a jittered exponential backoff.

    When an upstream link ends first, the tunnel probes the upstream (re-resolving it, with the
    same jittered backoff) until it answers, so an upstream that is gone for good shows as down even when no
    client is trying. On Linux, connections to a plain TCP upstream are relayed by
    :class:`reccd.relay.SpliceRelay` (kernel-side, off the event loop); the rest by the asyncio relay.
    """

    kind = "scheduler"
    splice = True  # DashboardTunnel reads request heads itself, so it keeps the asyncio relay

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
        self.on_change: Callable[[], None] | None = None  # called when `state` changes (the daemon's listing)
        self._not_before = 0.0  # loop time before which no upstream attempt is made
        self._server: asyncio.AbstractServer | None = None
        self._listener: socket.socket | None = None  # the splice path accepts itself
        self._tasks: set[asyncio.Task[None]] = set()  # accept loop, upstream connects, the probe
        self._waiting: set[socket.socket] = set()  # accepted, upstream not connected yet
        self._conns: set[_Conn] = set()
        self._relays: set[relay.SpliceRelay] = set()
        self._probe: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Bind the local port (the given one, or any free one for 0) and return it."""
        if self.state == "closed":
            raise RuntimeError("a closed tunnel cannot be started again")
        if self._server is None and self._listener is None:
            loop = asyncio.get_running_loop()
            if self.splice and relay.available():
                self._listener = socket.create_server((self.host, self._want_port), backlog=128)
                self._listener.setblocking(False)
                self.port = self._listener.getsockname()[1]
                self._spawn(self._accept_loop())
            else:
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
        tasks = list(self._tasks) + [c.task for c in self._conns if c.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()
        for sock in list(self._waiting):
            sock.close()
        self._waiting.clear()
        conns, relays = list(self._conns), list(self._relays)
        lost = [s.lost for c in conns for s in (c.local, c.remote) if s is not None and not s.lost.done()]
        lost += [r.done for r in relays]
        for conn in conns:
            conn.abort()
        for pair in relays:
            pair.stop()
        if lost:  # return only once the sockets are really closed
            await asyncio.wait(lost, timeout=5)
        if self._server is not None:
            await self._server.wait_closed()

    @property
    def connections(self) -> int:
        """Local connections currently open."""
        return (sum(1 for c in self._conns if not c.local.lost.done()) + len(self._waiting)
                + sum(1 for r in self._relays if not r.done.done()))

    def info(self) -> dict[str, Any]:
        """JSON-able state for ``recc ls --json``, the TUI and the library (no secrets)."""
        return {
            "kind": self.kind, "local": f"{self.host}:{self.port}", "port": self.port,
            "state": self.state, "state_since": self.state_since, "last_error": self.last_error,
            "retries": self.retries, "connections": self.connections, "accepted": self.accepted,
            "upstream": f"{self.upstream.host}:{self.upstream.port}" if self.upstream else None,
            "bytes_up": self.bytes_up + sum(c.local.nbytes for c in self._conns)
            + sum(r.bytes_up for r in self._relays),
            "bytes_down": self.bytes_down + sum(c.remote.nbytes for c in self._conns if c.remote)
            + sum(r.bytes_down for r in self._relays)}

    def relayed_sockets(self) -> list[socket.socket]:
        """The open sockets of relayed connections, local and upstream (for diagnostics and tests)."""
        socks = [s for r in self._relays for s in (r.local, r.upstream)]
        socks += [s.transport.get_extra_info("socket") for c in self._conns for s in (c.local, c.remote)
                  if s is not None and s.transport is not None]
        return socks

    def _set_state(self, state: str) -> None:
        if self.state != state and self.state != "closed":
            self.state, self.state_since = state, time.time()
            if self.on_change is not None:
                self.on_change()
            # An outage retries again and again: tell the log once, not each time.
            quiet = state == "connecting" or (state == "down" and self.retries > 1)
            log.log(logging.DEBUG if quiet else logging.INFO, "%s tunnel on port %s is %s%s", self.kind,
                    self.port, state, f" ({self.last_error})" if state == "down" else "")

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _backoff(self) -> float:
        # Jittered so that many clients reconnecting at once do not retry in lockstep.
        return min(self.backoff_cap, self.backoff_base * 2 ** max(0, self.retries - 1)) * random.uniform(0.5, 1)

    async def _open_upstream(self) -> tuple[Any, socket.socket]:
        """Resolve and connect the upstream (after any backoff); state and retries follow the outcome."""
        loop = asyncio.get_running_loop()
        where = "resolving the upstream"
        try:
            if (delay := self._not_before - loop.time()) > 0:
                await asyncio.sleep(delay)
            endpoint = await asyncio.wait_for(self._resolve(), self.connect_timeout)
            if endpoint is None:
                raise ConnectionError("no upstream endpoint (yet)")
            self.upstream, where = endpoint, f"{endpoint.host}:{endpoint.port}"
            opener = getattr(endpoint, "open_connection", None)
            # e.g. a Kubernetes port-forward: the resolver makes the socket
            sock = await asyncio.wait_for(opener() if opener is not None else _dial(endpoint.host, endpoint.port),
                                          self.connect_timeout)
        except Exception as exc:  # noqa: BLE001 - any failure ends this one attempt only
            self.retries += 1
            self.last_error = f"{where}: {str(exc) or type(exc).__name__}"
            self._not_before = loop.time() + self._backoff()
            self._set_state("down")
            raise UpstreamUnavailable(self.last_error) from exc
        self.retries, self._not_before = 0, 0.0
        self._set_state("up")
        return endpoint, sock

    def _upstream_lost(self, exc: BaseException | None) -> None:
        """An upstream link ended before its local side: probe the upstream, re-resolving it.

        The state is left alone until the probe answers: servers close links for good reasons too
        (``Connection: close``, an idle comm), and a live upstream must not flicker to down.
        """
        if self.state == "closed":
            return
        if exc is not None:
            self.last_error = f"upstream connection lost: {str(exc) or type(exc).__name__}"
        if self._probe is None or self._probe.done():
            self._probe = self._spawn(self._probe_upstream())

    async def _probe_upstream(self) -> None:
        """Try the upstream until it answers, so 'up' and 'down' stay true without client traffic."""
        # Jittered, so that a scheduler restart does not meet every tunnel's probe at the same instant.
        await asyncio.sleep(self.backoff_base * random.uniform(0.5, 1))
        while self.state != "closed":
            try:
                _, sock = await self._open_upstream()  # waits out any backoff first
            except UpstreamUnavailable:
                continue
            sock.close()
            return

    # -- the asyncio relay (DashboardTunnel, port-forward upstreams, platforms without splice) --

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
        try:
            _, sock = await self._open_upstream()
        except UpstreamUnavailable:
            assert conn.local.transport is not None
            conn.local.transport.close()
            return
        await conn.attach(sock)

    # -- the splice path: accept here, relay in the kernel where the upstream is a plain socket --

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._listener is not None
        while True:
            try:
                sock, _ = await loop.sock_accept(self._listener)
            except OSError as exc:  # e.g. out of file descriptors: keep listening, do not spin
                log.warning("%s tunnel on port %s: accept failed: %s", self.kind, self.port, exc)
                await asyncio.sleep(0.1)
                continue
            _tune(sock)
            self.accepted += 1
            self._waiting.add(sock)
            self._spawn(self._serve(sock))

    async def _serve(self, local: socket.socket) -> None:
        """Connect the upstream of one accepted socket and start relaying it."""
        loop = asyncio.get_running_loop()
        try:
            endpoint, upstream = await self._open_upstream()
        except BaseException as exc:  # unavailable (this connection ends), or the tunnel closing
            local.close()
            if isinstance(exc, UpstreamUnavailable):
                return
            raise
        finally:
            self._waiting.discard(local)
        if relay.spliceable(upstream) and getattr(endpoint, "open_connection", None) is None:
            def done(upstream_first: bool, error: OSError | None) -> None:
                self._relays.discard(pair)
                self.bytes_up += pair.bytes_up
                self.bytes_down += pair.bytes_down
                if upstream_first:
                    self._upstream_lost(error)

            pair = relay.SpliceRelay(local, upstream, loop, done)
            self._relays.add(pair)
            pair.start()
        else:  # an upstream socket made by someone else (a port-forward): the asyncio relay
            conn = _Conn(self, upstream)
            try:
                await loop.connect_accepted_socket(lambda: conn.local, sock=local)
            except Exception:  # noqa: BLE001 - ends this one connection only
                local.close()
                upstream.close()


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
    splice = False  # the head must be read and judged before anything is relayed

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
