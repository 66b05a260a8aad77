"""The byte relays behind ``reccd.tunnel``: a kernel-side splice relay and the asyncio relay.

Why threads and ``os.splice``: on the event loop every chunk costs a wake-up, a copy into Python
and a copy back out, which held a 256 MB TLS gather to about 0.7x of a direct connection on two
cores. ``splice(2)`` moves the bytes socket -> pipe -> socket inside the kernel and releases the
GIL while it blocks, so a relayed connection costs the daemon almost no CPU and never waits for its
event loop. Linux only, and only for plain kernel sockets; everything else (Windows, macOS, a
port-forward upstream that is not a socket of ours) keeps the asyncio relay in ``reccd.tunnel``.

Closing follows the asyncio relay: no half-close (Dask never uses it and a half-open pair would hide
a dead peer). When either direction ends, by EOF or error, both sockets are shut down at once; data
already handed to the kernel is still delivered before the FIN, so an upstream that sends and then
closes loses nothing.

:class:`Conn` and :class:`_Side` are the asyncio relay (protocols and transports, not streams, to
keep per-chunk cost low); they call back into their :class:`~reccd.tunnel.Tunnel`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import threading
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from reccd.tunnel import Tunnel

READ_SIZE = 256 * 1024  # one recv_into per loop wake-up moves up to this much
HEAD_READ = 16 * 1024  # before an upstream exists: idle or hostile connections stay cheap
WRITE_HIGH = 1024 * 1024  # pause the source once this much waits for the destination
# Probe well below load-balancer idle timeouts (AWS NLB: 350 s); a dead peer shows in ~40 s.
# (TCP_KEEPALIVE is macOS's name for the idle time; each option is set where the OS has it.)
KEEPALIVE = (("TCP_KEEPIDLE", 20), ("TCP_KEEPALIVE", 20), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 4))
CLOSE_GRACE = 10.0  # a peer that will not take the last bytes is aborted after this


def tune(sock: socket.socket | None) -> None:
    """Keepalive and no-Nagle on one relayed socket (each option only where the OS has it)."""
    if sock is None:
        return
    options = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1), (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    options += [(socket.IPPROTO_TCP, getattr(socket, n), v) for n, v in KEEPALIVE if hasattr(socket, n)]
    for level, option, value in options:
        with contextlib.suppress(OSError):
            sock.setsockopt(level, option, value)


CHUNK = 1024 * 1024  # bytes asked of one splice call; the pipe is grown to match where allowed
try:
    import fcntl
except ImportError:  # Windows: no splice either, so no pipes to size
    fcntl = None  # type: ignore[assignment]
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_SPLICE_F_MOVE = getattr(os, "SPLICE_F_MOVE", 1)


def available() -> bool:
    """True where the splice relay can run (Linux with ``os.splice``)."""
    return sys.platform.startswith("linux") and hasattr(os, "splice") and fcntl is not None


def spliceable(sock: object) -> bool:
    """A plain kernel stream socket (not an SSL wrapper or some other file-like object)."""
    return type(sock) is socket.socket and sock.type == socket.SOCK_STREAM


def _pipe() -> tuple[int, int]:
    r, w = os.pipe()
    # A 1 MiB pipe lets one splice move a whole burst; the default 64 KiB costs 16x the calls.
    # Unprivileged users may be capped by /proc/sys/fs/pipe-max-size: then take what is allowed.
    for size in (CHUNK, 256 * 1024):
        with contextlib.suppress(OSError):
            fcntl.fcntl(w, _F_SETPIPE_SZ, size)
            break
    return r, w


class SpliceRelay:
    """Relays ``local`` <-> ``upstream`` (both connected, owned by the relay from now on).

    ``on_done(upstream_first, error)`` runs on ``loop`` once both threads have ended and both
    sockets are closed: ``upstream_first`` tells whether the upstream side ended the connection,
    ``error`` is the OSError that ended it (None for a clean EOF or a :meth:`stop`).
    """

    def __init__(self, local: socket.socket, upstream: socket.socket, loop: asyncio.AbstractEventLoop,
                 on_done: Callable[[bool, OSError | None], None]) -> None:
        self.local, self.upstream = local, upstream
        self.bytes_up = self.bytes_down = 0  # local -> upstream, upstream -> local
        self.done: asyncio.Future[None] = loop.create_future()
        self._loop, self._on_done = loop, on_done
        self._lock = threading.Lock()
        self._ended: tuple[bool, OSError | None] | None = None  # who ended first, and how
        self._running = 2
        for sock in (local, upstream):
            sock.setblocking(True)  # the threads block in splice; the loop never touches these sockets

    def start(self) -> None:
        for upstream_side in (False, True):
            threading.Thread(target=self._pump, args=(upstream_side,), daemon=True,
                             name=f"recc-relay-{'down' if upstream_side else 'up'}").start()

    def stop(self) -> None:
        """End the connection now (tunnel closing); safe from the loop while the threads block."""
        self._end(None, None)

    def _pump(self, from_upstream: bool) -> None:
        src, dst = (self.upstream, self.local) if from_upstream else (self.local, self.upstream)
        src_fd, dst_fd = src.fileno(), dst.fileno()  # taken now: the sockets close only after both threads end
        error: OSError | None = None
        r, w = _pipe()
        try:
            while True:
                n = os.splice(src_fd, w, CHUNK, flags=_SPLICE_F_MOVE)
                if n == 0:
                    break
                if from_upstream:
                    self.bytes_down += n
                else:
                    self.bytes_up += n
                while n:  # drain the pipe fully, so the next read always has room for a whole chunk
                    n -= os.splice(r, dst_fd, n, flags=_SPLICE_F_MOVE)
        except OSError as exc:
            error = exc
        finally:
            os.close(r)
            os.close(w)
        self._end(from_upstream, error)
        with self._lock:
            self._running -= 1
            last = self._running == 0
        if last:
            self._finish()

    def _end(self, upstream_first: bool | None, error: OSError | None) -> None:
        """The first end wins; it shuts both sockets down, which wakes the other thread."""
        with self._lock:
            if self._ended is not None:
                return
            # stop() (None) counts as the local side ending: it is not the upstream's doing.
            self._ended = (bool(upstream_first), error)
        for sock in (self.local, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _finish(self) -> None:
        for sock in (self.local, self.upstream):
            sock.close()
        upstream_first, error = self._ended or (False, None)

        def report() -> None:
            if not self.done.done():
                self.done.set_result(None)
            self._on_done(upstream_first, error)

        with contextlib.suppress(RuntimeError):  # the loop is gone: the daemon is exiting anyway
            self._loop.call_soon_threadsafe(report)


class _Side(asyncio.BufferedProtocol):
    """One socket of a relayed connection (asyncio relay): whatever it reads is written to its peer."""

    def __init__(self, conn: Conn, upstream: bool) -> None:
        self.conn, self.upstream = conn, upstream
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None  # set once both sockets exist
        self.nbytes = 0
        self._buf = memoryview(bytearray(0))
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        tune(transport.get_extra_info("socket"))
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


class Conn:
    """One accepted local connection and, once connected, its upstream connection (asyncio relay)."""

    def __init__(self, tunnel: Tunnel, upstream: socket.socket | None = None) -> None:
        self.tunnel = tunnel
        self.local = _Side(self, upstream=False)
        self.remote: _Side | None = None
        self.pending = bytearray()  # read from the local side before the upstream exists
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False
        self._upstream = upstream  # already connected (the splice-capable accept path handed it over)

    def made(self, side: _Side) -> None:
        assert side.transport is not None
        if not side.upstream:
            self.tunnel._conns.add(self)
            if self._upstream is not None:
                side.transport.pause_reading()
                self.task = asyncio.get_running_loop().create_task(self.attach(self._upstream))
            else:
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

    async def attach(self, sock: socket.socket) -> None:
        """Relay to this connected upstream socket; if that cannot start, close the local side."""
        try:
            await asyncio.get_running_loop().create_connection(lambda: _Side(self, upstream=True), sock=sock)
        except Exception as exc:  # noqa: BLE001 - ends this one connection only
            sock.close()
            self.tunnel.last_error = f"upstream connection failed: {str(exc) or type(exc).__name__}"
            if self.local.transport is not None:
                self.local.transport.close()

    def finish(self, side: _Side, exc: Exception | None) -> None:
        """One side ended (EOF or error): end the other at once so the client notices."""
        if side is self.remote and not self.closed:
            self.tunnel._upstream_lost(exc)
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
