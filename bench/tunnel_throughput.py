"""Throughput and latency of the daemon's scheduler tunnel against a direct connection.

Not a test: run ``python bench/tunnel_throughput.py`` (or ``python -m bench``) and read the ratios.

Default (``--mode dask``, the figure issue #10 sets targets for): a real daemon makes a ``local``
cluster (TLS, one worker); a ``--mib`` MiB result is gathered through the daemon's tunnel and straight
from the scheduler, and ``--trips`` sequential tiny tasks are run each way. In the same run, for
comparison, the same gather and tasks go through a ``Tunnel`` forced onto the asyncio relay (what the
daemon used before the splice relay) and through ``socat`` where it is installed. All paths are
interleaved run by run, so the noise of a shared machine hits them alike; medians of ``--runs``.

``--mode raw``: plain loopback sockets, no TLS or Dask (a sink process, the tunnel process, and this
process as the client): ``--mib`` MiB bulk and ``--trips`` 1-byte round trips. A harsher micro-benchmark
of the relay alone (every hop is a copy at memory speed), not the figure the targets are about.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
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


def serve_tunnel(upstream_port: int, relay: str = "auto") -> None:
    """The relay under test, alone on its event loop like in the daemon (``relay="asyncio"``: no splice)."""
    from reccd.providers import Endpoint
    from reccd.tunnel import Tunnel

    async def main() -> None:
        async def resolve() -> Endpoint:
            return Endpoint("127.0.0.1", upstream_port)

        tunnel = Tunnel(resolve)
        if relay == "asyncio":
            tunnel.splice = False
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


def spawn_socat(upstream_port: int) -> tuple[subprocess.Popen[bytes], int] | None:
    """A ``socat`` relay to the upstream, or None where socat is not installed."""
    if shutil.which("socat") is None:
        return None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr,nodelay",
                             f"TCP:127.0.0.1:{upstream_port},nodelay"], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return proc, port
        time.sleep(0.05)
    proc.kill()
    return None


def make_blob(mib: int) -> bytes:
    return os.urandom(mib * MiB)


def inc(x: int) -> int:
    return x + 1


def report(title: str, unit: str, times: dict[str, list[float]], target: str) -> None:
    """One block of output; ``direct`` and ``tunnel`` lines keep the format ``python -m bench`` parses."""
    med = {name: statistics.median(values) for name, values in times.items()}
    d = med["direct"]
    print(title)
    for name, value in med.items():
        shown = f"{value:.3f} s" if unit == "s" else f"{value * 1000:.1f} ms"
        ratio = d / value if unit == "s" else value / d
        label = "throughput ratio vs direct" if unit == "s" else "time ratio vs direct"
        print(f"  {name:<14}{shown:>12}   {label} {ratio:.3f}")
    print(f"  target: {target}")


def dask_mode(args: argparse.Namespace) -> None:
    """Gather and tiny tasks through the daemon's tunnel vs straight to the scheduler (TLS)."""
    import json
    import tempfile
    from pathlib import Path

    base = Path(tempfile.mkdtemp(prefix="recc-tb"))
    for key, sub in (("RECC_RUNTIME_DIR", "run"), ("RECC_DATA_DIR", "data"), ("RECC_LOG_DIR", "log"),
                     ("RECC_CONFIG_DIR", "config")):
        os.environ[key] = str(base / sub)
    os.environ["RECC_LOCAL_SPARES"] = "0"  # warm spares speed up creation, not relaying: their imports would compete
    from distributed import Client

    from recc import RECCCluster
    from recc.daemon_client import DaemonClient

    daemon = DaemonClient.connect(start=True, quiet=True)
    relays: list[subprocess.Popen] = []
    try:
        with RECCCluster("local", n_workers=1, quiet=True, worker_memory=f"{max(2, 4 * args.mib // 1024 + 1)}GiB") as cluster:
            folder = Path(os.environ["RECC_DATA_DIR"]) / "clusters" / "local" / cluster.name
            direct = json.loads((folder / "scheduler.json").read_text())["address"]
            sched_port = int(direct.rsplit(":", 1)[1])
            addresses = {"direct": direct, "tunnel": cluster.scheduler_address}
            if not args.no_asyncio_relay:
                proc, port = spawn("--role", "tunnel", "--upstream", str(sched_port), "--relay", "asyncio")
                relays.append(proc)
                addresses["asyncio-relay"] = f"tls://127.0.0.1:{port}"
            if (socat := spawn_socat(sched_port)) is not None:
                relays.append(socat[0])
                addresses["socat"] = f"tls://127.0.0.1:{socat[1]}"
            clients = {name: Client(address, security=cluster.security, direct_to_workers=False, timeout="30s")
                       for name, address in addresses.items()}
            try:
                futures = {name: c.submit(make_blob, args.mib, pure=True) for name, c in clients.items()}
                assert len({f.key for f in futures.values()}) == 1  # one blob, made once, gathered by all
                gathers: dict[str, list[float]] = {name: [] for name in clients}
                trips: dict[str, list[float]] = {name: [] for name in clients}
                for run in range(args.runs + 1):  # run 0 warms every connection and is not counted
                    for name, client in clients.items():
                        start = time.perf_counter()
                        assert len(client.gather(futures[name])) == args.mib * MiB
                        if run:
                            gathers[name].append(time.perf_counter() - start)
                    for name, client in clients.items():
                        start = time.perf_counter()
                        for i in range(args.trips if run else 20):
                            assert client.submit(inc, i, pure=False).result() == i + 1
                        if run:
                            trips[name].append(time.perf_counter() - start)
            finally:
                for client in clients.values():
                    client.close()
        report(f"gather {args.mib} MiB over TLS (median of {args.runs}):", "s", gathers,
               "tunnel throughput >= 0.95x direct")
        report(f"{args.trips} sequential tiny tasks (median of {args.runs}):", "ms", trips,
               "tunnel time <= 1.05x direct")
    finally:
        # each step on its own: a relay that will not stop must not keep the daemon (and its cluster) alive
        for proc in relays:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            proc.kill()
        try:
            daemon.shutdown()
        except Exception:  # noqa: BLE001 - an unanswering daemon is killed below
            pass
        _stop_daemon_by_info(base / "run")
        shutil.rmtree(base, ignore_errors=True)


