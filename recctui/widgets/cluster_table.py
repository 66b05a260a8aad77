"""The clusters table: rows keyed by cluster id, updated in place, sorted and filtered locally.

`apply` takes the daemon's rows and changes only what changed: cells are updated where
they differ, rows are added or removed by key, and the order is set with `DataTable.sort`,
so neither the cursor (which follows its cluster) nor the scroll position jumps.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey

from recctui import format as fmt

RECENT_SECONDS = 3600.0  # gone clusters stay listed this long unless "show all" is on


class ClusterTable(DataTable):
    DEFAULT_CSS = """
    ClusterTable { height: 1fr; }
    """
    BINDINGS = [
        Binding("s", "cycle_sort", "Sort", show=False),
        Binding("S", "reverse_sort", "Reverse", show=False),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.rows_by_id: dict[str, dict[str, Any]] = {}
        self.filter_text = ""
        self.show_all = False
        self.sort_column = "name"
        self.sort_reverse = False
        self.now = 0.0
        self._cells: dict[str, tuple[Any, ...]] = {}
        self._order: list[str] = []

    def on_mount(self) -> None:
        for key, label in fmt.COLUMNS:
            self.add_column(label, key=key)
        self._label_columns()

    # -- what the rest of the app asks --------------------------------------------------

    @property
    def cursor_id(self) -> str | None:
        """The id of the cluster under the cursor (None on an empty table)."""
        if not self._order or not 0 <= self.cursor_row < len(self._order):
            return None
        return self.coordinate_to_cell_key((self.cursor_row, 0)).row_key.value

    @property
    def selected(self) -> dict[str, Any] | None:
        cid = self.cursor_id
        return self.rows_by_id.get(cid) if cid else None

    @property
    def visible_ids(self) -> list[str]:
        return list(self._order)

    def select_id(self, cid: str) -> None:
        if cid in self._order:
            self.move_cursor(row=self.get_row_index(cid))

    # -- updates ----------------------------------------------------------------------------

    def apply(self, rows: list[dict[str, Any]], now: float) -> None:
        """Replace the known rows with the daemon's and redraw what changed."""
        self.rows_by_id = {r["id"]: r for r in rows}
        self.now = now
        self.redraw()

    def merge(self, row: dict[str, Any]) -> None:
        """Change one row (from an event) without a full refresh."""
        self.rows_by_id[row["id"]] = row
        self.redraw()

    def _visible(self, row: dict[str, Any]) -> bool:
        if not self.show_all and not fmt.is_live(row):
            ended = row.get("deleted_at")
            if ended is None or self.now - ended > RECENT_SECONDS:
                return False
        return fmt.matches(row, self.filter_text)

    def redraw(self) -> None:
        now, column = self.now, self.sort_column
        shown = [r for r in self.rows_by_id.values() if self._visible(r)]
        shown.sort(key=lambda r: (fmt.sort_key(r, column, now), r.get("name") or "", r["id"]),
                   reverse=self.sort_reverse)
        keys = [r["id"] for r in shown]
        cursor = self.cursor_id
        wanted = set(keys)
        for gone in [k for k in self._order if k not in wanted]:
            self.remove_row(gone)
            self._cells.pop(gone, None)
        current = set(self._order)
        for row in shown:
            cid, new = row["id"], fmt.cells(row, now)
            if cid not in current:
                self.add_row(*new, key=cid)
            else:
                old = self._cells[cid]
                for i, (key, _) in enumerate(fmt.COLUMNS):
                    if old[i] != new[i]:
                        grew = len(fmt.plain(new[i])) > len(fmt.plain(old[i]))
                        self.update_cell(cid, key, new[i], update_width=grew)
                # keep the objects the table holds: the sort below finds rows by identity
                new = tuple(o if o == n else n for o, n in zip(old, new))
            self._cells[cid] = new
        if keys != self._ordered_keys():
            rank = {id(self._cells[k][0]): i for i, k in enumerate(keys)}
            self.sort(key=lambda values: rank[id(values[0])])
        self._order = keys
        if cursor in wanted:
            index = keys.index(cursor)
            if index != self.cursor_row:
                self.move_cursor(row=index, scroll=False)

    def _ordered_keys(self) -> list[str]:
        return [self.coordinate_to_cell_key((i, 0)).row_key.value for i in range(self.row_count)]

    # -- sorting and filtering ------------------------------------------------------------------

    def set_filter(self, text: str) -> None:
        self.filter_text = text
        self.redraw()

    def toggle_all(self) -> bool:
        self.show_all = not self.show_all
        self.redraw()
        return self.show_all

    def sort_by(self, column: str, reverse: bool | None = None) -> None:
        if reverse is None:
            reverse = not self.sort_reverse if column == self.sort_column else False
        self.sort_column, self.sort_reverse = column, reverse
        self._label_columns()
        self.redraw()

    def action_cycle_sort(self) -> None:
        keys = fmt.COLUMN_KEYS
        self.sort_by(keys[(keys.index(self.sort_column) + 1) % len(keys)], reverse=False)

    def action_reverse_sort(self) -> None:
        self.sort_by(self.sort_column, reverse=not self.sort_reverse)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(str(event.column_key.value))

    def _label_columns(self) -> None:
        for key, label in fmt.COLUMNS:
            column = self.columns.get(ColumnKey(key))
            if column is None:
                continue
            arrow = (" ▼" if self.sort_reverse else " ▲") if key == self.sort_column else ""
            column.label = Text(label + arrow)
            column.content_width = max(column.content_width, len(label) + 2)
        self._require_update_dimensions = True
        self.refresh()
