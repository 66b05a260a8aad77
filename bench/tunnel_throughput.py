"""Throughput and latency of reccd.tunnel.Tunnel against a direct loopback connection.

Not a test: run ``python bench/tunnel_throughput.py`` and read the ratios.

Three processes, so the relay gets its own interpreter and event loop as in the daemon:
a sink server (blocking sockets, one thread per connection), the tunnel (``Tunnel`` on an
asyncio loop), and this process as the client (blocking sockets).

* bulk: the client sends an 8-byte length and then that many bytes; the sink answers one byte
  once it has them all. Timed from connect to that byte; median of ``--runs``.
* round trips: ``--trips`` sequential 1-byte request/response exchanges on one connection.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time

MiB = 1024 * 1024


def serve_sink() -> None:
    """The upstream: 'S' + length -> swallow that many bytes and answer b'K'; 'E' -> echo."""
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)

    def handle(conn: socket.socket) -> None:
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            mode = conn.recv(1)
            if mode == b"S":
                (size,) = struct.unpack("!Q", recv_exactly(conn, 8))
                buf = memoryview(bytearray(MiB))
                while size > 0:
                    n = conn.recv_into(buf, min(size, MiB))
                    if not n:
                        return
                    size -= n
                conn.sendall(b"K")
            elif mode == b"E":
                while data := conn.recv(65536):
                    conn.sendall(data)

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def serve_tunnel(upstream_port: int) -> None:
    """The relay under test, alone on its event loop like in the daemon."""
    from reccd.providers import Endpoint
    from reccd.tunnel import Tunnel

    async def main() -> None:
        async def resolve() -> Endpoint:
            return Endpoint("127.0.0.1", upstream_port)

        tunnel = Tunnel(resolve)
        print(await tunnel.start(), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed early")
        data += chunk
    return data


def bulk(port: int, size: int) -> float:
    """Seconds to move ``size`` bytes to the sink through ``port``."""
    block = memoryview(os.urandom(MiB))
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"S" + struct.pack("!Q", size))
        sent = 0
        while sent < size:
            sock.sendall(block[: min(MiB, size - sent)])
            sent += MiB
        if sock.recv(1) != b"K":
            raise ConnectionError("sink did not confirm")
    return time.perf_counter() - start


def round_trips(port: int, trips: int) -> float:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"E")
        start = time.perf_counter()
        for _ in range(trips):
            sock.sendall(b"x")
            if sock.recv(1) != b"x":
                raise ConnectionError("echo broke")
        return time.perf_counter() - start


def spawn(*args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["client", "sink", "tunnel"], default="client")
    parser.add_argument("--upstream", type=int, default=0)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--trips", type=int, default=1000)
    args = parser.parse_args()
    if args.role == "sink":
        return serve_sink()
    if args.role == "tunnel":
        return serve_tunnel(args.upstream)

    sink, sink_port = spawn("--role", "sink")
    tunnel, tunnel_port = spawn("--role", "tunnel", "--upstream", str(sink_port))
    try:
        size = args.mib * MiB
        bulk(sink_port, 16 * MiB), bulk(tunnel_port, 16 * MiB)  # warm up both paths
        direct, through = [], []
        for _ in range(args.runs):  # interleave so drift hits both alike
            direct.append(bulk(sink_port, size))
            through.append(bulk(tunnel_port, size))
        d, t = statistics.median(direct), statistics.median(through)
        print(f"bulk {args.mib} MiB (median of {args.runs}):")
        print(f"  direct  {d:.3f} s  {size / d / MiB:8.0f} MiB/s")
        print(f"  tunnel  {t:.3f} s  {size / t / MiB:8.0f} MiB/s")
        print(f"  throughput ratio tunnel/direct = {d / t:.3f}  (target >= 0.95)")
        direct, through = [], []
        for _ in range(args.runs):
            direct.append(round_trips(sink_port, args.trips))
            through.append(round_trips(tunnel_port, args.trips))
        d, t = statistics.median(direct), statistics.median(through)
        print(f"{args.trips} sequential 1-byte round trips (median of {args.runs}):")
        print(f"  direct  {d * 1000:.1f} ms  {d / args.trips * 1e6:6.1f} us/trip")
        print(f"  tunnel  {t * 1000:.1f} ms  {t / args.trips * 1e6:6.1f} us/trip")
        print(f"  time ratio tunnel/direct = {t / d:.3f}  (target <= 1.05)")
    finally:
        for proc in (tunnel, sink):
            proc.terminate()
            proc.wait(5)


if __name__ == "__main__":
    main()
