"""Spend safety with real daemons and real Dask processes: crashes, heartbeats, harvest, logout, jobs, costs."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from recc.errors import BadRequest, ClusterNotFound, SpecError
from tests.harness import Daemon, make_dirs

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
# The crashes run as chains, as in tests/test_eks_faults.py: each restart reconciles the previous crash and
# then makes the next cluster with the next fault (N crashes cost N+1 daemon starts, not 2N). Chains run
# at once, each in its own folders, so no daemon can clean up after another's crash and hide a leftover.
CRASH_CHAINS = 2  # FAULTS alternate: one chain crashes before each journal write, the other after each step


def crash_chain(faults: list[str]) -> list[str]:
    """Crash at each fault in turn; after each restart nothing of the previous crash may be left. Problems found."""
    dirs = make_dirs()
    clusters = str(Path(dirs["RECC_DATA_DIR"]) / "clusters")
    d = Daemon(dirs)
    d.env.update(FAST)
    problems: list[str] = []
    previous: tuple[str, str] | None = None  # (cluster, fault)
    try:
        for i, fault in enumerate([*faults, None]):
            where = f"the restart after {previous[1]}" if previous else "the first start"
            try:
                if fault:
                    d.env["RECC_FAULT"] = fault
                else:
                    d.env.pop("RECC_FAULT", None)
                d.start()  # reconciles the previous crash before it says it is up
                if previous is not None:
                    name, why = previous
                    left = [" ".join(p.cmdline()) for p in processes_under(clusters)]
                    if left:
                        problems.append(f"{why}: a scheduler or worker survived the restart: {left}\n{d.log}")
                    if (live := d.client().list_clusters()) != []:
                        problems.append(f"{why}: clusters still listed after the restart: {live}")
                    rows = [r for r in d.client().list_clusters(include_gone=True) if r["name"] == name]
                    if [(r["status"], r["deleted_by"]) for r in rows] != [("deleted", "reconcile")]:
                        problems.append(f"{why}: rows {rows}")
                    elif not any("removed after the daemon restarted" in e["message"]
                                 for e in d.client().get_cluster(rows[0]["id"])["events"]):
                        problems.append(f"{why}: no 'removed after the daemon restarted' event")
                if fault is None:
                    break
                name, where = f"crash{i}", fault
                try:
                    d.client().create_cluster(spec(n_workers=2), name)
                except Exception:  # noqa: BLE001 - the daemon may die before it answers
                    pass
                try:
                    code = d.proc.wait(60)
                except subprocess.TimeoutExpired:
                    code = None
                    d.stop()
                d.proc.stdout.close()
                if code != 137:
                    problems.append(f"{fault}: the daemon did not die hard at the fault point (exit {code})\n{d.log}")
                previous = (name, fault)
            except Exception as exc:  # noqa: BLE001 - name the fault, then stop this chain
                problems.append(f"{where}: {type(exc).__name__}: {exc}")
                break
    finally:
        d.cleanup()
    return problems


def test_a_crash_at_any_create_step_leaves_nothing_after_restart() -> None:
    with ThreadPoolExecutor(CRASH_CHAINS) as pool:
        results = list(pool.map(crash_chain, [FAULTS[i::CRASH_CHAINS] for i in range(CRASH_CHAINS)]))
    problems = [p for chain in results for p in chain]
    assert problems == [], "\n\n".join(problems)


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

TTL = 3  # seconds: heartbeats every 0.5 s (RECC_HEARTBEAT_INTERVAL) renew it several times a TTL


def test_heartbeats_keep_a_cluster_alive_past_its_ttl_and_a_frozen_daemon_stops_paying(recc_dirs) -> None:
    """One cluster for both halves: the daemon's heartbeats keep it alive for two TTLs, then the daemon
    freezes and the cluster stops itself within the TTL."""
    d = start(recc_dirs)
    clusters = str(Path(recc_dirs["RECC_DATA_DIR"]) / "clusters")
    try:
        d.client().create_cluster(spec(heartbeat_ttl=TTL), "deadman")
        wait_running(d, "deadman")
        # the TTL runs from the scheduler's start (the idle facts' started_at, in the daemon's clock)
        wait_for(lambda: d.client().get_cluster("deadman")["idle"] is not None, 30, "the first heartbeat's facts")
        started = d.client().get_cluster("deadman")["idle"]["started_at"]
        time.sleep(max(0.0, started + 2 * TTL - time.time()))  # two TTLs: it was renewed again and again
        info = d.client().get_cluster("deadman")
        assert info["status"] == "running" and info["workers"]["ready"] == 1, "heartbeats did not keep it alive"
        assert processes_under(clusters)
        os.kill(d.proc.pid, signal.SIGSTOP)  # no parent dies: only the missing heartbeats can tell
        try:
            took = wait_for(lambda: not processes_under(clusters), TTL + 20, "the cluster to stop itself")
        finally:
            os.kill(d.proc.pid, signal.SIGCONT)
        print(f"cluster gone {took:.1f}s after the daemon froze (ttl {TTL}s)")
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


def test_idle_harvest_warns_then_extend_postpones_then_harvests(recc_dirs) -> None:
    d = start(recc_dirs)
    events = Events(d)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=d.env)
    try:
        assert holder.stdout.readline().strip() == "ready"
        ready_at = time.time()
        # a connected but idle client does not keep the cluster: the warning comes
        assert holder.stdout.readline().strip() == "warned"
        assert events.of("cluster.harvest-warning", "idle")
        d.client().extend("idle", minutes=0.2)  # 12 s more
        # past the deadline it had without the extension (from its last task; under load the warning can come
        # before that task, while the idle clock still ran from the scheduler's start) and a heartbeat after it
        wait_for(lambda: d.client().get_cluster("idle")["idle"]["observed_at"] > ready_at + 1, 30,
                 "idle facts from after the task")
        idle = d.client().get_cluster("idle")["idle"]
        time.sleep(max(0.0, idle["last_activity"] + 6 + 1.5 - time.time()))
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
    # imported before the cluster starts: its idle clock runs from the scheduler's start until the first task
    from recc import RSHClient

    d = start(recc_dirs)
    submitted = threading.Event()

    def hold_while_starting() -> None:
        """Until the task is in: 3 s extensions, renewed every 0.5 s. A start (or connect) slower than the
        idle timeout, on a loaded machine, could otherwise harvest the cluster before its first task. The last
        one ends before the idle timeout after the submit runs out, so from then on only the task keeps it."""
        client = d.client()
        while not submitted.wait(0.5):
            try:
                client.extend("busy", minutes=0.05)
            except Exception:  # noqa: BLE001 - not there yet, or already gone: the checks below say which
                pass

    holder = threading.Thread(target=hold_while_starting, daemon=True)
    try:
        d.client().create_cluster(spec(idle_timeout=4, harvest_warning=2, no_client_timeout=None), "busy")
        holder.start()
        wait_running(d, "busy")
        with RSHClient("busy") as client:
            future = client.submit(time.sleep, 8, pure=False)  # twice the idle timeout
            submitted.set()
            holder.join()
            while not future.done():  # running all along, to the task's end (>= 8 s after it was submitted)
                assert d.client().get_cluster("busy")["status"] == "running", "harvested while busy"
                time.sleep(0.25)
            future.result()
        wait_for(lambda: d.client().list_clusters() == [], 30, "the harvest once idle")
    finally:
        submitted.set()
        d.cleanup()


REATTACH = """
import os, sys
from recc import RSHClient  # imported once, before the cluster starts: a reattach costs a fork and a connect
print("imported", flush=True)
for line in sys.stdin:  # each "go": a new kernel process attaches, computes and ends
    if line.strip() != "go":
        break
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with RSHClient("shared") as c:
                print(c.submit(sum, [1, 1]).result(), flush=True)
            code = 0
        finally:
            os._exit(code)
    print("exit", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""
NO_CLIENT_TIMEOUT = 6  # GAP plus a reconnect stays well inside it; the harvest after it is what the test waits for
# Seconds from one kernel's end to the next one's start; that one then connects (a fork and a connect, no
# imports: well under a second, a few seconds on a loaded machine), well within the timeout.
GAP = 2


def test_a_client_that_reattaches_in_time_keeps_the_cluster(recc_dirs) -> None:
    d = Daemon(recc_dirs)
    d.env.update(FAST)
    kernels = subprocess.Popen([sys.executable, "-c", REATTACH], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=d.env)

    def finish() -> str:
        """End the kernels' host (its stdin closes); its stderr."""
        if kernels.returncode is not None:
            return ""
        try:
            return kernels.communicate(timeout=60)[1]
        except subprocess.TimeoutExpired:
            kernels.kill()
            return kernels.communicate()[1]

    def attach() -> list[str]:
        """One kernel's run: the host's output up to its "exit <code>" line."""
        kernels.stdin.write("go\n")
        kernels.stdin.flush()
        watchdog = threading.Timer(60, kernels.kill)  # a hang detector
        watchdog.start()
        try:
            out: list[str] = []
            while not out or not out[-1].startswith("exit"):
                line = kernels.stdout.readline()
                if not line:
                    break
                out.append(line.strip())
            return out
        finally:
            watchdog.cancel()

    try:
        d.start()  # while the kernels' interpreter imports
        assert kernels.stdout.readline().strip() == "imported", finish()
        d.client().create_cluster(spec(no_client_timeout=NO_CLIENT_TIMEOUT, harvest_warning=2, idle_timeout=None),
                                  "shared")
        wait_running(d, "shared")
        attached = 0
        first_left = 0.0
        # a kernel restarting: gone for a few seconds each time, within the timeout; at least three times, and on
        # until the timeout has passed since the first kernel ended, so a clock the reattaches did not restart
        # would have harvested the cluster by then
        while attached < 3 or time.monotonic() - first_left < NO_CLIENT_TIMEOUT + 2:
            if attached:
                time.sleep(GAP)
            out = attach()
            assert out == ["2", "exit 0"], (out, finish())
            attached += 1
            first_left = first_left or time.monotonic()
        assert d.client().get_cluster("shared")["status"] == "running"
        wait_for(lambda: d.client().list_clusters() == [], 60, "the no-client harvest")
        [gone] = d.client().list_clusters(include_gone=True)
        assert gone["deleted_by"] == "harvest" and "client" in gone["deleted_reason"]
    finally:
        finish()
        d.cleanup()


# -- logout, jobs ------------------------------------------------------------------------------

def test_a_crash_adopts_running_clusters_again_and_sigterm_deletes_ad_hoc_ones_but_keeps_persistent_ones(
        recc_dirs) -> None:
    """One daemon and one set of clusters for two checks: after a crash (SIGKILL) the running clusters, ad hoc
    ones too, are adopted again; a SIGTERM (logout) then deletes the ad hoc ones and keeps the persistent one."""
    d = start(recc_dirs)
    try:
        for name, persist in (("adhoc-a", False), ("adhoc-b", False), ("keeper", True)):
            d.client().create_cluster(spec(persist=persist), name)
        for name in ("adhoc-a", "adhoc-b", "keeper"):
            wait_running(d, name)

        # a crash: nobody deletes anything, and the restarted daemon adopts each running cluster again
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(30)
        d.proc.stdout.close()
        d.start()
        for name in ("adhoc-a", "adhoc-b", "keeper"):
            info = d.client().get_cluster(name)
            assert info["status"] == "running" and info["tunnel"]["state"] != "down", (name, info["status"])
            assert any("adopted again" in e["message"] for e in info["events"]), name

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
    # $72/h is two cents a second: a $0.05 budget crosses 50% after ~1.25 s and 100% after ~2.5 s
    (config / "config.yaml").write_text("budgets:\n  user: {monthly: 0.05, thresholds: [50, 100]}\n")
    per_second = 0.02
    d = start(recc_dirs, RECC_LOCAL_PRICE_PER_HOUR=str(per_second * 3600))
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
        assert 0 < row["cost"] <= seconds * per_second + per_second  # at most its lifetime's worth, and a second
        assert gone["total_cost"] == pytest.approx(row["cost"], abs=per_second)
    finally:
        events.close()
        d.cleanup()


def test_the_cost_guard_needs_a_confirmation_and_bad_input_is_refused_clearly(recc_dirs) -> None:
    """Two checks that each needed a daemon and a running cluster, on one of each: the cost guard, then what
    bad input gets (spec errors are refused before the cost guard is consulted)."""
    config = Path(recc_dirs["RECC_CONFIG_DIR"])
    config.mkdir(parents=True)
    (config / "config.yaml").write_text("max_cost_per_hour: 1\n")
    d = start(recc_dirs, RECC_LOCAL_PRICE_PER_HOUR="5")
    try:
        from recc.errors import CostNotConfirmed

        client = d.client()
        with pytest.raises(CostNotConfirmed) as err:
            client.create_cluster(spec(), "dear")
        assert "$5.00/h" in err.value.message and "--yes" in err.value.hint
        assert client.list_clusters(include_gone=True) == []  # nothing was made

        # bad input is refused clearly
        with pytest.raises(ClusterNotFound):
            client.extend("ghost", 10)
        with pytest.raises(SpecError, match="idle_timeout"):
            client.create_cluster(spec(idle_timeout=-5))
        with pytest.raises(SpecError, match="30 days"):
            client.create_cluster(spec(heartbeat_ttl="400 days"))
        with pytest.raises(SpecError, match="duration"):
            client.create_cluster(spec(no_client_timeout="soon"))

        client.create_cluster(spec(), "dear", confirm_cost=True)
        wait_running(d, "dear")
        with pytest.raises(BadRequest):
            client.extend("dear", -1)
        with pytest.raises(BadRequest):
            client.extend("dear", 10**9)
        assert client.list_clusters()[0]["name"] == "dear"
    finally:
        d.cleanup()
