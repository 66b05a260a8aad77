"""Spend safety with real daemons and real Dask processes: crashes, heartbeats, harvest, logout, jobs, costs."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from recc.errors import BadRequest, ClusterNotFound, SpecError
from tests.harness import Daemon

pytestmark = pytest.mark.slow

FAST = {"RECC_HEARTBEAT_INTERVAL": "0.5", "RECC_BUDGET_INTERVAL": "0.5"}


def processes_under(folder: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if any(folder in part for part in proc.info["cmdline"] or []):
            found.append(proc)
    return found


def wait_for(predicate, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - start


def start(dirs, **env: str) -> Daemon:
    d = Daemon(dirs)
    d.env.update(FAST, **env)
    return d.start()


def spec(**fields):
    return {"template": "local", "provider": "local", "n_workers": 1, "worker_memory": "1GiB", **fields}


def wait_running(d: Daemon, name: str, timeout: float = 60) -> dict:
    def running() -> bool:
        return d.client().get_cluster(name)["status"] == "running"

    wait_for(running, timeout, f"{name} to run")
    return d.client().get_cluster(name)


class Events:
    """Collects the daemon's events in a thread."""

    def __init__(self, d: Daemon) -> None:
        self.stream = d.client().events()
        self.items: list[dict] = []
        self.thread = threading.Thread(target=lambda: self.items.extend(self.stream), daemon=True)
        self.thread.start()

    def of(self, kind: str, cluster: str | None = None) -> list[dict]:
        return [e for e in list(self.items) if e.get("type") == kind and (cluster is None or e.get("cluster") == cluster)]

    def close(self) -> None:
        self.stream.close()


# -- crash at every step, then reconcile -------------------------------------------------------

FAULTS = [f"create:{where}={step}:exit" for step in range(1, 6) for where in ("before-journal", "after-step")]


@pytest.mark.parametrize("fault", FAULTS)
def test_a_crash_at_any_create_step_leaves_nothing_after_restart(recc_dirs, fault) -> None:
    d = Daemon(recc_dirs)
    d.env.update(FAST, RECC_FAULT=fault)
    d.start()
    clusters = str(Path(recc_dirs["RECC_DATA_DIR"]) / "clusters")
    try:
        try:
            d.client().create_cluster(spec(n_workers=2), "crashy")
        except Exception:  # noqa: BLE001 - the daemon may die before it answers
            pass
        assert d.proc.wait(60) == 137  # died hard at the fault point
        d.proc.stdout.close()
        d.env.pop("RECC_FAULT")
        d.start()  # reconciles before it says it is up
        left = [" ".join(p.cmdline()) for p in processes_under(clusters)]
        assert left == [], f"a scheduler or worker survived the restart\n{d.log}"
        assert d.client().list_clusters() == []
        [row] = d.client().list_clusters(include_gone=True)
        assert row["status"] == "deleted" and row["deleted_by"] == "reconcile"
        events = d.client().get_cluster(row["id"])["events"]
        assert any("removed after the daemon restarted" in e["message"] for e in events)
    finally:
        d.cleanup()


def test_a_running_cluster_is_adopted_again_after_a_crash(recc_dirs) -> None:
    d = start(recc_dirs)
    try:
        d.client().create_cluster(spec(), "survivor")
        wait_running(d, "survivor")
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(30)
        d.proc.stdout.close()
        d.start()
        info = d.client().get_cluster("survivor")
        assert info["status"] == "running" and info["tunnel"]["state"] != "down"
        assert any("adopted again" in e["message"] for e in info["events"])
    finally:
        d.cleanup()
    assert processes_under(str(Path(recc_dirs["RECC_DATA_DIR"]) / "clusters")) == []


def test_a_corrupt_journal_row_is_reported_and_cleaned_up(recc_dirs) -> None:
    d = Daemon(recc_dirs)
    d.env.update(FAST, RECC_FAULT="create:after-step=3:exit")
    d.start()
    try:
        try:
            d.client().create_cluster(spec(), "damaged")
        except Exception:  # noqa: BLE001
            pass
        assert d.proc.wait(60) == 137
        d.proc.stdout.close()
        db = sqlite3.connect(Path(recc_dirs["RECC_DATA_DIR"]) / "state.db")
        db.execute("UPDATE journal SET checkpoint='{not json' ")
        db.execute("UPDATE clusters SET checkpoint='{broken'")
        db.commit()
        db.close()
        d.env.pop("RECC_FAULT")
        d.start()
        assert processes_under(str(Path(recc_dirs["RECC_DATA_DIR"]) / "clusters")) == []
        [row] = d.client().list_clusters(include_gone=True)
        assert row["status"] == "deleted"
        assert any(e["kind"] == "cluster.corrupt" for e in d.client().get_cluster(row["id"])["events"])
    finally:
        d.cleanup()


# -- heartbeats and the dead-man switch --------------------------------------------------------

