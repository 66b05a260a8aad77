"""`recc harvest` (``python -m reccd.harvester``) with real daemons and real Dask processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from recc.spec import ClusterSpec
from reccd.providers.local import LocalProvider
from reccd.tls import make_cluster_tls
from tests.harness import Daemon
from tests.test_spend_safety import processes_under, spec, wait_running

pytestmark = pytest.mark.slow


def harvesters(*runs: tuple[str, ...]) -> list[subprocess.CompletedProcess]:
    """Run ``recc harvest`` once per argument tuple, all at once (each one starts an interpreter and asks
    every live scheduler, so two dry runs side by side cost about one run, not two)."""
    started: list[subprocess.Popen] = []
    try:
        for args in runs:
            started.append(subprocess.Popen([sys.executable, "-m", "reccd.harvester", *args], stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True, env=dict(os.environ)))
        done = []
        for proc in started:
            out, err = proc.communicate(timeout=120)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
        return done
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def json_result(out: subprocess.CompletedProcess) -> list[dict]:
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    return json.loads(out.stdout)


def harvester(*args: str) -> tuple[list[dict], subprocess.CompletedProcess]:
    [out] = harvesters(("--json", *args))
    return json_result(out), out


def by_name(results: list[dict]) -> dict[str, dict]:
    return {r["name"]: r for r in results}


def row(data: str, name: str, db: str = "state.db") -> dict:
    con = sqlite3.connect(Path(data) / db)
    con.row_factory = sqlite3.Row
    try:
        return dict(con.execute("SELECT * FROM clusters WHERE name=? ORDER BY created_at DESC", (name,)).fetchone())
    finally:
        con.close()


def wait_idle(data: str, name: str, seconds: float, timeout: float = 60) -> None:
    """Until the scheduler of local cluster ``name`` has seen no task activity for ``seconds``, by its own
    idle facts (read without renewing its heartbeat), instead of a fixed sleep."""
    provider = LocalProvider(Path(data) / "clusters" / "local")
    checkpoint = json.loads(row(data, name)["checkpoint"])
    deadline = time.monotonic() + timeout
    while True:
        facts = asyncio.run(provider.idle_facts(name, checkpoint))
        idle = facts.observed_at - facts.last_activity
        if idle >= seconds:
            return
        assert time.monotonic() < deadline, f"{name} still busy: {facts}"  # a hang detector
        time.sleep(min(seconds - idle + 0.1, 1.0))


def test_clusters_a_killed_daemon_left_are_harvested_by_its_rules(recc_dirs) -> None:
    d = Daemon(recc_dirs)
    # Heartbeats a minute apart: the live daemon warns at one beat and harvests at the next, so it cannot
    # harvest "sleepy" itself before the test kills it, however long the two clusters take to start.
    d.env.update(RECC_HEARTBEAT_INTERVAL="60")
    d.start()
    data = recc_dirs["RECC_DATA_DIR"]
    clusters = Path(data) / "clusters" / "local"
    try:
        d.client().create_cluster(spec(idle_timeout=600, heartbeat_ttl=600), "halfdead")
        d.client().create_cluster(spec(idle_timeout=1, harvest_warning=1, heartbeat_ttl=600), "sleepy")
        halfdead = wait_running(d, "halfdead")
        wait_running(d, "sleepy")
        d.proc.send_signal(signal.SIGKILL)  # nobody harvests now
        d.proc.wait(30)
        d.proc.stdout.close()
        assert halfdead["status"] == "running"
        [sched] = [p for p in processes_under(str(clusters / "halfdead")) if "dask_scheduler" in " ".join(p.cmdline())]
        sched.kill()  # its processes may be half dead: the scheduler does not answer
        wait_idle(data, "sleepy", 1 + 0.5)  # past its idle_timeout

        out, table = harvesters(("--json", "--dry-run"), ("--dry-run",))
        results = json_result(out)
        found = by_name(results)
        assert set(found) == {"halfdead", "sleepy"}, results
        sleepy = found["sleepy"]
        assert (sleepy["action"], sleepy["clock"], sleepy["source"], sleepy["deleted"]) == ("harvest", "idle",
                                                                                            "daemon", False)
        assert "no task activity" in sleepy["reason"] and sleepy["seconds_left"] == 0
        assert found["halfdead"]["action"] == "harvest"
        assert found["halfdead"]["reason"] == "the scheduler does not answer"
        # found by its process, not by waiting out the 5 s connect timeout a refused connection costs
        assert "scheduler process is gone" in found["halfdead"]["detail"], found["halfdead"]
        assert processes_under(str(clusters / "sleepy")), "a dry run deleted something"
        assert row(data, "sleepy")["status"] == "running"

        assert table.returncode == 0, table.stderr
        assert table.stdout.split()[:5] == ["NAME", "SOURCE", "ACTION", "CLOCK", "WHY"]
        assert "dry run" in table.stdout

        results, _ = harvester()
        assert all(r["deleted"] and r["error"] is None for r in results), results
        assert processes_under(str(Path(data) / "clusters")) == []
        for name in ("sleepy", "halfdead"):
            gone = row(data, name)
            assert (gone["status"], gone["deleted_by"]) == ("deleted", "recc harvest"), gone
            assert gone["deleted_at"] and gone["deleted_reason"].startswith("harvested: ")
        assert "no task activity" in row(data, "sleepy")["deleted_reason"]

        d.start()  # a daemon started later agrees: nothing is left to run, and the history says who
        assert d.client().list_clusters() == []
        info = d.client().get_cluster("sleepy")
        assert info["deleted_by"] == "recc harvest"
        assert any(e["kind"] == "cluster.harvested" and "recc harvest" in e["message"] for e in info["events"])
        assert harvester()[0] == []
    finally:
        d.cleanup()
    assert processes_under(str(Path(data) / "clusters")) == []


def _make_orphans(todo: list[tuple[LocalProvider, str]], made: list[dict | None]) -> None:
    """Make the clusters side by side; each one's last checkpoint lands in ``made`` as it is done."""
    async def make(i: int, provider: LocalProvider, name: str) -> None:
        async for made[i] in provider.create(name, ClusterSpec(n_workers=0, heartbeat_ttl=600),
                                             make_cluster_tls(name)):
            pass

    async def both() -> None:
        await asyncio.gather(*(make(i, provider, name) for i, (provider, name) in enumerate(todo)))

    asyncio.run(both())


