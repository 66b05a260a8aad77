"""End to end: a real daemon, real TLS Dask processes, the tunnel, the library and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psutil
import pytest
from distributed.comm import connect

from recc import RECCCluster, RSHClient
from reccd.tls import client_security, make_cluster_tls

pytestmark = pytest.mark.slow


def recc(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "recc.cli", *args], capture_output=True, text=True, timeout=180,
                          env=env)


def cluster_processes(name: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(f"/{name}/" in part or part.endswith(f"/{name}") for part in proc.info["cmdline"] or []):
            found.append(proc)
    return found


def wait_for(predicate, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def refused(address: str, security=None) -> bool:
    import asyncio

    async def attempt() -> bool:
        args = security.get_connection_args("client") if security else {}
        try:
            comm = await connect(address, timeout=3, **args)
        except (OSError, TimeoutError):
            return True
        try:
            await comm.write({"op": "identity"})
            await asyncio.wait_for(comm.read(), 3)
        except Exception:  # noqa: BLE001 - any failure to talk is a refusal
            return True
        finally:
            comm.abort()
        return False

    return asyncio.run(attempt())


@pytest.mark.parametrize("spares", ["2"])  # the default daemon: its scheduler and workers come from warm spares
def test_cluster_through_the_daemon_end_to_end(daemon) -> None:
    cluster = RECCCluster("local", n_workers=2, quiet=True)
    name = cluster.name
    try:
        address = cluster.scheduler_address
        assert address.startswith("tls://127.0.0.1:")
        assert cluster.cost_per_hour == 0.0
        assert len(cluster_processes(name)) >= 3  # scheduler + 2 workers (plus their nannies' children)

        with RSHClient(cluster) as client:
            assert client.submit(sum, [1, 2, 3]).result() == 6
            assert len(client.scheduler_info()["workers"]) == 2

            # the listing shows it, with its endpoint and cost
            ls = recc("ls", "--json")
            assert ls.returncode == 0, ls.stderr
            [row] = json.loads(ls.stdout)
            assert row["name"] == name and row["status"] == "running" and row["provider"] == "local"
            assert row["endpoints"]["scheduler"] == address and row["cost_per_hour"] == 0.0
            assert row["tunnel"]["state"] in ("up", "idle", "connecting")
            assert "key" not in json.dumps(row["spec"]).lower() or "BEGIN" not in ls.stdout

            # nobody without the cluster's client certificate gets in
            port = address.rsplit(":", 1)[1]
            assert refused(f"tcp://127.0.0.1:{port}")
            assert refused(address, client_security(make_cluster_tls("someone-else")))
            assert not refused(address, cluster.security)

            # another process attaches by name
            script = (f"from recc import RSHClient\n"
                      f"with RSHClient({name!r}) as c:\n"
                      f"    print(c.submit(lambda: 41 + 1).result())\n")
            other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
            assert other.returncode == 0, other.stderr
            assert other.stdout.strip().splitlines()[-1] == "42"

            # scale 2 -> 3 -> 1, seen by the scheduler
            cluster.scale(3)
            client.wait_for_workers(3, timeout=60)
            cluster.scale(1)
            wait_for(lambda: len(client.scheduler_info()["workers"]) == 1, 60, "scale down to 1")
            assert client.submit(lambda x: x * 2, 21).result() == 42

            # logs are retrievable from the daemon
            logs = recc("logs", name)
            assert logs.returncode == 0 and "[scheduler]" in logs.stdout and "Scheduler at" in logs.stdout

            # the dashboard answers only with its token
            link = cluster.dashboard_link
            base = link.split("/status")[0]
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(f"{base}/health", timeout=10)
            assert err.value.code == 403
            token = link.split("token=")[1]
            port_d = base.rsplit(":", 1)[1]
            req = urllib.request.Request(f"{base}/health", headers={"Cookie": f"recc_dash_{port_d}={token}"})
            assert urllib.request.urlopen(req, timeout=10).read() == b"ok"
    finally:
        cluster.close()
    wait_for(lambda: not cluster_processes(name), 20, "cluster processes to exit")
    ls = json.loads(recc("ls", "--json").stdout)
    assert ls == []
    gone = json.loads(recc("ls", "--all", "--json").stdout)
    assert [(c["status"], c["deleted_by"]) for c in gone if c["name"] == name] == [("deleted", "user")]
    # the tombstone keeps the last log lines, readable after the cluster is gone
    logs = recc("logs", name)
    assert logs.returncode == 0 and "[scheduler]" in logs.stdout and "Scheduler at" in logs.stdout
    history = recc("ls", "--all")
    assert name in history.stdout and "deleted by the user" in history.stdout


def test_recc_cluster_env_switches_the_same_script(daemon) -> None:
    script = ("from recc import RSHClient\n"
              "with RSHClient() as c:\n"
              "    print(type(c.cluster).__name__, c.submit(sum, [20, 22]).result())\n")
    env = dict(os.environ)
    env.pop("RECC_CLUSTER", None)
    local = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert local.returncode == 0, local.stderr
    assert local.stdout.split() == ["LocalCluster", "42"]
    assert daemon.client().list_clusters() == []  # nothing set: stays in-process

    remote = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180,
                            env=dict(env, RECC_CLUSTER="local"))
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout.split()[-2:] == ["RECCCluster", "42"]
    assert daemon.client().list_clusters() == []  # the template's cluster went with its client

    up = recc("up", "local", "--workers", "1", "--name", "shared", "--json")
    assert up.returncode == 0, up.stderr
    try:
        attach = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                                env=dict(env, RECC_CLUSTER="shared"))
        assert attach.returncode == 0, attach.stderr
        assert [c["name"] for c in daemon.client().list_clusters()] == ["shared"]  # attaching does not delete
    finally:
        down = recc("down", "shared")
    assert down.returncode == 0, down.stderr
    assert daemon.client().list_clusters() == []


def test_stopping_the_daemon_deletes_its_clusters(daemon) -> None:
    up = recc("up", "local", "--workers", "1", "--name", "orphan", "--json")
    assert up.returncode == 0, up.stderr
    assert cluster_processes("orphan")
    assert daemon.stop() == 0
    wait_for(lambda: not cluster_processes("orphan"), 20, "cluster processes to exit")


def test_worker_plugin_gives_workers_the_spec_environment(daemon, tmp_path) -> None:
    (tmp_path / "researchmod.py").write_text("def answer():\n    return 'from source path'\n")
    with RECCCluster("local", n_workers=1, quiet=True, env={"RECC_TEST_VALUE": "seen"},
                     source_paths=[str(tmp_path)]) as cluster:
        with RSHClient(cluster) as client:
            # a lambda, not os.environ.get: a bound method would carry this process's environ along
            assert client.submit(lambda key: os.environ.get(key), "RECC_TEST_VALUE").result() == "seen"

            def use_module() -> str:
                import researchmod

                return researchmod.answer()

            assert client.submit(use_module).result() == "from source path"
