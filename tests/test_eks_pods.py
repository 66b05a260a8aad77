"""Reading a cluster's pods: a crash-looping container fails creation at once instead of at its timeout.

The pod JSON is shaped as Kubernetes reports it (a Deployment's pod keeps phase Running while its container
restarts). The fake kubelet does not restart containers, so this reading is checked here, on that shape.
"""

from __future__ import annotations

from typing import Any

from reccd.providers.eks.pods import CRASH_LOOP_RESTARTS, pod_progress


def pod(name: str, component: str, phase: str, restarts: int = 0, waiting: str | None = None,
        last_exit: int | None = None, deleting: bool = False, conditions: list[dict[str, Any]] | None = None) -> dict:
    status: dict[str, Any] = {"name": component, "restartCount": restarts, "ready": waiting is None,
                              "state": {"waiting": {"reason": waiting, "message": "back-off 40s restarting"}}
                              if waiting else {"running": {"startedAt": "2026-11-29T05:00:00Z"}}}
    if last_exit is not None:
        status["lastState"] = {"terminated": {"exitCode": last_exit, "reason": "Error"}}
    meta: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/component": component}}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-29T05:01:00Z"
    return {"metadata": meta, "status": {"phase": phase, "containerStatuses": [status],
                                          "conditions": conditions or []}}


def test_a_scheduler_in_a_crash_loop_fails_with_its_restarts_and_last_exit() -> None:
    # an image without recc: `--preload recc.deadman` fails, the container exits 1 and is restarted
    looping = pod("scheduler-abc", "scheduler", "Running", CRASH_LOOP_RESTARTS, "CrashLoopBackOff", last_exit=1)
    got = pod_progress([looping, pod("worker-1", "worker", "Running")])
    assert got["failed"] == [f"scheduler-abc (container scheduler restarted {CRASH_LOOP_RESTARTS} times; "
                             "last exit 1 (Error))"]
    assert got["scheduler"] is False and got["workers_running"] == 1


def test_a_few_restarts_are_not_a_failure() -> None:
    """A worker may exit while its scheduler starts (its death timeout) and run once restarted."""
    got = pod_progress([pod("scheduler-abc", "scheduler", "Running"),
                        pod("worker-1", "worker", "Running", CRASH_LOOP_RESTARTS - 1, "CrashLoopBackOff", 1),
                        pod("worker-2", "worker", "Running", 1, last_exit=1)])
    assert got["failed"] == [] and got["scheduler"] is True and got["workers_running"] == 2


def test_pending_pods_say_why_and_leaving_pods_do_not_count() -> None:
    unschedulable = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                     "message": "0/2 nodes are available: 2 Insufficient cpu."}
    got = pod_progress([pod("worker-1", "worker", "Pending", conditions=[unschedulable]),
                        pod("worker-2", "worker", "Pending", waiting="ImagePullBackOff"),
                        pod("worker-3", "worker", "Running", deleting=True),
                        pod("worker-4", "worker", "Failed")])
    assert got["pending"] == ["worker-1 (0/2 nodes are available: 2 Insufficient cpu.)",
                              "worker-2 (ImagePullBackOff: back-off 40s restarting)"]
    assert got["failed"] == ["worker-4 (Failed)"] and got["workers_running"] == 0
