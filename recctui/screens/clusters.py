"""The home screen: the live clusters table, the `/` filter, the detail pane and the cost meter."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, Input

from recctui.widgets.banner import DaemonBanner
from recctui.widgets.cluster_table import ClusterTable
from recctui.widgets.cost_meter import CostMeter
from recctui.widgets.detail import DetailPane


class ClustersScreen(Screen[None]):
    DEFAULT_CSS = """
    ClustersScreen #filter { dock: top; display: none; height: 3; }
    ClustersScreen #filter.-shown { display: block; }
    """
    BINDINGS = [
        Binding("slash", "filter", "Filter"),
        Binding("r", "app.refresh", "Refresh", show=False),
        Binding("n", "app.create", "New"),
        Binding("w", "app.scale", "Scale"),
        Binding("x", "app.extend", "Extend"),
        Binding("d", "app.delete", "Delete"),
        Binding("l", "app.logs", "Logs"),
        Binding("c", "app.costs", "Costs"),
        Binding("o", "app.dashboard", "Dashboard"),
        Binding("y", "app.copy_client", "Copy client", show=False),
        Binding("a", "toggle_all", "All/live", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield DaemonBanner()
        yield CostMeter()
        yield Input(placeholder="filter: words in name, status, template, provider, type or tags (Esc clears)",
                    id="filter")
        yield ClusterTable(id="clusters")
        yield DetailPane(id="detail")
        yield Footer(compact=True)

    @property
    def table(self) -> ClusterTable:
        return self.query_one(ClusterTable)

    def set_stale(self, stale: bool) -> None:
        """Grey the table while the daemon does not answer (nothing to do before it is composed:
        the daemon link can answer before the screen has mounted)."""
        for table in self.query(ClusterTable):
            table.set_class(stale, "-stale")

    def on_mount(self) -> None:
        self.table.focus()
        app: Any = self.app
        if getattr(app, "clusters", None):  # rows that arrived before this screen was composed
            self.apply(list(app.clusters.values()), app.clock(), list(app.rate_samples))
        self.query_one(DetailPane).show(None, 0.0)

    # -- data from the app ---------------------------------------------------------------------

    def apply(self, rows: list[dict[str, Any]], now: float, samples: list[float]) -> None:
        if not self.query(ClusterTable):  # not composed yet: on_mount applies the app's rows
            return
        self.table.apply(rows, now)
        self.query_one(CostMeter).update_rows(rows, samples)
        self.show_selected()

    def merge(self, row: dict[str, Any]) -> None:
        if not self.query(ClusterTable):
            return
        self.table.merge(row)
        self.show_selected()

    def show_detail(self, cluster_id: str, detail: dict[str, Any]) -> None:
        row = self.table.selected
        if row is not None and row["id"] == cluster_id:
            self.query_one(DetailPane).show(row, self.table.now, detail)

    def show_selected(self) -> None:
        pane = self.query_one(DetailPane)
        row = self.table.selected
        before = pane.row["id"] if pane.row else None
        pane.show(row, self.table.now)
        if row is not None and row["id"] != before:
            self.app.fetch_detail(row["id"], row["name"])  # type: ignore[attr-defined]

    @on(ClusterTable.RowHighlighted)
    def _highlighted(self) -> None:
        self.show_selected()

    # -- filter ---------------------------------------------------------------------------------

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("-shown")
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.table.set_filter(event.value)
        self.show_selected()

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.table.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        box.remove_class("-shown")
        self.table.focus()

    def action_toggle_all(self) -> None:
        everything = self.table.toggle_all()
        self.notify("showing every cluster in the history" if everything else
                    "showing live clusters (and those that ended in the last hour)", timeout=3)
        self.show_selected()
