"""The cost meter: what the live clusters cost per hour and so far, with a sparkline of $/h."""

from __future__ import annotations

from typing import Any, Sequence

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Sparkline, Static

from recctui import format as fmt


def live_rate(rows: Sequence[dict[str, Any]]) -> float:
    """Total $/h of the live clusters."""
    return sum(r.get("cost_per_hour") or 0.0 for r in rows if fmt.is_live(r))


class CostMeter(Horizontal):
    DEFAULT_CSS = """
    CostMeter { height: 1; padding: 0 1; background: $boost; }
    CostMeter #meter-text { width: 66; }
    CostMeter Sparkline { width: 1fr; margin-left: 2; }
    """

    _text = ""

    def compose(self) -> ComposeResult:
        yield Static("no data yet", id="meter-text")
        yield Sparkline([0.0], summary_function=max)

    def update_rows(self, rows: Sequence[dict[str, Any]], samples: Sequence[float]) -> None:
        live = [r for r in rows if fmt.is_live(r)]
        accrued = sum(r.get("total_cost") or 0.0 for r in live)
        text = f"{len(live)} live · {fmt.rate(live_rate(rows))} · accrued {fmt.money(accrued)} · $/h over time:"
        if text != self._text:  # an update re-lays out the screen: only when it changed
            self._text = text
            self.query_one("#meter-text", Static).update(text, layout=False)  # fixed width
        values = fmt.sparkline_values(samples, 120)
        sparkline = self.query_one(Sparkline)
        if list(sparkline.data or []) != values:
            sparkline.data = values
