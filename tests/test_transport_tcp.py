"""The TCP+token transport (Windows has no AF_UNIX in CPython; RECC_TRANSPORT=tcp selects it anywhere)."""

from __future__ import annotations

import http.client
import json
import os
import stat
from pathlib import Path

import pytest

from recc.daemon_client import DaemonClient
from tests.harness import Daemon


@pytest.fixture
def tcp_daemon(recc_dirs, monkeypatch):
    monkeypatch.setenv("RECC_TRANSPORT", "tcp")
    d = Daemon(recc_dirs)
    d.env["RECC_TRANSPORT"] = "tcp"
    d.start()
    try:
        yield d
    finally:
        d.cleanup()


def call(url: str, path: str, token: str | None) -> tuple[int, dict]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token is not None else {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_token_file_is_private_and_requests_need_the_token(tcp_daemon) -> None:
    runtime = Path(tcp_daemon.dirs["RECC_RUNTIME_DIR"])
    token_file = runtime / "reccd.token"
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    assert not (runtime / "reccd.sock").exists()
    url = json.loads((runtime / "reccd.json").read_text())["url"]
    assert url.startswith("http://127.0.0.1:")
    token = token_file.read_text()
    assert call(url, "/v1/health", token)[0] == 200
    for wrong in (None, "", "not-the-token", token + "x"):
        status, body = call(url, "/v1/clusters", wrong)
        assert status == 401 and body["error"]["code"] == "unauthorized"
        assert token not in json.dumps(body)
    assert DaemonClient().list_clusters() == []  # the library finds it the same way as the socket


@pytest.mark.slow
def test_the_library_uses_a_cluster_over_the_tcp_transport(tcp_daemon) -> None:
    from recc import RECCCluster, RSHClient

    with RECCCluster("local", n_workers=1, worker_memory="1GiB", quiet=True) as cluster:
        with RSHClient(cluster) as client:
            assert client.submit(sum, [40, 2]).result() == 42
    assert DaemonClient().list_clusters() == []