def _reap_when_they_exit(pids: list[int]) -> None:
    """This test made the orphans, so it is their parent: collect them when they exit, as init does for a
    daemon's orphans, or the harvester waits out its stop grace for zombies only this process can clear."""
    def wait(pid: int) -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

    for pid in pids:
        threading.Thread(target=wait, args=(pid,), daemon=True).start()


def test_orphaned_processes_are_found_and_removed(recc_dirs) -> None:
    data = Path(recc_dirs["RECC_DATA_DIR"])
    # one left in the desktop daemon's folder, one in a job daemon's (its daemon long gone)
    todo = [(LocalProvider(data / "clusters" / "local"), "stray"),
            (LocalProvider(data / "jobs" / "nightly-999999" / "clusters" / "local"), "jobstray")]
    made: list[dict | None] = [None] * len(todo)
    try:
        _make_orphans(todo, made)
        _reap_when_they_exit([cp["scheduler"]["pid"] for cp in made])
        assert processes_under(str(data / "clusters" / "local" / "stray"))

        results, _ = harvester("--dry-run")
        found = by_name(results)
        assert set(found) == {"stray", "jobstray"}, results
        for r in found.values():
            assert (r["action"], r["source"], r["deleted"]) == ("harvest", "orphan", False)
            assert r["reason"] == "no RECC record explains these processes"
        assert processes_under(str(data / "clusters" / "local" / "stray"))

        results, _ = harvester()
        assert all(r["deleted"] for r in results) and len(results) == 2, results
        assert processes_under(str(data)) == []
        assert not (data / "clusters" / "local" / "stray").exists()
        assert harvester()[0] == []
    finally:
        for (provider, name), cp in zip(todo, made):
            asyncio.run(provider.delete(name, cp))  # also reaps this process's children


def test_a_fresh_cluster_is_kept_and_a_live_daemon_is_asked_to_delete(recc_dirs) -> None:
    d = Daemon(recc_dirs)
    # Heartbeats a minute apart: the daemon, alive, would not harvest "sleepy" itself during the test.
    d.env.update(RECC_HEARTBEAT_INTERVAL="60")
    d.start()
    try:
        d.client().create_cluster(spec(idle_timeout=600, no_client_timeout=600), "fresh")
        d.client().create_cluster(spec(idle_timeout=1, harvest_warning=1, heartbeat_ttl=600), "sleepy")
        wait_running(d, "fresh")
        wait_running(d, "sleepy")
        wait_idle(recc_dirs["RECC_DATA_DIR"], "sleepy", 1 + 0.5)  # past its idle_timeout
        results, _ = harvester()  # not a dry run: it deletes what it would harvest
        found = by_name(results)
        fresh, sleepy = found["fresh"], found["sleepy"]
        assert (fresh["source"], fresh["action"], fresh["deleted"]) == ("daemon", "keep", False), fresh
        assert fresh["clock"] in ("idle", "no-client") and fresh["seconds_left"] > 500
        assert (sleepy["action"], sleepy["clock"], sleepy["deleted"]) == ("harvest", "idle", True), sleepy
        # the daemon did the deleting, so it knows (and its listing says so at once)
        assert [c["name"] for c in d.client().list_clusters()] == ["fresh"]
        gone = d.client().get_cluster("sleepy")
        assert (gone["status"], gone["deleted_by"]) == ("deleted", "recc harvest")  # the daemon records who did it
        assert not processes_under(str(Path(recc_dirs["RECC_DATA_DIR"]) / "clusters" / "local" / "sleepy"))
        info = d.client().get_cluster("fresh")
        assert info["status"] == "running" and info["workers"]["ready"] == 1
    finally:
        d.cleanup()
    assert processes_under(str(Path(recc_dirs["RECC_DATA_DIR"]) / "clusters")) == []
