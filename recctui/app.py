"""`recc-tui`: the RECC dashboard of clusters, costs and logs.

The app holds the cluster store and the key bindings; `recctui.link` talks to the daemon
(in thread workers), `recctui.actions` does what the keys ask, the screens show it.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable

from textual.app import App
from textual.binding import Binding

from recctui import format as fmt
from recctui.actions import ClusterActions
from recctui.commands import ClusterCommands
from recctui.link import REFRESH_EVERY, DaemonLink
from recctui.messages import (ClustersRefreshed, CostsFetched, DaemonDown, DaemonEvent, DaemonUp, DetailFetched,
                               ExactCostsFetched)
from recctui.screens.clusters import ClustersScreen
from recctui.screens.costs import CostsScreen
from recctui.widgets.banner import DaemonBanner
from recctui.widgets.cost_meter import live_rate


class RECCApp(DaemonLink, ClusterActions, App[None]):
    TITLE = "RECC"
    SUB_TITLE = "clusters"
    CSS_PATH = "recc.tcss"
    COMMANDS = App.COMMANDS | {ClusterCommands}
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("ctrl+c", "help_quit", show=False),
        Binding("ctrl+s", "start_daemon", "Start daemon", show=False),
        Binding("E", "extend_warned", "Extend warned", show=False),
    ]

    def __init__(self, connect: bool = True, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.init_link(connect)
        self.clock = clock
        self.clusters: dict[str, dict[str, Any]] = {}
        self.rate_samples: deque[float] = deque(maxlen=240)
        self.last_warned: str | None = None
        self.select_after_refresh: str | None = None
        self.progress: dict[str, str] = {}  # cluster id -> "step n" while creating

    def on_mount(self) -> None:
        self.push_screen(ClustersScreen())
        if self.connect_enabled:
            self.banners("connecting")
            self.connect()
            self.set_interval(REFRESH_EVERY, lambda: self.request_refresh(0.0))

    def on_unmount(self) -> None:
        self.stop_link()

    @property
    def clusters_screen(self) -> ClustersScreen | None:
        found = self.screens_of(ClustersScreen)
        return found[0] if found else None

    def screens_of(self, kind: type[Any]) -> list[Any]:
        """The screens of a kind on the stack (none once the app is closing: messages may still arrive)."""
        return [s for s in self.screen_stack if isinstance(s, kind)]

    def banners(self, state: str, *args: Any) -> None:
        for screen in self.screen_stack:
            for banner in screen.query(DaemonBanner):
                getattr(banner, state)(*args)

    # -- from the daemon -------------------------------------------------------------------------

    def on_clusters_refreshed(self, message: ClustersRefreshed) -> None:
        for row in message.rows:
            if row.get("status") == "creating" and row["id"] in self.progress:
                row["_progress"] = self.progress[row["id"]]
        self.clusters = {r["id"]: r for r in message.rows}
        self.rate_samples.append(live_rate(message.rows))
        screen = self.clusters_screen
        if screen is not None:
            screen.apply(message.rows, self.clock(), list(self.rate_samples))
            if self.select_after_refresh in self.clusters:
                screen.table.select_id(self.select_after_refresh)
                self.select_after_refresh = None
        for costs in self.screens_of(CostsScreen):
            costs.show_rate(list(self.rate_samples))

    def on_daemon_event(self, message: DaemonEvent) -> None:
        event, data = message.event, message.event.get("data") or {}
        kind, name, cid = event.get("type", ""), event.get("cluster"), data.get("id")
        row = self.clusters.get(cid) if cid else None
        if kind == "cluster.progress" and cid:
            self.progress[cid] = f"step {data.get('step')}"
        if row is not None and kind in ("cluster.workers", "cluster.progress"):
            # facts the event carries whole: show them now; anything else waits for the refresh,
            # so a row never mixes a new status with old tunnel or cost fields
            row = dict(row)
            if kind == "cluster.workers":
                row["workers"] = {"ready": data.get("ready", 0), "desired": data.get("desired", 0)}
            else:
                row["_progress"] = self.progress[cid]
            self.clusters[cid] = row
            if self.clusters_screen is not None:
                self.clusters_screen.merge(row)
        self.on_cluster_event(kind, name, data)
        self.request_refresh()
        screen = self.clusters_screen
        if screen is not None and cid and screen.table.cursor_id == cid:
            self.fetch_detail(cid, name)

    def on_cluster_event(self, kind: str, name: str | None, data: dict[str, Any]) -> None:
        """Notifications for what a person must know at once."""
        text = data.get("message") or ""
        if kind == "cluster.harvest-warning":
            self.last_warned = name
            self.notify(f"{fmt.markup_escape(text)}\n[@click=app.extend('{name}')]Extend 30 minutes[/] "
                        f"or press [b]E[/b].", title=f"{name} will be harvested", severity="warning", timeout=30)
        elif kind == "cluster.harvested":
            self.notify(text, title=f"{name} harvested", severity="warning", timeout=10, markup=False)
        elif kind == "budget.threshold":
            self.notify(text, title="budget", severity="warning", timeout=20, markup=False)
        elif kind == "cluster.status" and data.get("status") == "failed":
            self.notify(text, title=f"{name} failed", severity="error", timeout=15, markup=False)
        elif kind == "cluster.status" and data.get("status") == "running" and text == "running":
            self.notify(f"{name} is running", timeout=4)

    def on_daemon_up(self, message: DaemonUp) -> None:
        was_down = not self.daemon_up
        self.daemon_up = True
        self.banners("up")
        info = message.info
        self.sub_title = f"daemon pid {info.get('pid', '?')} · {info.get('version', '')}".rstrip(" ·")
        if self.clusters_screen is not None:
            self.clusters_screen.set_stale(False)
        if was_down:
            self.request_refresh(0.0)
            if self.screens_of(CostsScreen):
                self.fetch_costs()
                self.fetch_exact_costs()

    def on_daemon_down(self, message: DaemonDown) -> None:
        self.daemon_up = False
        self.sub_title = "daemon unreachable"
        self.banners("down", message.reason, message.attempt, message.retry_in)
        if self.clusters_screen is not None:
            self.clusters_screen.set_stale(True)

    def on_detail_fetched(self, message: DetailFetched) -> None:
        if self.clusters_screen is not None:
            self.clusters_screen.show_detail(message.cluster_id, message.detail)

    def on_costs_fetched(self, message: CostsFetched) -> None:
        for screen in self.screens_of(CostsScreen):
            screen.show(message, self.clock(), list(self.rate_samples))

    def on_exact_costs_fetched(self, message: ExactCostsFetched) -> None:
        for screen in self.screens_of(CostsScreen):
            screen.show_exact(message)

    # -- keys -------------------------------------------------------------------------------------

    def target_quiet(self) -> dict[str, Any] | None:
        screen = self.clusters_screen
        return screen.table.selected if screen is not None else None

    def action_refresh(self) -> None:
        if self.daemon_up:
            self.refresh_clusters()
            self.notify("refreshing", timeout=1)
        else:
            self.notify("the daemon is not answering; reconnecting", severity="warning", timeout=3)

    def action_toggle_all(self) -> None:
        if self.clusters_screen is not None:
            self._to_clusters().action_toggle_all()

    def action_filter(self) -> None:
        self._to_clusters().action_filter()

    def _to_clusters(self) -> ClustersScreen:
        while not isinstance(self.screen, ClustersScreen) and len(self.screen_stack) > 2:
            self.pop_screen()
        return self.screen  # type: ignore[return-value]

    def action_start_daemon(self) -> None:
        self.banners("connecting")
        self.connect(start=True)

    def action_help(self) -> None:
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    def action_help_quit(self) -> None:
        self.notify("Ctrl+C does not quit here: press [b]q[/b] to quit (Ctrl+Q anywhere).", timeout=4)


def main() -> None:
    RECCApp().run()
