"""Crash the daemon at every point of an EKS create, restart it, and find nothing left in moto or the fake.
Also: a crashed daemon that is not restarted leaves a half-made cluster that `recc orphans` finds and deletes.

Points: after each create step's side effects but before its journal write (``before-journal``), right
after its journal write (``after-step``), and inside steps, right after single side effects
(``eks:after-side-effect=N``: 1 the namespace alone, 7 the launch template without its group, 10 the
scheduler Deployment without the workers'). The restarted daemon reconciles before it answers.

To stay near a minute and a half on two shared cores, the crashes run as chains: each restart
reconciles the previous crash and then makes the next cluster with the next fault (N crashes cost
N+1 daemon starts, not 2N), and five chains run at once as five users (``LOGNAME``), so no
daemon's orphan sweep can clean up after another's crash and hide a leftover.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from recc import manifests as M
from tests.eks_env import EMPTY, eks_daemon, eks_world, leftovers
from tests.harness import Daemon, make_dirs

pytestmark = pytest.mark.slow

SPEC = {"template": "small-cluster-small-workers", "provider": "eks", "n_workers": 1, "instance_type": "t3.xlarge",
        "worker_memory": "1GiB", "scheduler_cpu": 0.5, "scheduler_memory": "1GiB"}
FAULTS = ([f"create:{where}={step}:exit" for step in range(1, 7) for where in ("before-journal", "after-step")]
          + [f"eks:after-side-effect={n}:exit" for n in (1, 7, 10)])
LEAVES_A_TEMPLATE = ("create:before-journal=2:exit", "eks:after-side-effect=7:exit")
CHAINS = 5


@pytest.fixture(scope="module", autouse=True)
def world():
    with eks_world() as w:
        yield w


def run_chain(world, user: str, faults: list[str]) -> list[str]:
    """Crash at each fault in turn; each restart must leave nothing of the previous crash. Problems found."""
    dirs = make_dirs()
    problems: list[str] = []
    d: Daemon | None = None
    previous: tuple[str, str] | None = None  # (cluster, fault)
    try:
        for i, fault in enumerate([*faults, None]):
            env = {"LOGNAME": user, "USER": user, **({"RECC_FAULT": fault} if fault else {})}
            d = eks_daemon(world, dirs, **env)  # reconciles the previous crash before it answers
            if previous is not None:
                name, why = previous
                left = leftovers(world, M.namespace_name(user, name), user=user)
                rows = [r for r in d.client().list_clusters(include_gone=True) if r["name"] == name]
                if left != EMPTY:
                    problems.append(f"{why}: left {left}\n{d.log}")
                if [(r["status"], r["deleted_by"]) for r in rows] != [("deleted", "reconcile")]:
                    problems.append(f"{why}: rows {rows}")
            if fault is None:
                break
            name = f"crash{i}"
            try:
                d.client().create_cluster(SPEC, name)
            except Exception:  # noqa: BLE001 - the daemon may die before it answers
                pass
            assert d.proc is not None and d.proc.stdout is not None
            code = d.proc.wait(120)
            d.proc.stdout.close()
            if code != 137:
                problems.append(f"{fault}: the daemon did not die at the fault point (exit {code})\n{d.log}")
            elif fault in LEAVES_A_TEMPLATE and not leftovers(world, M.namespace_name(user, name), user=user)["templates"]:
                problems.append(f"{fault}: the crash left no launch template, so the test proves nothing")
            previous = (name, fault)
    finally:
        if d is not None:
            d.stop()
            if d.proc is not None and d.proc.stdout is not None:
                d.proc.stdout.close()
        shutil.rmtree(dirs["_base"], ignore_errors=True)
    return problems


def test_a_crash_anywhere_in_an_eks_create_leaves_nothing_after_restart(world):
    users = [f"crasher{chr(ord('a') + i)}" for i in range(CHAINS)]
    with ThreadPoolExecutor(CHAINS) as pool:
        results = list(pool.map(lambda i: run_chain(world, users[i], FAULTS[i::CHAINS]), range(CHAINS)))
    problems = [p for chain in results for p in chain]
    assert problems == [], "\n\n".join(problems)
    for user in users:
        assert leftovers(world, user=user) == EMPTY


def test_orphans_lists_and_deletes_a_crashed_daemons_half_made_cluster(world):
    """A daemon dies after making a cluster's namespace, launch template and group (RECC_FAULT), and is not
    restarted: `recc orphans`, run as a person runs it with the daemon down, lists exactly that cluster's
    resources at its $/h (its state row no longer vouches for it once its daemon is gone and its Lease is
    stale), and `--delete --yes` leaves nothing."""
    import json
    import subprocess
    import sys
    import time

    user, name = "halfmade", "half"
    ns = M.namespace_name(user, name)
    dirs = make_dirs()
    # side effect 8 is the Auto Scaling group: the namespace (1-6) and launch template (7) exist, no deployments
    d = eks_daemon(world, dirs, LOGNAME=user, USER=user, RECC_FAULT="eks:after-side-effect=8:exit")
    asg = world.boto("autoscaling")
    try:
        try:  # a 2 s heartbeat TTL: the Lease the daemon may have written while creating soon goes stale
            d.client().create_cluster(dict(SPEC, heartbeat_ttl=2), name)
        except Exception:  # noqa: BLE001 - the daemon may die before it answers
            pass
        assert d.proc is not None and d.proc.stdout is not None
        assert d.proc.wait(60) == 137, d.log
        d.proc.stdout.close()
        crashed_at = time.time()
        group = f"recc-{user}-t3-xlarge-{name}"
        deadline = time.monotonic() + 20
        while not (found := asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"]
                   )[0]["Instances"] and time.monotonic() < deadline:
            time.sleep(0.2)  # moto launches the group's instance on a describe
        instances = [i["InstanceId"] for i in found[0]["Instances"]]
        assert len(instances) == found[0]["DesiredCapacity"] >= 1
        assert leftovers(world, ns, user=user)["namespaces"] == [ns]
        time.sleep(max(0.0, crashed_at + 3 - time.time()))  # past the Lease's 2 s

        env = {k: v for k, v in d.env.items() if k != "RECC_FAULT"}

        def orphans(*argv: str) -> list[dict]:
            done = subprocess.run([sys.executable, "-m", "recc.cli", "orphans", "--json", "--grace", "0", *argv],
                                  env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr
            return json.loads(done.stdout)

        found_orphans = orphans()
        by_kind = {(o["kind"], o["id"] if o["kind"] != "launch-template" else o["detail"]): o for o in found_orphans}
        assert set(by_kind) == {("group", group), ("launch-template", group), ("namespace", ns),
                                *(("instance", i) for i in instances)}, found_orphans
        assert by_kind[("group", group)]["per_hour"] == pytest.approx(0.1664 * len(instances))  # t3.xlarge
        assert sum(o["per_hour"] for o in found_orphans) == pytest.approx(0.1664 * len(instances))
        assert {(o["user"], o["cluster"]) for o in found_orphans} == {(user, name)}

        done = orphans("--delete", "--yes")
        assert all(o["deleted"] and o["error"] is None for o in done), done
        assert leftovers(world, ns, user=user) == EMPTY
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
        try:
            asg.delete_auto_scaling_group(AutoScalingGroupName=f"recc-{user}-t3-xlarge-{name}", ForceDelete=True)
        except asg.exceptions.ClientError:
            pass
        shutil.rmtree(dirs["_base"], ignore_errors=True)
