"""Another local user gets nothing: not the socket, not the state, not the logs, not the keys.

The test's folders are opened up to 0755 on purpose (pytest's and mkdtemp's 0700 would hide a
mistake): only the modes RECC sets itself keep the other user out. The other user is `nobody`,
reached with setpriv (CI runs as root).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.harness import Daemon

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def as_nobody(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NOBODY, sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60, env={"PATH": os.environ["PATH"], "PYTHONPATH": ""})


@pytest.fixture
def open_daemon(recc_dirs):
    if os.getuid() != 0:
        pytest.fail("this test needs root to act as another user (CI runs as root)")
    base = Path(recc_dirs["_base"])
    for key in ("RECC_DATA_DIR", "RECC_LOG_DIR", "RECC_CONFIG_DIR"):
        Path(recc_dirs[key]).parent.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)
    d = Daemon(recc_dirs).start()
    try:
        yield d
    finally:
        d.cleanup()


@pytest.mark.slow
def test_another_user_cannot_reach_the_daemon_or_its_files(open_daemon) -> None:
    d = open_daemon
    d.client().create_cluster({"n_workers": 1, "worker_memory": "1GiB"}, "private")
    import time

    deadline = time.monotonic() + 60
    while d.client().get_cluster("private")["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    data = Path(d.dirs["RECC_DATA_DIR"])
    targets = {
        "socket": str(d.socket),
        "state": str(data / "state.db"),
        "log": str(Path(d.dirs["RECC_LOG_DIR"]) / "reccd.log"),
        "key": str(data / "clusters" / "local" / "private" / "worker-key.pem"),
    }
    for what, path in targets.items():
        assert Path(path).exists(), what
    out = as_nobody(f"""
        import socket
        targets = {targets!r}
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(targets["socket"]); print("socket: CONNECTED")
        except OSError as e:
            print("socket:", type(e).__name__)
        for what in ("state", "log", "key"):
            try:
                open(targets[what], "rb").read(1); print(what + ": READ")
            except OSError as e:
                print(what + ":", type(e).__name__)
    """)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(": ", 1) for line in out.stdout.strip().splitlines())
    assert lines == {"socket": "PermissionError", "state": "PermissionError", "log": "PermissionError",
                     "key": "PermissionError"}, out.stdout


def test_the_peer_uid_check_refuses_another_user_even_through_an_open_socket(open_daemon) -> None:
    d = open_daemon
    # Simulate a mistake that opens the folder and the socket: the daemon still serves only its owner.
    os.chmod(d.socket.parent, 0o755)
    os.chmod(d.socket, 0o666)
    try:
        out = as_nobody(f"""
            import socket, json
            s = socket.socket(socket.AF_UNIX)
            s.connect({str(d.socket)!r})
            s.sendall(b"GET /v1/clusters HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            print(data.split(b"\\r\\n")[0].decode())
            print(json.loads(data.split(b"\\r\\n\\r\\n", 1)[1])["error"]["code"])
        """)
    finally:
        os.chmod(d.socket, 0o600)
        os.chmod(d.socket.parent, 0o700)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:3] == ["HTTP/1.1", "403", "Forbidden"] and out.stdout.strip().endswith("forbidden")
