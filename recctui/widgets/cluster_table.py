"""The clusters table: rows keyed by cluster id, sorted and filtered locally, drawn line by line.

A `ScrollView` with Textual's line API rather than a `DataTable`: a refresh of 1,000 rows
filters and sorts the daemon's rows, and only the rows on screen are ever formatted (plain
``(text, style)`` cells), measured (string lengths) and drawn. The cursor follows its cluster across
refreshes, sorts and filters; the scroll position stays where the user left it.
"""

from __future__ import annotations

from typing import Any

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from recctui import format as fmt

RECENT_SECONDS = 3600.0  # gone clusters stay listed this long unless "show all" is on
PAD = 1  # spaces either side of a cell


class ClusterTable(ScrollView, can_focus=True):
    COMPONENT_CLASSES = {"cluster-table--header", "cluster-table--cursor", "cluster-table--even"}
    DEFAULT_CSS = """
    ClusterTable { height: 1fr; background: $surface; color: $foreground; }
    ClusterTable > .cluster-table--header { text-style: bold; background: $panel; color: $foreground; }
    ClusterTable > .cluster-table--even { background: $surface-lighten-1 50%; }
    ClusterTable > .cluster-table--cursor {
        background: $block-cursor-blurred-background; color: $block-cursor-blurred-foreground;
    }
    ClusterTable:focus > .cluster-table--cursor {
        background: $block-cursor-background; color: $block-cursor-foreground; text-style: bold;
    }
    """
    BINDINGS = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "cursor_to(0)", "First", show=False),
        Binding("end", "cursor_to(-1)", "Last", show=False),
        Binding("s", "cycle_sort", "Sort", show=False),
        Binding("S", "reverse_sort", "Reverse sort", show=False),
    ]

    class RowHighlighted(Message):
        """The cursor is on another cluster (or on none)."""

        def __init__(self, cluster_id: str | None) -> None:
            super().__init__()
            self.cluster_id = cluster_id

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rows_by_id: dict[str, dict[str, Any]] = {}
        self.filter_text = ""
        self.show_all = False
        self.sort_column = "name"
        self.sort_reverse = False
        self.now = 0.0
        self.cursor_row = 0
        self._order: list[str] = []
        self._cells: dict[str, tuple[fmt.Cell, ...]] = {}
        self._widths: list[int] = [cell_len(label) + 2 for _, label in fmt.COLUMNS]
        self._styles: dict[str, Style] = {}
        self._highlighted: str | None = None

    # -- what the rest of the app asks --------------------------------------------------------

    @property
    def cursor_id(self) -> str | None:
        """The id of the cluster under the cursor (None on an empty table)."""
        return self._order[self.cursor_row] if 0 <= self.cursor_row < len(self._order) else None

    @property
    def selected(self) -> dict[str, Any] | None:
        cid = self.cursor_id
        return self.rows_by_id.get(cid) if cid else None

    @property
    def visible_ids(self) -> list[str]:
        return list(self._order)

    def cell(self, cid: str, column: str) -> str:
        """The text shown for ``cid`` in ``column`` ("" if that row is not shown)."""
        if cid not in self._order:
            return ""
        return self._row_cells(cid)[fmt.COLUMN_KEYS.index(column)][0]

    def select_id(self, cid: str) -> None:
        if cid in self._order:
            self.move_cursor(self._order.index(cid))

    # -- updates --------------------------------------------------------------------------------

    def apply(self, rows: list[dict[str, Any]], now: float) -> None:
        """Replace the known rows with the daemon's and redraw."""
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
        now, column, cursor = self.now, self.sort_column, self.cursor_id
        shown = [r for r in self.rows_by_id.values() if self._visible(r)]
        shown.sort(key=lambda r: (fmt.sort_key(r, column, now), r.get("name") or "", r["id"]),
                   reverse=self.sort_reverse)
        self._order = [r["id"] for r in shown]
        self._cells = {}  # formatted lazily: only the rows on screen are ever formatted
        if cursor in self.rows_by_id and cursor in set(self._order):
            self.cursor_row = self._order.index(cursor)
        else:
            self.cursor_row = max(0, min(self.cursor_row, len(self._order) - 1))
        self._fit()
        self.refresh()
        self._announce()

    def _row_cells(self, cid: str) -> tuple[fmt.Cell, ...]:
        cells = self._cells.get(cid)
        if cells is None:
            cells = self._cells[cid] = fmt.cells(self.rows_by_id[cid], self.now)
        return cells

    def _fit(self) -> None:
        """Widen columns to what the rows on screen need (columns never shrink while shown)."""
        top = int(self.scroll_y)
        window = self._order[top:top + max(1, self.scrollable_content_region.height)]
        widths = self._widths
        for cid in window:
            for i, (text, _) in enumerate(self._row_cells(cid)):
                if len(text) > widths[i]:
                    widths[i] = cell_len(text)
        self.virtual_size = Size(sum(widths) + 2 * PAD * len(widths), len(self._order) + 1)

    def _announce(self) -> None:
        cid = self.cursor_id
        if cid != self._highlighted:
            self._highlighted = cid
            self.post_message(self.RowHighlighted(cid))

    # -- cursor and scrolling ---------------------------------------------------------------------

    def move_cursor(self, row: int) -> None:
        if not self._order:
            return
        self.cursor_row = max(0, min(row, len(self._order) - 1))
        visible = max(1, self.scrollable_content_region.height - 1)
        top = int(self.scroll_y)
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False)
        elif self.cursor_row >= top + visible:
            self.scroll_to(y=self.cursor_row - visible + 1, animate=False)
        self.refresh()
        self._announce()

    def action_cursor(self, delta: int) -> None:
        self.move_cursor(self.cursor_row + delta)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self.cursor_row + direction * max(1, self.scrollable_content_region.height - 2))

    def action_cursor_to(self, index: int) -> None:
        self.move_cursor(index if index >= 0 else len(self._order) - 1)

    def on_click(self, event: events.Click) -> None:
        if event.y == 0:
            self.sort_by(self._column_at(event.x + int(self.scroll_x)))
        else:
            self.move_cursor(int(self.scroll_y) + event.y - 1)

    def _column_at(self, x: int) -> str:
        for (key, _), width in zip(fmt.COLUMNS, self._widths):
            x -= width + 2 * PAD
            if x < 0:
                return key
        return fmt.COLUMN_KEYS[-1]

    # -- sorting and filtering ----------------------------------------------------------------------

    def set_filter(self, text: str) -> None:
        self.filter_text = text
        self._widths = [cell_len(label) + 2 for _, label in fmt.COLUMNS]  # fit the new set afresh
        self.redraw()

    def toggle_all(self) -> bool:
        self.show_all = not self.show_all
        self.redraw()
        return self.show_all

    def sort_by(self, column: str, reverse: bool | None = None) -> None:
        if reverse is None:
            reverse = not self.sort_reverse if column == self.sort_column else False
        self.sort_column, self.sort_reverse = column, reverse
        self.redraw()
        self.move_cursor(self.cursor_row)  # keep the cluster under the cursor in view

    def action_cycle_sort(self) -> None:
        keys = fmt.COLUMN_KEYS
        self.sort_by(keys[(keys.index(self.sort_column) + 1) % len(keys)], reverse=False)

    def action_reverse_sort(self) -> None:
        self.sort_by(self.sort_column, reverse=not self.sort_reverse)

    # -- drawing ----------------------------------------------------------------------------------

    def _style(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            style = self._styles[name] = Style.parse(name) if name else Style()
        return style

    def _segments(self, cells: list[fmt.Cell], base: Style, keep_color: bool) -> list[Segment]:
        out = []
        for (key, _), width, (text, style) in zip(fmt.COLUMNS, self._widths, cells):
            gap = width - cell_len(text)
            text = " " * gap + text if key in fmt.RIGHT else text + " " * gap
            cell_style = base + self._style(style) if keep_color else base + Style(bold=self._style(style).bold)
            out.append(Segment(" " * PAD, base))
            out.append(Segment(text, cell_style))
            out.append(Segment(" " * PAD, base))
        return out

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        scroll_x, scroll_y = int(self.scroll_x), int(self.scroll_y)
        base = self.rich_style
        if y == 0:
            header = self.get_component_rich_style("cluster-table--header")
            arrow = " ▼" if self.sort_reverse else " ▲"
            labels = [(label + (arrow if key == self.sort_column else ""), "") for key, label in fmt.COLUMNS]
            strip = Strip(self._segments(labels, base + header, True))
            return strip.crop_extend(scroll_x, scroll_x + width, base + header)
        index = scroll_y + y - 1
        if index >= len(self._order):
            return Strip.blank(width, base)
        cid = self._order[index]
        if index == self.cursor_row:
            style, keep = base + self.get_component_rich_style("cluster-table--cursor"), False
        elif index % 2:
            style, keep = base + self.get_component_rich_style("cluster-table--even"), True
        else:
            style, keep = base, True
        strip = Strip(self._segments(list(self._row_cells(cid)), style, keep))
        return strip.crop_extend(scroll_x, scroll_x + width, style)

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        self._fit()  # rows that come into view may need wider columns
        self.refresh()

    def on_resize(self) -> None:
        self._fit()
        self.refresh(Region(0, 0, self.size.width, self.size.height))
