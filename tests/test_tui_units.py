"""Fast checks of the dashboard without a daemon: formatting, notifications, keys, palette.

A `FakeClient` stands in for `DaemonClient` where an action must call the daemon; the
real-daemon tests are in `test_tui.py`.
"""

from __future__ import annotations

from typing import Any

import pytest

from recc.errors import ClusterNotReady
from recctui import format as fmt
from recctui.app import RECCApp
from recctui.commands import ClusterCommands
from recctui.link import with_accrued
from recctui.messages import ClustersRefreshed, DaemonEvent
from tests.test_tui_snapshots import NOW, SIZE, sample_rows


class FakeClient:
    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail = fail

    def extend(self, name: str, minutes: float = 30) -> dict[str, Any]:
        self.calls.append(("extend", name))
        if self.fail:
            raise self.fail
        return {"name": name, "harvest": {"extended_until": NOW + minutes * 60}}


def offline_app(client: FakeClient | None = None) -> RECCApp:
    app = RECCApp(connect=False, clock=lambda: NOW)
    app.daemon_up, app.client = True, client  # type: ignore[assignment]
    return app


async def settle(pilot: Any, until: Any, tries: int = 50) -> None:
    for _ in range(tries):
        if until():
            return
        await pilot.pause(0.05)


def messages(app: RECCApp) -> list[str]:
    return [n.message for n in app._notifications]


def test_new_lines_finds_what_a_sliding_tail_added() -> None:
    assert fmt.new_lines([], ["a", "b"]) == ["a", "b"]
    assert fmt.new_lines(["a", "b", "c"], ["b", "c", "d", "e"]) == ["d", "e"]
    assert fmt.new_lines(["a", "b"], ["a", "b"]) == []
    assert fmt.new_lines(["x", "x"], ["x", "x", "x"]) == ["x"]
    assert fmt.new_lines(["a"], ["q", "r"]) == ["q", "r"]  # rotated: everything is new


def test_cells_say_dead_things_are_dead() -> None:
    rows = {r["name"]: r for r in sample_rows()}
    assert fmt.tunnel_cell(rows["feature-eng"]) == ("down ×3", "bold red")
    assert fmt.status_cell(rows["old-test"]) == ("failed!", "bold red")
    assert fmt.tunnel_cell(rows["old-test"])[0] == "—"  # a failed cluster has no tunnel, not an "up" one
    assert fmt.harvest_cell(rows["risk-nightly"], NOW) == ("18m5s / 1m35s", "bold red")
    assert fmt.split_timestamp("2026-07-18 10:00:00,000 - distributed.worker - INFO - x")[1].startswith("distri")


def test_live_rows_show_what_they_accrued_and_gone_rows_their_total() -> None:
    rows = [{"id": "a1", "name": "x", "status": "running", "total_cost": None, "accrued_cost": 0.25},
            {"id": "b2", "name": "y", "status": "creating", "total_cost": None, "accrued_cost": 0.01},
            {"id": "c3", "name": "z", "status": "deleted", "total_cost": 1.5, "accrued_cost": 1.5}]
    assert [r["total_cost"] for r in with_accrued(rows)] == [0.25, 0.01, 1.5]


async def test_harvest_warning_notifies_and_E_extends_that_cluster() -> None:
    client = FakeClient()
    app = offline_app(client)
    async with app.run_test(size=SIZE) as pilot:
        app.post_message(ClustersRefreshed(sample_rows(), NOW))
        app.post_message(DaemonEvent({"type": "cluster.harvest-warning", "cluster": "risk-nightly", "data": {
            "id": "c0002", "message": "cluster risk-nightly will be deleted in 2m: no tasks for 18 minutes."}}))
        await settle(pilot, lambda: app.last_warned)
        assert any("Extend 30 minutes" in m and "deleted in 2m" in m for m in messages(app))
        app.clusters_screen.table.select_id("c0001")  # the cursor elsewhere: E still means the warned one
        await pilot.press("E")
        await settle(pilot, lambda: client.calls)
        assert client.calls == [("extend", "risk-nightly")]
        await settle(pilot, lambda: any("postponed" in m for m in messages(app)))
        assert any("risk-nightly: harvest postponed by 30 minutes" in m for m in messages(app))


async def test_daemon_errors_become_notifications_with_the_hint() -> None:
    app = offline_app(FakeClient(fail=ClusterNotReady("cluster 'local-3f2a' is creating",
                                                      hint="wait until it is running")))
    async with app.run_test(size=SIZE) as pilot:
        app.post_message(ClustersRefreshed(sample_rows(), NOW))
        await pilot.pause()
        app.clusters_screen.table.select_id("c0001")
        await pilot.press("x")
        await settle(pilot, lambda: any("is creating" in m for m in messages(app)))
        note = next(n for n in app._notifications if "is creating" in n.message)
        assert "wait until it is running" in note.message and note.severity == "error"
        assert "Traceback" not in note.message


async def test_ctrl_c_does_not_quit_and_question_mark_shows_help() -> None:
    app = offline_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert app.is_running and any("does not quit" in m for m in messages(app))
        await pilot.press("question_mark")
        await pilot.pause()
        assert app.screen.query("HelpPanel")
        await pilot.press("question_mark")
        await pilot.pause()
        assert not app.screen.query("HelpPanel")


@pytest.mark.parametrize("query, expected", [("delete risk", "Delete: risk-nightly"), ("costs", "Costs"),
                                              ("copy rsh", "Copy RSHClient line (selected: feature-eng)")])
async def test_command_palette_reaches_actions(query: str, expected: str) -> None:
    app = offline_app()
    async with app.run_test(size=SIZE) as pilot:
        app.post_message(ClustersRefreshed(sample_rows(), NOW))
        await pilot.pause()
        provider = ClusterCommands(app.screen)
        titles = [hit.text async for hit in provider.search(query)]
        assert expected in titles
        every = [hit.text async for hit in provider.discover()]
        for action in ("Create a cluster", "Costs", "Refresh", "Start the daemon"):
            assert action in every


async def test_cursor_and_scroll_stay_put_across_refreshes() -> None:
    from tests.test_tui_snapshots import row

    def rows(tick: int) -> list[dict[str, Any]]:
        out = [row(i, f"c-{i:03d}", cost=0.01 * i + tick, age=60.0 * i + tick) for i in range(200)]
        return out[::-1] if tick % 2 else out  # the daemon's order changes; ours must not

    app = offline_app()
    async with app.run_test(size=SIZE) as pilot:
        app.post_message(ClustersRefreshed(rows(0), NOW))
        await pilot.pause()
        table = app.clusters_screen.table
        table.move_cursor(120)
        await pilot.pause()
        cursor, scroll = table.cursor_id, table.scroll_y
        assert scroll > 0
        for tick in (1, 2, 3):
            app.post_message(ClustersRefreshed(rows(tick), NOW))
            await pilot.pause()
            assert (table.cursor_id, table.scroll_y) == (cursor, scroll)
        assert table.cell(cursor, "accrued") == "$4.20"  # 0.01 * 120 + 3: the cells did change
        table.sort_by("accrued", reverse=True)  # a sort moves the row; the cursor goes with it
        await pilot.pause()
        assert table.cursor_id == cursor
