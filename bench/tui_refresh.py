"""One refresh of the dashboard's clusters table with 1,000 clusters (target <= 50 ms).

Not a test: ``python bench/tui_refresh.py [--clusters N] [--runs R]``. The rows go through
the path the daemon link uses: a `ClustersRefreshed` message posted to the app, handled
by the app, applied to the table (cells updated in place, rows sorted by key). Every
refresh changes each row's accrued cost, age and harvest countdown, as a live refresh does,
and the cursor sits in the middle of the table. Two figures, medians of R refreshes:

- handler: the message handler (store update, filter, sort, format the rows on screen, cost
  meter, detail pane);
- paint: the screen's compositor refresh that follows (drawing the rows on screen);
- to idle: from posting the message until the app is idle again (includes the frame
  timer's wait, shown as the cost of an idle pause).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

NOW = 1_785_000_000.0
GiB = 2**30
STATUSES = ("running",) * 8 + ("creating", "scaling", "deleting", "failed")


def make_rows(n: int, tick: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        status = STATUSES[i % len(STATUSES)]
        live = status != "failed"
        rows.append({
            "id": f"c{i:05d}", "name": f"cluster-{(i * 7919) % n:05d}", "provider": "eks" if i % 3 else "local",
            "template": "small-cluster-small-workers", "status": status, "error": None, "persist": False,
            "job_id": None, "owner": "alice", "workers": {"ready": i % 5, "desired": 4}, "nodes": 1 + i % 4,
            "planned_nodes": 1 + i % 4, "instance_type": "m5.xlarge", "region": "us-east-1",
            "cost_per_hour": 0.192 * (1 + i % 4), "total_cost": 0.01 * i + 0.001 * tick,
            "created_at": NOW - 60 * i, "deleted_at": None if live else NOW - 10, "deleted_by": None,
            "deleted_reason": None, "age_seconds": 60.0 * i + tick,
            "endpoints": {"scheduler": "tls://127.0.0.1:40000", "dashboard": "http://127.0.0.1:40001/status"},
            "tunnel": {"state": ("up", "connecting", "down")[i % 3], "retries": i % 3},
            "harvest": {"action": "keep", "reason": "", "clock": "idle", "deadline": NOW + 1200 - tick,
                        "seconds_left": 1200.0 - tick, "extended_until": None},
            "idle": {"last_activity": NOW - 30 - i}, "corrupt": None,
            "spec": {"provider": "eks", "template": "small-cluster-small-workers", "n_workers": 4,
                     "worker_memory": 3 * GiB, "tags": {"namespace": "research"}, "env": {}},
        })
    return rows


async def bench(n: int, runs: int) -> dict[str, Any]:
    from recctui.app import RECCApp
    from recctui.messages import ClustersRefreshed
    from textual.screen import Screen

    from recctui.screens.clusters import ClustersScreen

    tick = {"t": 0}
    app = RECCApp(connect=False, clock=lambda: NOW + tick["t"])
    handler_times: list[float] = []
    paint = {"s": 0.0}
    original = ClustersScreen.apply
    compositor_refresh = Screen._compositor_refresh  # private: timed here only, in a benchmark

    def timed_apply(self: ClustersScreen, *args: Any) -> None:
        start = time.perf_counter()
        original(self, *args)
        handler_times.append(time.perf_counter() - start)

    def timed_paint(self: Screen, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return compositor_refresh(self, *args, **kwargs)
        finally:
            paint["s"] += time.perf_counter() - start

    async with app.run_test(size=(120, 40)) as pilot:
        start = time.perf_counter()
        app.post_message(ClustersRefreshed(make_rows(n, 0), NOW))
        await pilot.pause()
        first = time.perf_counter() - start
        app.clusters_screen.table.move_cursor(row=n // 2)
        await pilot.pause()
        idle = []
        for _ in range(runs):  # what `pause()` costs with nothing to do: the frame timer's wait
            start = time.perf_counter()
            await pilot.pause()
            idle.append(time.perf_counter() - start)
        ClustersScreen.apply = timed_apply  # type: ignore[method-assign]
        Screen._compositor_refresh = timed_paint  # type: ignore[method-assign]
        to_idle, paints, totals = [], [], []
        try:
            for r in range(1, runs + 1):
                tick["t"] = r
                rows = make_rows(n, r)
                paint["s"] = 0.0
                start = time.perf_counter()
                app.post_message(ClustersRefreshed(rows, NOW + r))
                await pilot.pause()
                to_idle.append(time.perf_counter() - start)
                paints.append(paint["s"])
                totals.append(handler_times[-1] + paint["s"])
        finally:
            ClustersScreen.apply = original  # type: ignore[method-assign]
            Screen._compositor_refresh = compositor_refresh  # type: ignore[method-assign]
        shown = len(app.clusters_screen.table.visible_ids)
    return {"clusters": n, "shown": shown, "runs": runs, "first_fill_ms": round(first * 1000, 1),
            "handler_median_ms": round(statistics.median(handler_times) * 1000, 1),
            "paint_median_ms": round(statistics.median(paints) * 1000, 1),
            "refresh_median_ms": round(statistics.median(totals) * 1000, 1),
            "to_idle_median_ms": round(statistics.median(to_idle) * 1000, 1),
            "to_idle_max_ms": round(max(to_idle) * 1000, 1),
            "idle_baseline_ms": round(statistics.median(idle) * 1000, 1), "target_ms": 50}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(bench(args.clusters, args.runs))
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['clusters']} clusters ({result['shown']} shown), median of {result['runs']} refreshes:")
    print(f"  one refresh (handler+paint): {result['refresh_median_ms']} ms   target <= {result['target_ms']} ms")
    print(f"  handler (filter, sort, cells): {result['handler_median_ms']} ms")
    print(f"  paint (compositor refresh):  {result['paint_median_ms']} ms")
    print(f"  post -> idle (with paint):   {result['to_idle_median_ms']} ms (max {result['to_idle_max_ms']} ms; "
          f"an idle pause alone takes {result['idle_baseline_ms']} ms)")
    print(f"  first fill (to idle):        {result['first_fill_ms']} ms")


if __name__ == "__main__":
    main()