def test_a_frozen_daemon_stops_paying_within_the_ttl(recc_dirs) -> None:
    d = start(recc_dirs)
    clusters = str(Path(recc_dirs["RECC_DATA_DIR"]) / "clusters")
    try:
        d.client().create_cluster(spec(heartbeat_ttl=4), "deadman")
        wait_running(d, "deadman")
        assert processes_under(clusters)
        os.kill(d.proc.pid, signal.SIGSTOP)  # no parent dies: only the missing heartbeats can tell
        try:
            took = wait_for(lambda: not processes_under(clusters), 4 + 20, "the cluster to stop itself")
        finally:
            os.kill(d.proc.pid, signal.SIGCONT)
        print(f"cluster gone {took:.1f}s after the daemon froze (ttl 4s)")
    finally:
        d.cleanup()


def test_heartbeats_keep_a_cluster_alive_past_its_ttl(recc_dirs) -> None:
    d = start(recc_dirs)
    try:
        d.client().create_cluster(spec(heartbeat_ttl=2), "beating")
        wait_running(d, "beating")
        time.sleep(8)  # four TTLs
        info = d.client().get_cluster("beating")
        assert info["status"] == "running" and info["workers"]["ready"] == 1
    finally:
        d.cleanup()


# -- idle harvest ------------------------------------------------------------------------------

HOLDER = """
import sys, time, warnings
from recc import RECCCluster, RSHClient
warnings.simplefilter("always")
with RECCCluster("local", n_workers=1, quiet=True, name="idle", idle_timeout=6, harvest_warning=4,
                 no_client_timeout=None) as cluster:
    with RSHClient(cluster) as client:
        client.submit(sum, [1, 2]).result()
        print("ready", flush=True)
        deadline = time.time() + 60
        while not cluster.harvest_warnings and time.time() < deadline:
            time.sleep(0.2)
        print("warned" if cluster.harvest_warnings else "not warned", flush=True)
        sys.stdin.readline()  # the test says when to let go
"""


def test_idle_harvest_warns_then_extend_postpones_then_harvests(daemon) -> None:
    daemon.stop()
    d = start(daemon.dirs)
    events = Events(d)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=d.env)
    try:
        assert holder.stdout.readline().strip() == "ready"
        # a connected but idle client does not keep the cluster: the warning comes
        assert holder.stdout.readline().strip() == "warned"
        assert events.of("cluster.harvest-warning", "idle")
        d.client().extend("idle", minutes=0.2)  # 12 s more
        time.sleep(5)
        assert d.client().get_cluster("idle")["status"] == "running", "extend did not postpone the harvest"
        wait_for(lambda: d.client().list_clusters() == [], 40, "the harvest")
        [gone] = d.client().list_clusters(include_gone=True)
        assert gone["deleted_by"] == "harvest" and "no task activity" in gone["deleted_reason"], {k: gone[k] for k in ("status", "deleted_by", "deleted_reason", "error")}
        holder.stdin.write("\n")
        holder.stdin.flush()
        _, err = holder.communicate(timeout=60)
        assert "will be deleted in" in err  # the script holding the client saw the warning
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.communicate()
        events.close()
        d.cleanup()


def test_a_busy_client_prevents_the_harvest(recc_dirs) -> None:
    d = start(recc_dirs)
    try:
        d.client().create_cluster(spec(idle_timeout=4, harvest_warning=2, no_client_timeout=None), "busy")
        wait_running(d, "busy")
        from recc import RSHClient

        with RSHClient("busy") as client:
            future = client.submit(time.sleep, 10, pure=False)
            time.sleep(9)
            assert d.client().get_cluster("busy")["status"] == "running"
            future.result()
        wait_for(lambda: d.client().list_clusters() == [], 30, "the harvest once idle")
    finally:
        d.cleanup()


REATTACH = """
from recc import RSHClient
with RSHClient("shared") as c:
    print(c.submit(sum, [1, 1]).result())
"""


def test_a_client_that_reattaches_in_time_keeps_the_cluster(recc_dirs) -> None:
    d = start(recc_dirs)
    try:
        # 15 s: a gap is the 3 s sleep plus a new interpreter importing distributed, slow on a loaded machine
        d.client().create_cluster(spec(no_client_timeout=15, harvest_warning=2, idle_timeout=None), "shared")
        wait_running(d, "shared")
        for _ in range(3):  # a kernel restarting: gone for a few seconds each time, within the 15 s
            out = subprocess.run([sys.executable, "-c", REATTACH], capture_output=True, text=True, env=d.env,
                                 timeout=60)
            assert out.returncode == 0 and out.stdout.strip() == "2", out.stderr
            time.sleep(3)
        assert d.client().get_cluster("shared")["status"] == "running"
        wait_for(lambda: d.client().list_clusters() == [], 60, "the no-client harvest")
        [gone] = d.client().list_clusters(include_gone=True)
        assert gone["deleted_by"] == "harvest" and "client" in gone["deleted_reason"]
    finally:
        d.cleanup()


# -- logout, jobs ------------------------------------------------------------------------------