def _stop_daemon_by_info(run_dir: "os.PathLike[str]") -> None:
    """Kill the daemon this bench started if it is still there (it runs in a session of its own, so nothing
    else would): its pid is in ``reccd.json`` in the bench's private runtime folder."""
    import json
    import signal
    from pathlib import Path

    try:
        pid = int(json.loads((Path(run_dir) / "reccd.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return  # no info file: it has stopped (the daemon removes it on its way out)
    import psutil

    try:  # a stale file's pid may belong to something else by now
        if "reccd" not in " ".join(psutil.Process(pid).cmdline()):
            return
    except psutil.Error:
        return
    for sig, wait in ((0, 15.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 0.0)):  # SIGTERM deletes its clusters
        deadline = time.monotonic() + wait
        with contextlib.suppress(OSError):
            os.kill(pid, sig)
        while time.monotonic() < deadline:
            if _gone(pid):
                return
            time.sleep(0.2)


def _gone(pid: int) -> bool:
    """Whether the daemon ``pid`` has exited. `DaemonClient.connect` started it as this process's child; the
    library reaps it in a thread, but whichever of us gets there first, a zombie counts as gone."""
    import psutil

    with contextlib.suppress(OSError, AttributeError):  # ChildProcessError: not our child; no WNOHANG: Windows
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def raw_mode(args: argparse.Namespace) -> None:
    """Plain loopback sockets: the relay alone."""
    sink, sink_port = spawn("--role", "sink")
    procs = [sink]
    try:
        ports = {"direct": sink_port}
        for name, relay in (("tunnel", "auto"), ("asyncio-relay", "asyncio")):
            proc, ports[name] = spawn("--role", "tunnel", "--upstream", str(sink_port), "--relay", relay)
            procs.append(proc)
        if (socat := spawn_socat(sink_port)) is not None:
            procs.append(socat[0])  # type: ignore[arg-type]
            ports["socat"] = socat[1]
        size = args.mib * MiB
        for port in ports.values():
            bulk(port, 16 * MiB)  # warm up every path
        bulks: dict[str, list[float]] = {name: [] for name in ports}
        trips: dict[str, list[float]] = {name: [] for name in ports}
        for _ in range(args.runs):  # interleave so drift hits every path alike
            for name, port in ports.items():
                bulks[name].append(bulk(port, size))
            for name, port in ports.items():
                trips[name].append(round_trips(port, args.trips))
        report(f"raw bulk {args.mib} MiB (median of {args.runs}):", "s", bulks, "none (micro-benchmark)")
        report(f"{args.trips} sequential 1-byte round trips (median of {args.runs}):", "ms", trips,
               "none (micro-benchmark)")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["dask", "raw"], default="dask")
    parser.add_argument("--role", choices=["client", "sink", "tunnel"], default="client")
    parser.add_argument("--upstream", type=int, default=0)
    parser.add_argument("--relay", choices=["auto", "asyncio"], default="auto")
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--trips", type=int, default=1000)
    parser.add_argument("--no-asyncio-relay", action="store_true", help="skip the asyncio-relay comparison")
    args = parser.parse_args()
    if args.role == "sink":
        return serve_sink()
    if args.role == "tunnel":
        return serve_tunnel(args.upstream, args.relay)
    (dask_mode if args.mode == "dask" else raw_mode)(args)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
