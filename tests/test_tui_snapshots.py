"""Snapshots of the dashboard's main screens at 120x40 with fixed data and a fixed clock.

No daemon: rows, details, costs and logs go through the same messages the daemon link
posts. Update the SVGs with ``pytest tests/test_tui_snapshots.py --snapshot-update`` and
look at them before committing.
"""

from __future__ import annotations

from typing import Any

from recc.costs import Budget
from recctui.app import RECCApp
from recctui.messages import (ClustersRefreshed, CostsFetched, DaemonDown, DetailFetched, ExactCostsFetched,
                               LogsFetched)

NOW = 1_785_000_000.0  # 2026-07-25 17:20 UTC
SIZE = (120, 40)
GiB = 2**30


def row(i: int, name: str, status: str = "running", provider: str = "local", template: str = "local",
        ready: int = 2, desired: int = 2, rate: float = 0.0, cost: float | None = 0.0, tunnel: str = "up",
        harvest: dict[str, Any] | None = None, idle_for: float | None = None, age: float = 600.0,
        itype: str = "local", error: str | None = None, ended: float | None = None,
        tags: dict[str, str] | None = None) -> dict[str, Any]:
    """A cluster row shaped like the daemon's `view()`."""
    live = status not in ("deleted", "failed")
    return {
        "id": f"c{i:04d}", "name": name, "provider": provider, "template": template, "status": status,
        "error": error, "persist": False, "job_id": None, "owner": "alice",
        "workers": {"ready": ready, "desired": desired}, "nodes": 1 if status in ("running", "scaling") else 0,
        "planned_nodes": 1, "instance_type": itype, "region": "us-east-1", "cost_per_hour": rate,
        "total_cost": cost, "created_at": NOW - age, "deleted_at": None if live else NOW - (ended or 0),
        "deleted_by": None if live else ("daemon" if error else "user"),
        "deleted_reason": None if live else (error or "deleted by the user"), "age_seconds": age,
        "endpoints": {"scheduler": f"tls://127.0.0.1:4{i:04d}" if live else None,
                      "dashboard": f"http://127.0.0.1:5{i:04d}/status" if live else None},
        "tunnel": ({"state": tunnel, "retries": 3 if tunnel == "down" else 0,
                    "last_error": "10.0.3.7:8786: connection refused" if tunnel == "down" else None}
                   if live else {"state": "down"}),
        "harvest": harvest, "idle": {"last_activity": NOW - idle_for} if idle_for is not None else None,
        "corrupt": None,
        "spec": {"provider": provider, "template": template, "instance_type": itype, "region": "us-east-1",
                 "n_workers": desired, "worker_cpu": 1.0, "worker_memory": 2 * GiB, "worker_threads": 1,
                 "worker_gpu": 0, "scheduler_cpu": 1.0, "scheduler_memory": 2 * GiB, "resources": {},
                 "image": "ghcr.io/dask/dask:2026.8.0-py3.11", "env": {}, "source_paths": [], "tags": tags or {},
                 "idle_timeout": 1200.0, "no_client_timeout": 600.0, "heartbeat_ttl": 900.0,
                 "harvest_warning": 120.0, "persist": False, "job_id": None},
    }


def harvest(left: float, action: str = "keep", reason: str = "") -> dict[str, Any]:
    return {"action": action, "reason": reason, "clock": "idle", "deadline": NOW + left, "seconds_left": left,
            "extended_until": None}


def sample_rows() -> list[dict[str, Any]]:
    return [
        row(1, "local-3f2a", harvest=harvest(1020), idle_for=180),
        row(2, "risk-nightly", provider="eks", template="large-cluster-large-workers", ready=48, desired=50,
            rate=8.064, cost=21.37, itype="r5.4xlarge", age=9600, tags={"namespace": "research", "team": "quant"},
            harvest=harvest(95, "warn", "no tasks for 18 minutes"), idle_for=1085),
        row(3, "gpu-exp", provider="eks", template="gpu-workers", status="creating", ready=0, desired=4,
            rate=2.63, cost=0.12, itype="g4dn.xlarge", age=95, tunnel="connecting"),
        row(4, "feature-eng", provider="eks", template="small-cluster-small-workers", ready=4, desired=4,
            rate=0.384, cost=1.02, itype="m5.xlarge", age=3000, tunnel="down", harvest=harvest(600), idle_for=600),
        row(5, "old-test", status="failed", desired=2, ready=0, error="scheduler did not start: port in use",
            ended=300, age=30),
        row(6, "last-week", status="deleted", ready=0, cost=0.41, ended=7 * 86400, age=4000),
    ]


