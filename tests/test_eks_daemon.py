"""EKS clusters through the daemon, end to end: the library and the CLI talk to a real ``reccd`` whose
contexts point at moto (AWS) and the fake Kubernetes API; pods are real Dask processes; the client
computes through the daemon's tunnel (port-forward, load balancer, auto)."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from distributed import Client

from recc import RECCCluster, RSHClient
from recc.cluster import security_from
from recc.errors import SpecError
from recc import manifests as M
from tests.eks_env import EMPTY, USER, EksWorld, eks_daemon, eks_world, leftovers

pytestmark = pytest.mark.slow

SMALL = dict(instance_type="t3.xlarge", worker_memory="1GiB", scheduler_cpu=0.5, scheduler_memory="1GiB",
             quiet=True)


@pytest.fixture(scope="module", autouse=True)
def world():
    with eks_world() as w:
        yield w


def recc(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "recc.cli", *args], capture_output=True, text=True, timeout=180,
                          env=env)


def listing(env: dict[str, str]) -> dict[str, dict]:
    out = recc(env, "ls", "--json")
    assert out.returncode == 0, out.stderr
    return {c["name"]: c for c in json.loads(out.stdout)}


def group_of(world: EksWorld, name: str) -> list[str]:
    return leftovers(world, M.namespace_name(USER, name))["groups"]


def follow_logs(env: dict[str, str], name: str) -> tuple[subprocess.Popen[str], "queue.Queue[str]"]:
    proc = subprocess.Popen([sys.executable, "-m", "recc.cli", "logs", name, "--follow"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    return proc, lines


def wait_line(lines: "queue.Queue[str]", needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"no line with {needle!r} within {timeout}s; saw:\n{''.join(seen[-20:])}")


# a lambda, so cloudpickle sends it by value (workers cannot import this test module);
# a worker's stdout is its pod's log
shout = lambda marker: print(marker, flush=True) or marker  # noqa: E731


def test_large_template_through_the_daemon_by_port_forward(world, recc_dirs):
    d = eks_daemon(world, recc_dirs)
    try:
        cluster = RECCCluster("large-cluster-large-workers", n_workers=3, quiet=True)
        name, ns = cluster.name, M.namespace_name(USER, cluster.name)
        follower = None
        try:
            assert cluster.spec.context == "adhoc"  # the caller's context, recorded in the spec
            with RSHClient(cluster) as client:
                assert client.submit(sum, [1, 2, 3]).result() == 6
                assert sum(client.gather(client.map(lambda x: x * 2, range(10)))) == 90
                assert len(client.scheduler_info()["workers"]) == 3

                row = listing(d.env)[name]
                assert row["provider"] == "eks" and row["status"] == "running"
                assert row["spec"]["context"] == "adhoc" and row["instance_type"] == "r5.4xlarge"
                assert row["workers"] == {"desired": 3, "ready": 3} and row["nodes"] == 1
                assert row["tunnel"]["state"] == "up"
                assert row["tunnel"]["upstream"].startswith(f"portforward/{ns}/scheduler")
                assert group_of(world, name) == [f"recc-{USER}-r5-4xlarge-{name}"]
                assert world.namespaces(ns) == [ns]

                # recc logs --follow: the pods' logs through the API, new lines as they come
                from tests.fakekube.streams import log_requests

                first_read = len(log_requests)
                follower, lines = follow_logs(d.env, name)
                wait_line(lines, "[scheduler]", 60)
                marker = f"marker-{time.time_ns()}"
                assert client.submit(shout, marker, pure=False).result() == marker
                line = wait_line(lines, marker, 30)
                assert line.startswith("[recc-worker-")
                # more follow rounds (one a second), each overlapping the last by a few seconds: wait for three
                # more reads of the scheduler's log than when the marker came (rather than a fixed 4 s)
                def scheduler_reads() -> int:
                    return sum(1 for ns_, pod, _ in log_requests[first_read:]
                               if ns_ == ns and pod.startswith("recc-scheduler"))

                wanted = max(4, scheduler_reads() + 3)
                deadline = time.monotonic() + 60  # a hang detector
                while scheduler_reads() < wanted:
                    assert time.monotonic() < deadline, "recc logs --follow stopped reading"
                    time.sleep(0.2)
                again = []
                while not lines.empty():
                    again.append(lines.get())
                assert not [x for x in again if marker in x], again  # each line once
                # each round after the first reads only the last seconds of each pod's log, not all of it
                reads = [(pod, int(size)) for ns_, pod, size in log_requests[first_read:] if ns_ == ns]
                sched = [size for pod, size in reads if pod.startswith("recc-scheduler")]
                assert len(sched) >= 4 and sched[0] > 2000, sched
                assert max(sched[1:]) < sched[0] / 4, sched
        finally:
            if follower is not None:
                follower.kill()
                follower.wait(10)
                follower.stdout.close()  # type: ignore[union-attr]
            cluster.close()
        assert leftovers(world, ns) == EMPTY
        gone = recc(d.env, "ls", "--all", "--json")
        assert [c["status"] for c in json.loads(gone.stdout) if c["name"] == name] == ["deleted"]
    finally:
        print(d.log)  # shown when the test fails
        d.cleanup()
    assert leftovers(world) == EMPTY


def test_two_contexts_two_routes_separate_groups(world, recc_dirs, monkeypatch):
    """One daemon, two contexts (port-forward and load balancer); two clusters of one user and
    instance type get their own groups; deleting one leaves the other computing; then nothing."""
    d = eks_daemon(world, recc_dirs, contexts={"adhoc": world.context(),
                                               "lb": world.context(route="loadbalancer")})
    try:
        with pytest.raises(SpecError, match="context 'nope' is not configured"):
            RECCCluster("small-cluster-small-workers", n_workers=1, context="nope", **SMALL)
        first = RECCCluster("small-cluster-small-workers", n_workers=1, **SMALL)
        monkeypatch.setenv("RECC_CONTEXT", "lb")  # the caller's context, not the daemon's (adhoc)
        second = RECCCluster("small-cluster-small-workers", n_workers=2, **SMALL)
        monkeypatch.delenv("RECC_CONTEXT")
        try:
            rows = listing(d.env)
            assert rows[first.name]["spec"]["context"] == "adhoc"
            assert rows[second.name]["spec"]["context"] == "lb"
            g1, g2 = group_of(world, first.name), group_of(world, second.name)
            assert g1 == [f"recc-{USER}-t3-xlarge-{first.name}"] and g2 == [f"recc-{USER}-t3-xlarge-{second.name}"]
            with Client(first, direct_to_workers=False) as c1, Client(second, direct_to_workers=False) as c2:
                assert c1.submit(sum, [1, 1]).result() == 2
                assert c2.submit(sum, [2, 2]).result() == 4
            rows = listing(d.env)
            assert rows[first.name]["tunnel"]["upstream"].startswith("portforward/")
            assert rows[second.name]["tunnel"]["upstream"].startswith("127.0.0.1:")  # the fake's load balancer

            first.close()
            assert leftovers(world, M.namespace_name(USER, first.name)) == EMPTY
            assert group_of(world, second.name) == g2
            with Client(second, direct_to_workers=False) as c2:
                assert c2.submit(sum, [3, 3]).result() == 6
                assert len(c2.scheduler_info()["workers"]) == 2
        finally:
            first.close()
            second.close()
        assert leftovers(world) == EMPTY
    finally:
        print(d.log)  # shown when the test fails
        d.cleanup()


def test_auto_route_prefers_the_load_balancer_and_falls_back(world, recc_dirs):
    """``route: auto``: a load balancer that answers carries the traffic; one that does not (no
    network route from the desktop) costs a short probe and the tunnel uses a port-forward."""
    d = eks_daemon(world, recc_dirs, contexts={"adhoc": world.context(route="auto")})
    client = d.client()
    unreachable = "reach-no"
    world.fake.set_load_balancer_ip("192.0.2.1", namespace=M.namespace_name(USER, unreachable))  # TEST-NET-1
    try:
        spec = {"template": "small-cluster-small-workers", "provider": "eks", "n_workers": 1,
                "instance_type": "t3.xlarge", "worker_memory": "1GiB", "scheduler_cpu": 0.5,
                "scheduler_memory": "1GiB"}
        for name in ("reach-yes", unreachable):  # made at the same time
            client.create_cluster(spec, name)
        deadline = time.monotonic() + 240
        while {client.get_cluster(n)["status"] for n in ("reach-yes", unreachable)} != {"running"}:
            statuses = {n: client.get_cluster(n)["status"] for n in ("reach-yes", unreachable)}
            assert "failed" not in statuses.values(), statuses
            assert time.monotonic() < deadline, statuses
            time.sleep(0.5)
        for name, route in (("reach-yes", "loadbalancer"), (unreachable, "portforward")):
            conn = client.connection(name)
            started = time.monotonic()
            with Client(conn["address"], security=security_from(conn), direct_to_workers=False, timeout=60) as c:
                assert c.submit(sum, [5, 6]).result() == 11
            took = time.monotonic() - started
            upstream = client.get_cluster(name)["tunnel"]["upstream"]
            if route == "loadbalancer":
                assert upstream.startswith("127.0.0.1:"), upstream
            else:
                assert upstream.startswith(f"portforward/{M.namespace_name(USER, name)}/"), upstream
                assert took < 30, took  # the probe is short; the rest of the connections skip it
    finally:
        print(d.log)  # shown when the test fails
        d.cleanup()
    assert leftovers(world) == EMPTY


def test_two_daemons_of_one_user_restart_sweeps_only_its_own(world, recc_dirs):
    """A desktop and a laptop (two data folders, one user, one context) each make a cluster; the
    desktop's daemon crashes and restarts: its sweep keeps the laptop's cluster, which still computes."""
    import os
    import signal
    import stat
    from pathlib import Path

    from recc.cluster import security_from
    from tests.harness import make_dirs

    # both start at once (each start is seconds of imports and boto3 set-up, mostly CPU on its own core)
    desktop, laptop = eks_daemon(world, recc_dirs, start=False), eks_daemon(world, make_dirs(), start=False)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda d: d.start(), (desktop, laptop)))
    spec = {"template": "small-cluster-small-workers", "provider": "eks", "n_workers": 1,
            "instance_type": "t3.xlarge", "worker_memory": "1GiB", "scheduler_cpu": 0.5, "scheduler_memory": "1GiB"}
    try:
        desktop.client().create_cluster(spec, "on-desktop")
        laptop.client().create_cluster(spec, "on-laptop")
        deadline = time.monotonic() + 240
        while True:
            made = [desktop.client().get_cluster("on-desktop"), laptop.client().get_cluster("on-laptop")]
            if {c["status"] for c in made} == {"running"}:
                break
            assert not [c for c in made if c["status"] == "failed"], [(c["name"], c["error"]) for c in made]
            assert time.monotonic() < deadline, [c["status"] for c in made]
            time.sleep(0.5)
        ids = []
        for d in (desktop, laptop):
            path = Path(d.dirs["RECC_DATA_DIR"]) / "daemon-id"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            ids.append(path.read_text().strip())
        assert ids[0] != ids[1]
        with world.kube() as c:
            from kubernetes import client as k8s

            labels = k8s.CoreV1Api(c).read_namespace(M.namespace_name(USER, "on-laptop")).metadata.labels
        assert labels[M.DAEMON_LABEL] == ids[1]
        laptop_ns = M.namespace_name(USER, "on-laptop")
        before = leftovers(world, laptop_ns)
        assert before["groups"] and before["instances"] and before["namespaces"] == [laptop_ns]

        os.killpg(desktop.proc.pid, signal.SIGKILL)  # the desktop's daemon crashes ...
        desktop.proc.wait()
        desktop.start()  # ... and comes back: reconcile and its orphan sweep run before it answers
        assert desktop.client().get_cluster("on-desktop")["status"] == "running"  # adopted again
        assert leftovers(world, laptop_ns) == before  # namespace, group, running instances all there
        conn = laptop.client().connection("on-laptop")
        with Client(conn["address"], security=security_from(conn), direct_to_workers=False, timeout=60) as c:
            assert c.submit(sum, [20, 22]).result() == 42
    finally:
        print(desktop.log, laptop.log)  # shown when the test fails
        desktop.cleanup()
        laptop.cleanup()
    assert leftovers(world) == EMPTY
