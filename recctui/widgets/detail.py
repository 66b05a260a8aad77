"""The detail pane: tabs with one cluster's spec, endpoints, tags, events and cost."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static, TabbedContent, TabPane

from recctui import format as fmt

TABS = (("spec", "Spec"), ("endpoints", "Endpoints"), ("tags", "Tags"), ("events", "Events"), ("cost", "Cost"))
SIZE_FIELDS = ("worker_memory", "scheduler_memory")
TIME_FIELDS = ("idle_timeout", "no_client_timeout", "heartbeat_ttl", "harvest_warning")


def _grid(pairs: list[tuple[str, Any]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for key, value in pairs:
        table.add_row(key, value if isinstance(value, Text) else Text(str(value)))
    return table


def _spec_value(key: str, value: Any) -> str:
    if key in SIZE_FIELDS and isinstance(value, (int, float)):
        return f"{value / 2**30:g} GiB"
    if key in TIME_FIELDS:
        return fmt.duration(value) if value is not None else "off"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "—"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "—"
    return str(value)


def spec_view(row: dict[str, Any]) -> list[tuple[str, Any]]:
    spec = row.get("spec") or {}
    pairs: list[tuple[str, Any]] = [("id", row.get("id")), ("status", fmt.as_text(fmt.status_cell(row)))]
    if row.get("error"):
        pairs.append(("error", Text(row["error"], style="bold red")))
    if row.get("deleted_reason"):
        pairs.append(("ended", f"{row['deleted_reason']} (by {row.get('deleted_by') or '?'})"))
    pairs += [(k, _spec_value(k, v)) for k, v in spec.items() if k not in ("tags", "env")]
    return pairs


def endpoints_view(row: dict[str, Any]) -> list[tuple[str, Any]]:
    ep = row.get("endpoints") or {}
    tunnel = row.get("tunnel") or {}
    live = fmt.is_live(row)
    pairs: list[tuple[str, Any]] = [
        ("scheduler", ep.get("scheduler") or "—"),
        ("dashboard", ep.get("dashboard") or "—"),
        ("tunnel", fmt.as_text(fmt.tunnel_cell(row))),
    ]
    if live and tunnel.get("last_error"):
        pairs.append(("last error", Text(tunnel["last_error"], style="red")))
    if live and tunnel.get("upstream"):
        pairs.append(("upstream", tunnel["upstream"]))
    pairs.append(("connect", f'RSHClient("{row.get("name")}")'))
    if live:
        pairs.append(("", Text("o: open the dashboard (with its token) · y: copy the RSHClient line", style="dim")))
    return pairs


def tags_view(row: dict[str, Any]) -> list[tuple[str, Any]]:
    spec = row.get("spec") or {}
    pairs: list[tuple[str, Any]] = [(k, v) for k, v in (spec.get("tags") or {}).items()]
    for key in ("owner", "job_id"):
        if row.get(key):
            pairs.append((key, row[key]))
    pairs += [(f"env {k}", v) for k, v in (spec.get("env") or {}).items()]
    return pairs or [("", "no tags")]


def events_view(row: dict[str, Any], detail: dict[str, Any] | None) -> list[tuple[str, ...]]:
    """(time, kind, message, style) per event, newest first."""
    events = (detail or {}).get("events")
    if events is None:
        return [("", "", "loading…", "dim")]
    out = []
    for ev in reversed(events[-200:]):
        style = "red" if ev.get("kind") in ("cluster.harvest-warning", "cluster.harvested") else ""
        out.append((fmt.clock(ev.get("at")), ev.get("kind", ""), ev.get("message") or "", style))
    return out or [("", "", "no events", "dim")]


def _events_table(rows: list[tuple[str, ...]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim", no_wrap=True)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for at, kind, message, style in rows:
        table.add_row(at, kind, Text(message, style=style))
    return table


def cost_view(row: dict[str, Any], now: float) -> list[tuple[str, Any]]:
    harvest = row.get("harvest") or {}
    projected = fmt.projected_cost(row, now)
    pairs: list[tuple[str, Any]] = [
        ("$/h", fmt.rate(row.get("cost_per_hour"))),
        ("accrued", fmt.money(row.get("total_cost"))),
        ("nodes", fmt.as_text(fmt.nodes_cell(row))),
        ("harvest in", fmt.duration(fmt.harvest_in(row, now))),
        ("projected", f"{fmt.money(projected)} until harvest" if projected is not None else "— (no deadline)"),
    ]
    if harvest.get("reason"):
        pairs.append(("reason", harvest["reason"]))
    if harvest.get("extended_until"):
        pairs.append(("extended until", fmt.clock(harvest["extended_until"])))
    return pairs


class DetailPane(Vertical):
    DEFAULT_CSS = """
    DetailPane { height: 14; }
    DetailPane TabbedContent { height: 1fr; }
    DetailPane TabPane { padding: 0 1; }
    DetailPane VerticalScroll { height: 1fr; }
    DetailPane VerticalScroll > Static { width: 1fr; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.row: dict[str, Any] | None = None
        self.detail: dict[str, Any] | None = None
        self._shown: dict[str, Any] = {}  # per tab, the data on screen: redraw only what changed

    def compose(self) -> ComposeResult:
        with TabbedContent():
            for key, title in TABS:
                with TabPane(title, id=f"tab-{key}"):
                    with VerticalScroll():
                        yield Static(id=f"detail-{key}")

    def show(self, row: dict[str, Any] | None, now: float, detail: dict[str, Any] | None = None) -> None:
        """Show ``row``; ``detail`` (from get_cluster, with events) when it has come."""
        if row is None:
            for key, _ in TABS:
                self._put(key, "no cluster selected")
            self.row = self.detail = None
            return
        if self.row is None or self.row.get("id") != row.get("id"):
            self.detail = None
        self.row = row
        if detail is not None:
            self.detail = detail
        views = {"spec": spec_view(row), "endpoints": endpoints_view(row), "tags": tags_view(row),
                 "events": events_view(row, self.detail), "cost": cost_view(row, now)}
        for key, data in views.items():
            self._put(key, data)

    def _put(self, key: str, data: Any) -> None:
        before = self._shown.get(key)
        if before == data:
            return  # nothing changed: no update, no layout
        # same number of lines (a ticking countdown, a new cost): no need to lay the screen out again
        same_shape = isinstance(before, list) and isinstance(data, list) and len(before) == len(data)
        for static in self.query(f"#detail-{key}").results(Static):  # none until the tabs are composed
            self._shown[key] = data
            static.update(data if isinstance(data, str) else _events_table(data) if key == "events" else
                          _grid(data), layout=not same_shape)
