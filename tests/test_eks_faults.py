"""Crash the daemon at every point of an EKS create, restart it, and find nothing left in moto or the fake.

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