def test_sigterm_deletes_ad_hoc_clusters_and_keeps_persistent_ones(recc_dirs) -> None:
    d = start(recc_dirs)
    try:
        for name, persist in (("adhoc-a", False), ("adhoc-b", False), ("keeper", True)):
            d.client().create_cluster(spec(persist=persist), name)
        for name in ("adhoc-a", "adhoc-b", "keeper"):
            wait_running(d, name)
        base = Path(recc_dirs["RECC_DATA_DIR"]) / "clusters" / "local"
        started = time.monotonic()
        assert d.stop(timeout=30) == 0
        assert time.monotonic() - started < 10 + 5
        assert not processes_under(str(base / "adhoc-a")) and not processes_under(str(base / "adhoc-b"))
        assert processes_under(str(base / "keeper")), "the persistent cluster did not survive logout"
        d.proc.stdout.close()
        d.start()  # back at login: the persistent cluster is adopted again
        assert [c["name"] for c in d.client().list_clusters()] == ["keeper"]
    finally:
        if d.proc.poll() is None:
            d.client().delete_cluster("keeper")  # a persistent cluster survives a daemon stop by design
        d.cleanup()
    assert not processes_under(str(Path(recc_dirs["RECC_DATA_DIR"]) / "clusters"))


JOB = """
import time
from recc import RECCCluster
cluster = RECCCluster("local", n_workers=1, quiet=True, name="nightly")
print("up", flush=True)
time.sleep(600)
"""


def test_a_killed_job_s_private_daemon_removes_its_cluster(recc_dirs) -> None:
    env = {**os.environ, **FAST, "RECC_JOB_ID": "nightly-risk"}
    job = subprocess.Popen([sys.executable, "-c", JOB], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=env)
    try:
        assert job.stdout.readline().strip() == "up", job.stderr.read()
        jobs = Path(recc_dirs["RECC_DATA_DIR"]) / "jobs"
        assert processes_under(str(jobs)), "the job's cluster should run under the job daemon's folder"
        job.kill()
        job.wait()
        wait_for(lambda: not processes_under(str(jobs)), 30, "the job daemon to delete the job's cluster")
        wait_for(lambda: not [p for p in psutil.process_iter(["cmdline"])
                              if "--job-parent" in (p.info["cmdline"] or [])
                              and str(job.pid) in (p.info["cmdline"] or [])], 20, "the job daemon to exit")
    finally:
        if job.poll() is None:
            job.kill()
        job.communicate()


# -- costs and budgets, bad input -----------------------------------------------------------------

def test_cost_accrues_and_a_budget_threshold_alerts_once(recc_dirs) -> None:
    config = Path(recc_dirs["RECC_CONFIG_DIR"])
    config.mkdir(parents=True)
    # $36/h is a cent a second: a $0.05 budget crosses 50% after ~2.5 s and 100% after ~5 s
    (config / "config.yaml").write_text("budgets:\n  user: {monthly: 0.05, thresholds: [50, 100]}\n")
    d = start(recc_dirs, RECC_LOCAL_PRICE_PER_HOUR="36")
    events = Events(d)
    try:
        d.client().create_cluster(spec(), "pricey")
        wait_running(d, "pricey")
        wait_for(lambda: len(events.of("budget.threshold")) >= 2, 30, "both budget alerts")
        time.sleep(2)
        assert sorted(e["data"]["percent"] for e in events.of("budget.threshold")) == [50, 100]
        d.client().delete_cluster("pricey")
        [row] = d.client().costs("cluster")
        [gone] = d.client().list_clusters(include_gone=True)
        seconds = gone["deleted_at"] - gone["created_at"]
        assert 0 < row["cost"] <= seconds * 0.01 + 0.01
        assert gone["total_cost"] == pytest.approx(row["cost"], abs=0.01)
    finally:
        events.close()
        d.cleanup()


def test_bad_input_is_refused_clearly(daemon) -> None:
    client = daemon.client()
    with pytest.raises(ClusterNotFound):
        client.extend("ghost", 10)
    with pytest.raises(SpecError, match="idle_timeout"):
        client.create_cluster(spec(idle_timeout=-5))
    with pytest.raises(SpecError, match="30 days"):
        client.create_cluster(spec(heartbeat_ttl="400 days"))
    with pytest.raises(SpecError, match="duration"):
        client.create_cluster(spec(no_client_timeout="soon"))
    client.create_cluster(spec(), "real")
    wait_running(daemon, "real")
    with pytest.raises(BadRequest):
        client.extend("real", -1)
    with pytest.raises(BadRequest):
        client.extend("real", 10**9)
    assert client.list_clusters()[0]["name"] == "real"


def test_the_cost_guard_needs_a_confirmation(recc_dirs) -> None:
    config = Path(recc_dirs["RECC_CONFIG_DIR"])
    config.mkdir(parents=True)
    (config / "config.yaml").write_text("max_cost_per_hour: 1\n")
    d = start(recc_dirs, RECC_LOCAL_PRICE_PER_HOUR="5")
    try:
        from recc.errors import CostNotConfirmed

        with pytest.raises(CostNotConfirmed) as err:
            d.client().create_cluster(spec(), "dear")
        assert "$5.00/h" in err.value.message and "--yes" in err.value.hint
        assert d.client().list_clusters(include_gone=True) == []  # nothing was made
        d.client().create_cluster(spec(), "dear", confirm_cost=True)
        wait_running(d, "dear")
    finally:
        d.cleanup()
