"""Raw-bytes fuzzing of the daemon's socket: broken HTTP, oversized input, slow clients.

The outcome that matters: no crash, no hang, no 500, every API error a JSON error with a code,
bounded memory, and normal requests served during and after. The daemon runs with short limits
(``RECC_HTTP_IDLE_TIMEOUT`` / ``RECC_HTTP_BODY_TIMEOUT`` = 2 s) so slow clients are dealt with
inside a CI budget; ``RECC_FUZZ_EXAMPLES`` (default 150) sets how many random blobs are sent.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import psutil
import pytest

from tests.harness import Daemon, make_dirs

BLOBS = int(os.environ.get("RECC_FUZZ_EXAMPLES", "150"))
SEED = int(os.environ.get("RECC_FUZZ_SEED", "20260901"))
LIMIT = 2.0  # the daemon's idle and body timeouts in this test


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = Daemon(make_dirs())
    d.env.update(RECC_HTTP_IDLE_TIMEOUT=str(LIMIT), RECC_HTTP_BODY_TIMEOUT=str(LIMIT))
    d.start()
    try:
        yield d
    finally:
        d.cleanup()


def connect(daemon: Daemon) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(daemon.socket))
    return sock


def exchange(daemon: Daemon, data: bytes, timeout: float = 10) -> bytes:
    """Send ``data`` and read until the daemon closes; fails (no hang) if it never does."""
    with connect(daemon) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed on us mid-send (it refused what it had seen): still read what it said
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


def status_and_body(raw: bytes) -> tuple[int, bytes, str]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    ctype = next((l.split(":", 1)[1].strip() for l in lines[1:] if l.lower().startswith("content-type:")), "")
    return int(lines[0].split()[1]), body, ctype


def assert_api_error(raw: bytes, *statuses: int) -> dict:
    status, body, ctype = status_and_body(raw)
    assert status in statuses, raw[:300]
    assert ctype.startswith("application/json"), raw[:300]
    error = json.loads(body)["error"]
    assert error["code"] and error["message"]
    return error


def request(method: str, path: str, body: bytes = b"", *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: reccd", "Connection: close", *headers]
    if body and not any(h.lower().startswith("content-length") for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def healthy(daemon: Daemon) -> float:
    """Seconds a normal request takes; fails if it is not answered properly."""
    start = time.monotonic()
    status, body, _ = status_and_body(exchange(daemon, request("GET", "/v1/clusters")))
    assert status == 200 and json.loads(body) == {"clusters": []}
    return time.monotonic() - start


def test_malformed_oversized_and_invalid_requests(daemon: Daemon) -> None:
    rss_before = psutil.Process(daemon.proc.pid).memory_info().rss
    good = request("POST", "/v1/clusters/x/scale", b'{"n_workers": 1}')
    for cut in range(1, len(good), 7):  # truncated anywhere, then the client goes away
        with connect(daemon) as sock:
            sock.sendall(good[:cut])

    def truncated_and_waiting(cut: int) -> tuple[float, bytes]:
        start = time.monotonic()
        with connect(daemon) as sock:
            sock.sendall(good[:cut])
            sock.settimeout(LIMIT + 5)
            answer = sock.recv(65536)  # 408 for a partial body; a partial head is just closed
        return time.monotonic() - start, answer

    # truncated, and the client waits: closed within the time limit (the three wait side by side, each on
    # its own connection and clock, instead of one time limit after another)
    with ThreadPoolExecutor(3) as pool:
        waited = list(pool.map(truncated_and_waiting, (10, 60, len(good) - 5)))
    for took, answer in waited:
        assert took < LIMIT + 3
        if answer:
            assert_api_error(answer, 408)
    healthy(daemon)
    # Bodies: too large (declared or sent), not JSON, invalid UTF-8, not an object, wrong types.
    assert_api_error(exchange(daemon, request("POST", "/v1/clusters", b"{" * (2 << 20))), 413)
    huge = request("POST", "/v1/clusters", b"{}", "Content-Length: 999999999999")
    assert_api_error(exchange(daemon, huge), 413)
    for body in (b"\xff\xfe\xfd", b'{"spec": "\xc3\x28"}', b"[1, 2]", b"null", b'{"spec": {"n_workers": "\xe2\x82"}}',
                 b'{"spec": []}', b'{"spec": {"n_workers": 1e400}}', b'{"spec": {}, "name": 7}', b"{" * 10000):
        assert_api_error(exchange(daemon, request("POST", "/v1/clusters", body)), 400, 404)
    # Paths and queries: invalid UTF-8, traversal, odd methods, absurd numbers.
    for method, path in (("GET", "/v1/clusters/\xff\xfe"), ("GET", "/v1/../../etc/passwd"), ("GET", "/v1/clusters/%00"),
                         ("GET", "/v1/clusters/a/logs?tail=1e999"), ("GET", "/v1/clusters/a/logs?tail=-1"),
                         ("GET", "/v1/costs?by=%ff"), ("PATCH", "/v1/clusters"), ("BREW", "/v1/health"),
                         ("DELETE", "/v1/clusters/" + "a" * 5000)):
        status, body, ctype = status_and_body(exchange(daemon, request(method, path)))
        assert status < 500, (method, path, status)
        if status >= 400 and ctype.startswith("application/json"):
            assert json.loads(body)["error"]["code"]
    # Heads: huge request line, huge header, too many headers, invalid UTF-8 and control bytes in headers.
    for raw in (request("GET", "/v1/health?" + "a" * 100_000), request("GET", "/v1/health", b"", "X-A: " + "b" * 100_000),
                request("GET", "/v1/health", b"", *(f"X-{i}: {i}" for i in range(1000))),
                request("GET", "/v1/health", b"", "X-Bad: \xff\xfe\x00"), b"GET /v1/health HTTP/9.9\r\n\r\n",
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64)):
        answer = exchange(daemon, raw)
        if answer:
            status, _, _ = status_and_body(answer)
            assert 400 <= status < 500, answer[:200]
    # Pipelined: two good requests are both answered; with garbage between them the parser refuses
    # the batch (400, closed): either way nothing crashes and no 500 comes back.
    keep = request("GET", "/v1/health").replace(b"Connection: close", b"Connection: keep-alive")
    answer = exchange(daemon, keep + request("GET", "/v1/health"))
    assert answer.count(b"HTTP/1.1 200") == 2
    answer = exchange(daemon, keep + b"\x00garbage\r\n\r\n" + keep)
    assert answer.startswith((b"HTTP/1.1 200", b"HTTP/1.0 400", b"HTTP/1.1 400")) and b" 500 " not in answer
    # Random bytes, seeded: each connection is answered or closed, never left hanging.
    # (The same seeded blobs as one after another, sent a few at a time: an incomplete one waits out the
    # daemon's time limit, and those waits need not add up; the daemon serves connections concurrently.)
    rng = random.Random(SEED)
    blobs = []
    for _ in range(BLOBS):
        prefix = rng.choice([b"", b"GET / HTTP/1.1\r\n", b"POST /v1/clusters HTTP/1.1\r\nContent-Length: 5\r\n\r\n"])
        blobs.append(prefix + rng.randbytes(rng.choice([1, 10, 100, 5000])))
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda blob: exchange(daemon, blob, timeout=LIMIT + 5), blobs))
    for answer in answers:
        assert b" 500 " not in answer[:20], answer[:200]
    healthy(daemon)
    rss_after = psutil.Process(daemon.proc.pid).memory_info().rss
    assert rss_after - rss_before < 64 * 2**20, (rss_before, rss_after)
    assert "Traceback" not in daemon.log and "unhandled error" not in daemon.log, daemon.log[-3000:]


def test_slow_clients_are_cut_off_and_others_are_served_meanwhile(daemon: Daemon) -> None:
    stop = threading.Event()
    closed_after: list[float] = []

    def slowloris() -> None:
        sock = connect(daemon)
        start = time.monotonic()
        try:
            sock.sendall(b"GET /v1/health HTTP/1.1\r\n")
            while not stop.is_set():
                sock.sendall(b"X-Slow: 1\r\n")  # a header line now and then, never the end of the head
                time.sleep(0.25)
        except OSError:  # closed by the daemon
            closed_after.append(time.monotonic() - start)
        finally:
            sock.close()

    threads = [threading.Thread(target=slowloris) for _ in range(40)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    # A slow body holds one handler: it gets 408 after the body timeout.
    slow_body = connect(daemon)
    slow_body.sendall(request("POST", "/v1/clusters", b"", "Content-Length: 100") + b'{"spec"')
    latencies = [healthy(daemon) for _ in range(20)]  # served while 40 slow clients hang on
    assert max(latencies) < 2.0, latencies
    slow_body.settimeout(LIMIT + 5)
    answer = slow_body.recv(65536)
    slow_body.close()
    assert_api_error(answer, 408)
    deadline = time.monotonic() + LIMIT + 8
    while len(closed_after) < len(threads) and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(5)
    assert len(closed_after) == len(threads), "some slow clients were never cut off"
    assert max(closed_after) < LIMIT + 5
    healthy(daemon)
    assert daemon.proc.poll() is None
