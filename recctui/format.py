"""Pure formatting for the dashboard: a cluster's view (a dict from the daemon) to cells and words.

No Textual and no I/O here, so the same functions serve the table, the detail pane, the
benchmark and the tests. ``now`` is always passed in (the app's clock) so output is
deterministic for snapshots.
"""

from __future__ import annotations

import re
from functools import lru_cache
from datetime import datetime, timezone
from typing import Any, Iterable

from rich.text import Text

from recc.harvest import format_duration
from recc.plan import format_money

LIVE = ("pending", "creating", "running", "scaling", "deleting")
STATUS_STYLE = {
    "running": "bold green", "scaling": "yellow", "creating": "yellow", "pending": "yellow",
    "deleting": "magenta", "deleted": "dim", "failed": "bold red",
}
TUNNEL_STYLE = {"up": "green", "connecting": "yellow", "down": "bold red", "closed": "dim"}

RIGHT = frozenset({"rate", "accrued"})  # right-aligned columns
# (key, label): the table's columns, in order; what matters most first, so a narrow
# terminal cuts provider and template (the table scrolls sideways for them)
COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "Name"), ("status", "Status"), ("workers", "Workers"), ("rate", "$/h"), ("accrued", "Accrued"),
    ("harvest", "Idle / harvest in"), ("tunnel", "Tunnel"), ("age", "Age"), ("nodes", "Nodes"),
    ("provider", "Provider"), ("template", "Template"),
)
COLUMN_KEYS = tuple(k for k, _ in COLUMNS)

_TS = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[,.]\d+)?\s*(?:-\s+)?")


@lru_cache(maxsize=8192)  # prices repeat across rows; a refresh of 1,000 rows formats 2,000 amounts
def money(amount: float | None) -> str:
    return "—" if amount is None else format_money(amount)


def rate(amount: float | None) -> str:
    return "—" if amount is None else f"{money(amount)}/h"


def duration(seconds: float | None) -> str:
    return "—" if seconds is None else _duration(int(round(max(0.0, seconds))))


@lru_cache(maxsize=8192)
def _duration(seconds: int) -> str:
    return format_duration(seconds).replace(" ", "")


def is_live(row: dict[str, Any]) -> bool:
    return row.get("status") in LIVE


# A table cell: (text, style). Plain pairs, not rich Text: the table renders 1,000 rows
# of them per refresh; the detail pane wraps them in Text.
Cell = tuple[str, str]


def status_cell(row: dict[str, Any]) -> Cell:
    status = row.get("status") or "?"
    label = status
    progress = row.get("_progress")
    if status == "creating" and progress:
        label = f"creating ({progress})"
    if row.get("error") and status == "failed":
        label = "failed!"
    return label, STATUS_STYLE.get(status, "")


def workers_cell(row: dict[str, Any], live: bool | None = None) -> Cell:
    w = row.get("workers") or {}
    ready, desired = w.get("ready", 0), w.get("desired", 0)
    live = is_live(row) if live is None else live
    return f"{ready}/{desired}", "" if not live or ready >= desired else "yellow"


def nodes_cell(row: dict[str, Any], live: bool | None = None) -> Cell:
    nodes = row.get("nodes") or 0
    planned = row.get("planned_nodes")
    itype = row.get("instance_type") or "?"
    if not (is_live(row) if live is None else live):
        return f"0×{itype}", "dim"
    if not nodes and planned:
        return f"0/{planned}×{itype}", "yellow"
    return f"{nodes}×{itype}", ""


def idle_seconds(row: dict[str, Any], now: float) -> float | None:
    idle = row.get("idle") or {}
    last = idle.get("last_activity")
    return None if last is None else max(0.0, now - last)


def harvest_in(row: dict[str, Any], now: float) -> float | None:
    """Seconds until the daemon harvests this cluster (None: no deadline known)."""
    h = row.get("harvest") or {}
    if h.get("deadline") is not None:
        return max(0.0, h["deadline"] - now)
    return h.get("seconds_left")


def harvest_cell(row: dict[str, Any], now: float, live: bool | None = None) -> Cell:
    if not (is_live(row) if live is None else live):
        who = row.get("deleted_by")
        return (f"by {who}" if who else "—"), "dim"
    idle, left = idle_seconds(row, now), harvest_in(row, now)
    if idle is None and left is None:
        return "—", ""
    action = (row.get("harvest") or {}).get("action")
    return f"{duration(idle)} / {duration(left)}", "bold red" if action in ("warn", "harvest") else ""


