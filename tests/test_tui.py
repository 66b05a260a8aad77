"""`recc-tui` against a real daemon with the local provider, driven by key presses.

Each test asserts on the daemon's state (through its own client), not only on the screen.
Clusters are small (one worker of 1 GiB) and waits poll with short pauses to a deadline.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from textual.widgets import Input

from recctui.app import RECCApp
from recctui.screens.dialogs import CreateDialog, DeleteDialog, SaveDialog, ScaleDialog
from recctui.screens.logs import LogsScreen
from recctui.widgets.banner import DaemonBanner

SIZE = (120, 40)
SMALL = {"provider": "local", "template": "local", "instance_type": "local", "n_workers": 1,
         "worker_memory": "1GiB", "scheduler_memory": "1GiB"}

pytestmark = pytest.mark.slow


async def wait_for(pilot: Any, predicate: Callable[[], Any], what: str, timeout: float = 60.0,
                   state: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}"
                                 + (f" ({state()})" if state else ""))
        await pilot.pause(0.1)


def reconnect_attempt(banner: str) -> int:
    """The banner's attempt number (polling can miss "attempt 2" itself on a loaded machine)."""
    found = re.search(r"attempt (\d+)", banner)
    return int(found.group(1)) if found else 0


def live_row(app: RECCApp, name: str) -> dict[str, Any] | None:
    return next((r for r in app.clusters.values() if r["name"] == name and r["status"] != "deleted"), None)


def status_of(app: RECCApp, name: str) -> str | None:
    rows = [r for r in app.clusters.values() if r["name"] == name]
    row = max(rows, key=lambda r: r["created_at"]) if rows else None
    return row["status"] if row else None


def table_cell(app: RECCApp, cid: str, column: str) -> str:
    return app.clusters_screen.table.cell(cid, column)


async def type_text(pilot: Any, text: str) -> None:
    await pilot.press(*list(text))


async def create_with_client(daemon: Any, name: str, **overrides: Any) -> None:
    client = daemon.client()
    await asyncio.to_thread(client.create_cluster, {**SMALL, **overrides}, name)