def events() -> list[dict[str, Any]]:
    kinds = [("cluster.created", "cluster risk-nightly requested", -9600),
             ("cluster.status", "creating", -9599), ("cluster.progress", "step 1 done", -9590),
             ("cluster.status", "running", -9420), ("cluster.status", "scaled to 50 workers", -5000),
             ("cluster.harvest-warning", "cluster risk-nightly will be deleted in 2m: no tasks for 18 minutes. "
              "Keep it with `recc extend risk-nightly` or cluster.extend().", -25)]
    return [{"seq": i, "cluster_id": "c0002", "kind": k, "message": m, "data": {}, "at": NOW + dt}
            for i, (k, m, dt) in enumerate(kinds)]


def make_app() -> RECCApp:
    app = RECCApp(connect=False, clock=lambda: NOW)
    app.daemon_up = True  # as if connected: actions open their dialogs
    return app


async def feed(pilot: Any) -> None:
    pilot.app.post_message(ClustersRefreshed(sample_rows(), NOW))
    await pilot.pause()


def test_clusters_screen(snap_compare) -> None:
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=feed)


def test_detail_events_tab(snap_compare) -> None:
    async def run_before(pilot: Any) -> None:
        await feed(pilot)
        app = pilot.app
        app.clusters_screen.table.select_id("c0002")
        await pilot.pause()
        app.post_message(DetailFetched("c0002", dict(sample_rows()[1], events=events())))
        app.clusters_screen.query_one("TabbedContent").active = "tab-events"
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_filter_and_sort(snap_compare) -> None:
    async def run_before(pilot: Any) -> None:
        await feed(pilot)
        pilot.app.clusters_screen.table.sort_by("rate", reverse=True)
        await pilot.press("slash", "e", "k", "s")
        pilot.app.clusters_screen.query_one("#filter").cursor_blink = False
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_delete_dialog(snap_compare) -> None:
    async def run_before(pilot: Any) -> None:
        await feed(pilot)
        pilot.app.clusters_screen.table.select_id("c0002")
        await pilot.press("d")

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_daemon_down_banner(snap_compare) -> None:
    async def run_before(pilot: Any) -> None:
        await feed(pilot)
        pilot.app.post_message(DaemonDown("No RECC daemon at /run/user/1000/recc/reccd.sock.", 3, 1.0))
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_costs_screen(snap_compare) -> None:
    async def run_before(pilot: Any) -> None:
        await feed(pilot)
        await pilot.press("c")
        by_cluster = [{"cluster": "risk-nightly", "cost": 37.9}, {"cluster": "feature-eng", "cost": 4.24},
                      {"cluster": "last-week (c0006)", "cost": 0.41}, {"cluster": "gpu-exp (c0003)", "cost": 0.12}]
        days = [("2026-06-30", 3.5), ("2026-07-01", 0.0), ("2026-07-18", 0.41), ("2026-07-22", 12.0),
                ("2026-07-23", 4.25), ("2026-07-24", 0.0), ("2026-07-25", 22.51)]
        budgets = [Budget("user", "alice", 50.0), Budget("job", "nightly-risk", 300.0, (80, 100))]
        pilot.app.post_message(CostsFetched(by_cluster, [{"day": d, "cost": c} for d, c in days], budgets))
        # AWS's figures for the EKS clusters (GET /v1/costs?exact=1), one context refused by AWS
        exact = {"by": "cluster", "days": 31, "exact": True, "message": None, "contexts": [
            {"context": "adhoc", "region": "us-east-1", "error": None, "hint": None,
             "costs": [{"cluster": "risk-nightly", "cost": 38.12}, {"cluster": "feature-eng", "cost": 4.31}]},
            {"context": "prod", "region": "eu-west-1", "costs": [], "error": "the AWS session has expired",
             "hint": "run `recc login`"}]}
        pilot.app.post_message(ExactCostsFetched(exact))
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_logs_of_a_deleted_cluster(snap_compare) -> None:
    async def run_before(pilot: Any) -> None:
        await feed(pilot)
        pilot.app.clusters_screen.table.toggle_all()  # every cluster, the one deleted last week too
        pilot.app.clusters_screen.table.select_id("c0006")
        await pilot.press("l")
        lines = [f"2026-07-18 10:0{i}:00,000 - distributed.scheduler - INFO - {m}" for i, m in enumerate(
            ["State start", "Scheduler at: tls://127.0.0.1:40001", "Register worker tls://127.0.0.1:40101",
             "Receive client connection: Client-1", "Remove client Client-1", "Closing scheduler"])]
        worker = ["2026-07-18 10:00:01,000 - distributed.worker - INFO - Start worker at: tls://127.0.0.1:40101",
                  "2026-07-18 10:05:00,000 - distributed.worker - INFO - Stopping worker"]
        pilot.app.screen.post_message(LogsFetched("last-week", {"scheduler": lines, "worker-0": worker}))
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)