def tunnel_cell(row: dict[str, Any], live: bool | None = None) -> Cell:
    if not (is_live(row) if live is None else live):
        return "—", "dim"
    t = row.get("tunnel") or {}
    state = t.get("state", "down")
    label = "listening" if state == "connecting" and not t.get("retries") else state
    if state == "down" and t.get("retries"):
        label = f"down ×{t['retries']}"
    return label, TUNNEL_STYLE.get(state, "")


def as_text(cell: Cell) -> Text:
    return Text(cell[0], style=cell[1])


def cells(row: dict[str, Any], now: float) -> tuple[Cell, ...]:
    """The table cells of one cluster, in `COLUMNS` order."""
    live = row.get("status") in LIVE
    dim = "" if live else "dim"
    name_style = "bold" if live else ("dim strike" if row.get("status") == "deleted" else "bold dim")
    return (
        (row.get("name", "?"), name_style), status_cell(row), workers_cell(row, live),
        (money(row.get("cost_per_hour")), dim), (money(row.get("total_cost")), dim),
        harvest_cell(row, now, live), tunnel_cell(row, live), (duration(row.get("age_seconds")), dim),
        nodes_cell(row, live), (row.get("provider") or "?", dim), (row.get("template") or "?", dim),
    )


def sort_key(row: dict[str, Any], column: str, now: float) -> Any:
    """What a column sorts by: numbers as numbers, text as text."""
    if column == "workers":
        w = row.get("workers") or {}
        return (w.get("ready", 0), w.get("desired", 0))
    if column == "nodes":
        return row.get("nodes") or 0
    if column == "rate":
        return row.get("cost_per_hour") or 0.0
    if column == "accrued":
        return row.get("total_cost") or 0.0
    if column == "harvest":
        left = harvest_in(row, now)
        return float("inf") if left is None else left
    if column == "age":
        return row.get("age_seconds") or 0.0
    if column == "tunnel":
        return (row.get("tunnel") or {}).get("state", "")
    if column == "status":
        return (row.get("status") not in LIVE, row.get("status") or "")
    return str(row.get(column) or "")


def matches(row: dict[str, Any], needle: str) -> bool:
    """The live filter: every word must appear in name, status, template, provider, type or tags."""
    if not needle.strip():
        return True
    spec = row.get("spec") or {}
    hay = " ".join(str(x) for x in (
        row.get("name"), row.get("status"), row.get("template"), row.get("provider"), row.get("instance_type"),
        row.get("id"), *(f"{k}={v}" for k, v in (spec.get("tags") or {}).items()))).lower()
    return all(word in hay for word in needle.lower().split())


def projected_cost(row: dict[str, Any], now: float) -> float | None:
    """Accrued cost plus $/h until the harvest deadline (None if there is no deadline)."""
    left = harvest_in(row, now)
    if left is None or row.get("cost_per_hour") is None:
        return None
    return (row.get("total_cost") or 0.0) + row["cost_per_hour"] * left / 3600.0


def clock(t: float | None) -> str:
    if t is None:
        return "—"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def split_timestamp(line: str) -> tuple[str, str]:
    """A log line's leading timestamp (Dask's ``2026-08-01 12:00:00,123 - ``) and the rest."""
    m = _TS.match(line)
    return (m.group(0), line[m.end():]) if m else ("", line)


def new_lines(old: list[str], new: list[str]) -> list[str]:
    """Lines of ``new`` (a later tail of the same log) that ``old`` did not have.

    The tail window slides, so ``new`` is a suffix of ``old`` followed by what was added:
    find the longest suffix of ``old`` that starts ``new``.
    """
    if not old:
        return list(new)
    for start in range(max(0, len(old) - len(new)), len(old)):
        overlap = len(old) - start
        if old[start:] == new[:overlap]:
            return new[overlap:]
    return list(new)  # no overlap: the log was rotated or the window skipped past everything


def sparkline_values(samples: Iterable[float], width: int = 60) -> list[float]:
    values = list(samples)[-width:]
    return values or [0.0]


def markup_escape(text: str) -> str:
    """Text shown through Textual markup (notifications) without its brackets read as tags."""
    return text.replace("[", r"\[")
