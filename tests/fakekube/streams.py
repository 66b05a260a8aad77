"""Pod subresources that stream: ``log`` (tailLines, limitBytes, follow) and ``portforward``.

Port-forward speaks the WebSocket form the Python client uses (facts.md section 3):
subprotocol ``v4.channel.k8s.io``; per requested port i, channel 2*i carries data and
2*i+1 errors, and each channel's first frame is the channel byte plus the port as 2-byte
little-endian. Bytes are relayed to ``127.0.0.1:<host port>`` (the pod's remapped port, see
`tests.fakekube.podspec`); a port nobody listens on gets an error text on its error
channel. The WebSocket is closed once every port's connection has ended, or when the
client closes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from tests.fakekube import kinds as K
from tests.fakekube.errors import ApiError

if TYPE_CHECKING:
    from tests.fakekube.kubelet import Kubelet

log = logging.getLogger("fakekube.streams")
PORTFORWARD_PROTOCOLS = ("v4.channel.k8s.io",)
CHUNK = 64 * 1024


def _waiting_reason(pod: dict) -> str:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            return waiting.get("reason", "ContainerCreating")
    return "ContainerCreating"


async def handle_log(kubelet: "Kubelet", request: web.Request, kind: K.Kind, ns: str, name: str) -> web.StreamResponse:
    if request.method != "GET":
        raise ApiError.method_not_allowed()
    pod = kubelet.store.get(K.PODS, ns, name)
    names = [c["name"] for c in pod["spec"]["containers"]]
    container = request.query.get("container")
    if container is None and len(names) > 1:
        raise ApiError.bad_request(f"a container name must be specified for pod {name}, choose one of: "
                                   f"[{' '.join(names)}]")
    container = container or names[0]
    if container not in names:
        raise ApiError.bad_request(f"container {container} is not valid for pod {name}")
    rt = kubelet.runtime_of(pod)
    if rt is None or not rt.started:
        raise ApiError.bad_request(f'container "{container}" in pod "{name}" is waiting to start: '
                                   f"{_waiting_reason(pod)}")
    try:
        stored = rt.log_path.read_bytes() if container == names[0] else b""
    except FileNotFoundError:
        stored = b""
    position = len(stored)
    lines = stored.splitlines(keepends=True)  # each "<RFC 3339 nano time> <text>" (kubelet._stamp_lines)
    since = request.query.get("sinceSeconds")
    if since is not None:
        if not since.isdigit() or int(since) < 1:
            raise ApiError.bad_request(f"sinceSeconds must be a positive integer, got {since!r}")
        start = time.time() - int(since)
        lines = [line for line in lines if _stamp_epoch(line) >= start]
    tail = request.query.get("tailLines")
    if tail is not None and tail.lstrip("-").isdigit():
        lines = lines[-int(tail):] if int(tail) > 0 else []
    stamped = request.query.get("timestamps") in ("true", "1")
    data = b"".join(lines if stamped else (_unstamped(line) for line in lines))
    if request.query.get("follow") in ("true", "1"):
        log_requests.append((ns, name, "follow"))
    else:
        log_requests.append((ns, name, f"{len(data)}"))
    limit = request.query.get("limitBytes")
    if limit and limit.isdigit():
        data = data[:int(limit)]
    if request.query.get("follow") not in ("true", "1"):
        return web.Response(body=data, content_type="text/plain")
    resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await resp.prepare(request)
    try:
        await resp.write(data)
        while container == names[0]:
            try:
                with open(rt.log_path, "rb") as f:
                    f.seek(position)
                    more = f.read()
            except FileNotFoundError:
                break
            complete = more[:more.rfind(b"\n") + 1]  # whole lines only: each is stamped
            position += len(complete)
            if complete:
                await resp.write(b"".join(line if stamped else _unstamped(line)
                                          for line in complete.splitlines(keepends=True)))
            elif rt.exit_code is not None or rt.uid not in kubelet.runtimes:
                break
            else:
                await asyncio.sleep(0.2)
        await resp.write_eof()
    except ConnectionResetError:   # the client stopped following
        pass
    return resp


# (namespace, pod, bytes answered or "follow") per log request: tests check follow stays incremental
log_requests: list[tuple[str, str, str]] = []


def _stamp_epoch(line: bytes) -> float:
    stamp = line.split(b" ", 1)[0].decode(errors="replace")
    try:
        head, _, frac = stamp.rstrip("Z").partition(".")
        return datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp() + float(
            f"0.{frac or 0}")
    except ValueError:
        return 0.0


def _unstamped(line: bytes) -> bytes:
    return line.split(b" ", 1)[1] if b" " in line else line


def _ports(request: web.Request) -> list[int]:
    ports: list[int] = []
    for value in request.query.getall("ports", []):
        for part in value.split(","):
            try:
                port = int(part)
            except ValueError:
                raise ApiError.bad_request(f"unable to parse {part!r} as a port") from None
            if not 0 < port < 65536:
                raise ApiError.bad_request(f"port {port} must be > 0 and < 65536")
            ports.append(port)
    if not ports:
        raise ApiError.bad_request("query parameter \"port\" is required")
    return ports


async def handle_portforward(kubelet: "Kubelet", request: web.Request, kind: K.Kind, ns: str,
                             name: str) -> web.StreamResponse:
    if request.method not in ("GET", "POST"):
        raise ApiError.method_not_allowed()
    pod = kubelet.store.get(K.PODS, ns, name)
    ports = _ports(request)
    if (pod.get("status") or {}).get("phase") != "Running":
        raise ApiError.bad_request(f"unable to upgrade connection: pod {name} is not running")
    ws = web.WebSocketResponse(protocols=PORTFORWARD_PROTOCOLS, autoping=True)
    if not ws.can_prepare(request).ok:
        raise ApiError.bad_request("Upgrade request required: port-forward needs a WebSocket (v4.channel.k8s.io)")
    await ws.prepare(request)
    send_lock = asyncio.Lock()

    async def send(channel: int, payload: bytes) -> None:
        async with send_lock:
            if not ws.closed:
                await ws.send_bytes(bytes([channel]) + payload)

    for i, port in enumerate(ports):
        prefix = bytes([port & 0xFF, port >> 8])
        await send(2 * i, prefix)
        await send(2 * i + 1, prefix)
    writers: dict[int, asyncio.StreamWriter] = {}
    readers: list[asyncio.Task] = []
    open_ports = set(range(len(ports)))

    async def pump(i: int, reader: asyncio.StreamReader) -> None:
        try:
            while chunk := await reader.read(CHUNK):
                await send(2 * i, chunk)
        except (ConnectionError, OSError):
            pass
        finally:
            open_ports.discard(i)
            if not open_ports and not ws.closed:
                await ws.close()

    for i, port in enumerate(ports):
        host_port = kubelet.host_port(pod, port)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", host_port)
        except OSError as exc:
            await send(2 * i + 1, (f"error forwarding port {port} to pod {pod['metadata']['uid']}, uid : failed to "
                                   f"connect to localhost:{port} inside namespace \"{ns}\": {exc}").encode())
            open_ports.discard(i)
            continue
        writers[i] = writer
        readers.append(asyncio.get_running_loop().create_task(pump(i, reader)))
    if not open_ports and not readers:
        await ws.close()
    try:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY and msg.data:
                channel, payload = msg.data[0], msg.data[1:]
                writer = writers.get(channel // 2) if channel % 2 == 0 else None
                if writer is not None and payload:
                    writer.write(payload)
                    await writer.drain()
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
    except (ConnectionError, OSError):
        pass
    finally:
        for writer in writers.values():
            writer.close()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        if not ws.closed:
            await ws.close()
    return ws