async def test_create_scale_extend_and_delete_through_dialogs(daemon) -> None:
    client = daemon.client()
    app = RECCApp()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.daemon_up, "the daemon link")

        # create: template, one worker of 1 GiB, a name; the plan shows before confirming
        await pilot.press("n")
        dialog = await wait_for(pilot, lambda: isinstance(app.screen, CreateDialog) and app.screen, "create dialog")
        await pilot.press("tab")
        await type_text(pilot, "1")
        await pilot.press("tab", "tab")
        await type_text(pilot, "1GiB")
        await pilot.press("tab")
        await type_text(pilot, "tui-a")
        await pilot.pause()
        assert "plan: 1 worker on this machine" in str(dialog.query_one("#plan").render())
        await pilot.press("enter")
        await wait_for(pilot, lambda: status_of(app, "tui-a") == "running", "tui-a running in the table", 90)
        cid = live_row(app, "tui-a")["id"]
        assert table_cell(app, cid, "status") == "running"
        assert app.clusters_screen.table.cursor_id == cid  # the new cluster is selected
        assert client.get_cluster("tui-a")["spec"]["worker_memory"] == 2**30

        # scale to 2: the daemon does it and the table follows its events
        await pilot.press("w")
        scale = await wait_for(pilot, lambda: isinstance(app.screen, ScaleDialog) and app.screen, "scale dialog")
        scale.query_one("#n-workers", Input).value = ""
        await type_text(pilot, "2")
        await pilot.press("enter")
        await wait_for(pilot, lambda: client.get_cluster("tui-a")["workers"] == {"desired": 2, "ready": 2},
                       "the daemon to scale tui-a to 2", 90)
        await wait_for(pilot, lambda: table_cell(app, cid, "workers") == "2/2", "2/2 workers in the table")

        # extend the idle deadline
        await pilot.press("x")
        await wait_for(pilot, lambda: any(e["kind"] == "cluster.extended"
                                          for e in client.get_cluster("tui-a")["events"]), "an extended event")

        # a cancelled delete deletes nothing: Cancel has the focus, Enter presses it
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, DeleteDialog), "delete dialog")
        assert app.focused is not None and app.focused.id == "cancel"
        await pilot.press("enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, DeleteDialog), "the dialog to close")
        await pilot.pause(0.5)
        assert client.get_cluster("tui-a")["status"] == "running"

        # a wrong name does not delete either; the typed name does
        await pilot.press("d")
        delete = await wait_for(pilot, lambda: isinstance(app.screen, DeleteDialog) and app.screen, "delete dialog")
        assert "tui-a" in str(delete.query_one(".title").render())
        await pilot.press("shift+tab")
        await type_text(pilot, "tui-b")
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert isinstance(app.screen, DeleteDialog) and client.get_cluster("tui-a")["status"] == "running"
        delete.query_one("#confirm-name", Input).value = ""
        await type_text(pilot, "tui-a")
        await pilot.press("enter")
        await wait_for(pilot, lambda: client.get_cluster("tui-a")["status"] == "deleted", "tui-a deleted", 60)
        await wait_for(pilot, lambda: table_cell(app, cid, "status") == "deleted", "deleted in the table")
        assert client.list_clusters() == []


async def test_filter_and_logs_follow(daemon, tmp_path: Path) -> None:
    client = daemon.client()
    await create_with_client(daemon, "tui-alpha")
    await create_with_client(daemon, "tui-beta", n_workers=0)
    app = RECCApp()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: status_of(app, "tui-alpha") == status_of(app, "tui-beta") == "running",
                       "both clusters running", 90)
        table = app.clusters_screen.table
        alpha, beta = live_row(app, "tui-alpha")["id"], live_row(app, "tui-beta")["id"]
        assert set(table.visible_ids) == {alpha, beta}

        # `/` filters live, Esc clears
        await pilot.press("slash")
        await type_text(pilot, "alph")
        await wait_for(pilot, lambda: table.visible_ids == [alpha], "the filter to keep only tui-alpha")
        await pilot.press("enter")  # back to the table, filter kept
        assert table.cursor_id == alpha
        await pilot.press("escape")
        await wait_for(pilot, lambda: set(table.visible_ids) == {alpha, beta}, "the filter to clear")
        table.select_id(alpha)

        # logs follow: a worker added after the screen opened shows up without a key press
        await pilot.press("l")
        logs = await wait_for(pilot, lambda: isinstance(app.screen, LogsScreen) and app.screen, "logs screen")
        await wait_for(pilot, lambda: any(c == "scheduler" for c, _ in logs.buffer), "scheduler lines")
        assert logs.following
        before = set(logs.components)
        await asyncio.to_thread(client.scale, "tui-alpha", 2)
        await wait_for(pilot, lambda: len(set(logs.components) - before) == 1, "the new worker's log", 60)
        new = (set(logs.components) - before).pop()
        await wait_for(pilot, lambda: any(c == new for c, _ in logs.buffer), "the new worker's lines")

        # filter, timestamps, follow off, save
        await pilot.press("slash")
        await type_text(pilot, "worker")
        await pilot.press("enter")
        assert logs.shown_lines and all("worker" in line.lower() for line in logs.shown_lines)
        await pilot.press("t")
        assert not logs.timestamps
        await pilot.press("f")
        assert not logs.following
        await pilot.press("s")
        save = await wait_for(pilot, lambda: isinstance(app.screen, SaveDialog) and app.screen, "save dialog")
        target = tmp_path / "alpha.log"
        save.query_one("#path", Input).value = str(target)
        await pilot.press("enter")
        await wait_for(pilot, lambda: target.exists(), "the saved log")
        assert "scheduler" in target.read_text()
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.clusters_screen is app.screen, "back to the clusters")


async def test_daemon_killed_shows_banner_and_recovers(daemon) -> None:
    app = RECCApp()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.daemon_up, "the daemon link")
        banner = app.screen.query_one(DaemonBanner)
        assert not banner.display or not banner.is_down
        first_pid = daemon.proc.pid

        daemon.proc.kill()
        await wait_for(pilot, lambda: banner.is_down and not app.daemon_up, "the banner", 45)
        assert "DAEMON UNREACHABLE" in str(banner.render())
        await wait_for(pilot, lambda: reconnect_attempt(str(banner.render())) >= 2, "a second reconnect attempt", 45,
                       lambda: f"banner: {banner.render()!s}; daemon_up={app.daemon_up}; workers={[(w.name, w.state) for w in app.workers]}")
        assert app.clusters_screen.table.has_class("-stale")

        await asyncio.to_thread(daemon.proc.wait)
        daemon.proc.stdout.close()
        await asyncio.to_thread(daemon.start)
        assert daemon.proc.pid != first_pid
        await wait_for(pilot, lambda: app.daemon_up and not banner.is_down, "recovery", 30)
        assert str(daemon.proc.pid) in app.sub_title
        assert not app.clusters_screen.table.has_class("-stale")
