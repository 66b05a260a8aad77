"""The daemon as a process: its API's errors, its lock, its socket, its folders."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time

import psutil
import pytest

from recc.daemon_client import DaemonClient, _UnixHTTPConnection
from recc.errors import ClusterNotFound, DaemonUnavailable, SpecError
from tests.harness import Daemon


def raw(daemon: Daemon, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict]:
    conn = _UnixHTTPConnection(str(daemon.socket), 10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def assert_error(status: int, body: dict, expected_status: int, code: str) -> None:
    assert status == expected_status, body
    assert set(body["error"]) == {"code", "message", "hint"}
    assert body["error"]["code"] == code
    assert "Traceback" not in body["error"]["message"]


def test_health_and_files_are_private(daemon: Daemon) -> None:
    info = daemon.client().health()
    assert info["pid"] == daemon.proc.pid and info["uid"] == os.getuid()
    runtime = daemon.socket.parent
    assert stat.S_IMODE(os.stat(runtime).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(daemon.socket).st_mode) == 0o600
    info_file = runtime / "reccd.json"
    assert stat.S_IMODE(os.stat(info_file).st_mode) == 0o600
    assert json.loads(info_file.read_text())["pid"] == daemon.proc.pid
    state_db = daemon.dirs["RECC_DATA_DIR"] + "/state.db"
    assert stat.S_IMODE(os.stat(state_db).st_mode) == 0o600


def test_openapi_document_lists_the_routes(daemon: Daemon) -> None:
    status, doc = raw(daemon, "GET", "/v1/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    assert {"/v1/clusters", "/v1/clusters/{name}", "/v1/events", "/v1/health"} <= set(doc["paths"])


def test_bad_requests_get_json_errors_and_the_daemon_keeps_serving(daemon: Daemon) -> None:
    assert_error(*raw(daemon, "GET", "/v1/nope"), 404, "not-found")
    assert_error(*raw(daemon, "GET", "/nope/at/all"), 404, "not-found")
    assert_error(*raw(daemon, "PUT", "/v1/clusters"), 405, "method-not-allowed")
    assert_error(*raw(daemon, "POST", "/v1/clusters", b"{not json", {"Content-Type": "application/json"}),
                 400, "bad-request")
    assert_error(*raw(daemon, "POST", "/v1/clusters", b"\xff\xfe", {}), 400, "bad-request")
    assert_error(*raw(daemon, "POST", "/v1/clusters", b"[1, 2]", {}), 400, "bad-request")
    assert_error(*raw(daemon, "POST", "/v1/clusters", b"{}", {}), 400, "bad-request")
    assert_error(*raw(daemon, "POST", "/v1/clusters", json.dumps({"spec": {"n_workers": -3}}).encode()),
                 400, "invalid-spec")
    assert_error(*raw(daemon, "POST", "/v1/clusters", json.dumps({"spec": {"bogus": 1}}).encode()),
                 400, "invalid-spec")
    assert_error(*raw(daemon, "POST", "/v1/clusters", json.dumps({"spec": {}, "name": "Bad Name!"}).encode()),
                 400, "invalid-spec")
    assert_error(*raw(daemon, "POST", "/v1/clusters/ghost/scale", b'{"n_workers": "many"}'), 400, "bad-request")
    assert_error(*raw(daemon, "DELETE", "/v1/clusters/ghost"), 404, "cluster-not-found")
    assert_error(*raw(daemon, "GET", "/v1/clusters/ghost/logs?tail=x"), 400, "bad-request")
    assert_error(*raw(daemon, "POST", "/v1/clusters", b"x" * (2 << 20), {}), 413, "body-too-large")
    # the client library re-raises the daemon's error class
    with pytest.raises(ClusterNotFound):
        daemon.client().delete_cluster("ghost")
    with pytest.raises(SpecError):
        daemon.client().create_cluster({"worker_memory": "lots"})
    assert daemon.client().health()["status"] == "ok"
    assert daemon.proc.poll() is None


def test_second_daemon_refuses_and_names_the_socket(daemon: Daemon) -> None:
    second = subprocess.run([sys.executable, "-m", "reccd"], env=daemon.env, capture_output=True, text=True,
                            timeout=60)
    assert second.returncode != 0
    assert "already running" in second.stderr and str(daemon.socket) in second.stderr
    assert "Traceback" not in second.stderr
    assert daemon.client().health()["pid"] == daemon.proc.pid  # the live daemon was not disturbed


def test_stale_socket_is_replaced(recc_dirs) -> None:
    d = Daemon(recc_dirs)
    d.socket.parent.mkdir(mode=0o700, parents=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(d.socket))  # bound but never listening: what a crashed daemon leaves
    stale.close()
    assert d.socket.exists()
    try:
        d.start()
        assert d.client().health()["pid"] == d.proc.pid
        assert "stale socket" in d.log
    finally:
        d.cleanup()


@pytest.mark.parametrize("problem", ["open-to-others", "someone-elses"])
def test_insecure_runtime_folder_is_refused(recc_dirs, problem: str) -> None:
    runtime = recc_dirs["RECC_RUNTIME_DIR"]
    os.makedirs(runtime, mode=0o700)
    if problem == "open-to-others":
        os.chmod(runtime, 0o777)
        expected = "open to other users"
    else:
        if os.getuid() != 0:
            pytest.fail("this test needs root to give a folder to another user (CI runs as root)")
        os.chown(runtime, 65534, 65534)
        expected = "belongs to uid 65534"
    d = Daemon(recc_dirs)
    out = subprocess.run([sys.executable, "-m", "reccd"], env=d.env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert expected in out.stderr and "Traceback" not in out.stderr
    assert not d.socket.exists()


def test_client_without_daemon_says_how_to_start_one(recc_dirs) -> None:
    with pytest.raises(DaemonUnavailable) as err:
        DaemonClient.connect(start=False)
    assert "No RECC daemon at" in err.value.message and "reccd" in (err.value.hint or "")


def test_library_starts_the_daemon_on_demand_and_stop_removes_it(recc_dirs) -> None:
    client = DaemonClient.connect(start=True, quiet=True)
    try:
        pid = client.health()["pid"]
        assert pid != os.getpid()
    finally:
        out = subprocess.run([sys.executable, "-m", "recc.cli", "daemon", "stop"], capture_output=True, text=True,
                             timeout=90)
    assert out.returncode == 0, out.stderr
    assert not client.is_alive()
    # the daemon was this process's child: once stopped it is reaped, not left a zombie whose pid looks alive
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid):
        assert time.monotonic() < deadline, f"reccd {pid} is {psutil.Process(pid).status()} after its stop"
        time.sleep(0.05)


def _listing(daemon: Daemon, etag: str | None = None) -> tuple[int, str | None, bytes]:
    """GET /v1/clusters, conditional on ``etag``: status, ETag and body."""
    conn = _UnixHTTPConnection(str(daemon.socket), 30)
    try:
        conn.request("GET", "/v1/clusters", headers={"If-None-Match": etag} if etag else {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("ETag"), resp.read()
    finally:
        conn.close()


def test_listing_etag_answers_304_until_a_cluster_comes_or_goes(recc_dirs) -> None:
    d = Daemon(recc_dirs)
    d.env["RECC_LOCAL_SPARES"] = "0"  # no warm spares: this test needs one small cluster, not their imports
    d.start()
    try:
        status, etag, body = _listing(d)
        assert status == 200 and etag and json.loads(body) == {"clusters": []}
        assert _listing(d, etag) == (304, etag, b"")  # unchanged: the client keeps what it has
        library = d.client()
        assert library.list_clusters() == [] and library.list_clusters() == []  # the second one is a 304

        library.create_cluster({"n_workers": 1, "worker_memory": "1GiB"}, name="tagged")
        status, created_tag, body = _listing(d, etag)
        assert status == 200 and created_tag != etag
        [listed] = json.loads(body)["clusters"]
        assert listed["name"] == "tagged"
        # nothing in the bytes moves with the clock (the tag would change every second): the cost comes as
        # an accrual the library extrapolates, the age from created_at
        assert "age_seconds" not in listed and "accrued_cost" not in listed and set(listed["accrual"]) == {
            "cost", "at", "per_hour"}
        rows = library.list_clusters()  # its cached listing is the empty one: it must not be reused
        assert [c["name"] for c in rows] == ["tagged"]
        assert rows[0]["accrued_cost"] == 0.0 and 0 <= rows[0]["age_seconds"] < 60
        rows[0]["name"] = "changed by the caller"
        assert [c["name"] for c in library.list_clusters()] == ["tagged"]  # callers get fresh rows

        library.delete_cluster("tagged")
        status, deleted_tag, body = _listing(d, created_tag)
        assert status == 200 and deleted_tag != created_tag and json.loads(body) == {"clusters": []}
        assert deleted_tag == etag  # the same listing as at the start: the tag names the content
        assert library.list_clusters() == []
    finally:
        d.cleanup()
