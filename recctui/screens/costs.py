"""Costs: accrued per cluster and per day, this month against the budgets, spend sparklines, and
for EKS clusters the exact figure from AWS's instance launch and termination times."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, Sparkline, Static

from recctui import format as fmt
from recctui.messages import CostsFetched, ExactCostsFetched
from recctui.widgets.banner import DaemonBanner

DAYS_SHOWN = 30
BAR = 40


def month_total(by_day: list[dict[str, Any]], now: float) -> float:
    """Spend in the current UTC month (the daemon's days are UTC dates; budgets reset at 00:00 UTC on the 1st)."""
    month = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m")
    return sum(d["cost"] for d in by_day if str(d.get("day", "")).startswith(month))


def budget_lines(budgets: list[Any], spend: float) -> list[Text]:
    """One line per budget: a bar of month-to-date spend with its thresholds marked."""
    if not budgets:
        return [Text("no budgets set (config.yaml: budgets: {user: {monthly: 500}})", style="dim")]
    out = []
    for b in budgets:
        if b.scope != "user":
            out.append(Text(f"{b.scope} {b.name}: {fmt.money(b.monthly_limit)}/month "
                            f"(thresholds {', '.join(f'{p}%' for p in b.thresholds)}; spend per "
                            f"{b.scope} is not shown here)", style="dim"))
            continue
        share = spend / b.monthly_limit
        filled = min(BAR, int(round(share * BAR)))
        marks = {min(BAR - 1, int(p / 100 * BAR)) for p in b.thresholds if p <= 100}
        reached = [p for p in b.thresholds if share * 100 >= p]
        style = "bold red" if reached and max(reached) >= 100 else ("yellow" if reached else "green")
        bar = Text()
        for i in range(BAR):
            char = "│" if i in marks and i >= filled else ("█" if i < filled else "░")
            bar.append(char, style=style if i < filled else "dim")
        out.append(Text.assemble(f"{b.scope} {b.name}: ", bar,
                                 f" {fmt.money(spend)} of {fmt.money(b.monthly_limit)} ({share:.0%})",
                                 (f"  reached {', '.join(f'{p}%' for p in reached)}" if reached else "", style)))
    return out


class CostsScreen(Screen[None]):
    SUB_TITLE = "costs"
    DEFAULT_CSS = """
    CostsScreen #cost-tables { height: 1fr; }
    CostsScreen #cost-tables > Vertical { width: 1fr; }
    CostsScreen DataTable { height: 1fr; }
    CostsScreen #month { height: auto; padding: 1 1 0 1; }
    CostsScreen .spark-label { padding: 0 1; color: $text-muted; }
    CostsScreen Sparkline { height: 3; margin: 0 1; }
    """
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("r", "reload", "Refresh")]

    def __init__(self) -> None:
        super().__init__()
        self.data: CostsFetched | None = None

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield DaemonBanner()
        yield Static("loading costs…", id="month")
        with Horizontal(id="cost-tables"):
            with Vertical():
                yield Label(" Per cluster (all history)", classes="spark-label")
                yield DataTable(id="by-cluster", cursor_type="row", zebra_stripes=True)
            with Vertical():
                yield Label(" Per day (UTC)", classes="spark-label")
                yield DataTable(id="by-day", cursor_type="row", zebra_stripes=True)
            with Vertical():
                yield Label(" Exact, from AWS (EKS)", classes="spark-label")
                yield Static("asking AWS for the instances' times…", id="exact-status", classes="spark-label")
                yield DataTable(id="exact", cursor_type="row", zebra_stripes=True)
        yield Label(f"Spend per day, last {DAYS_SHOWN} days", classes="spark-label", id="daily-label")
        yield Sparkline([0.0], id="daily", summary_function=max)
        yield Label("Live $/h this session", classes="spark-label", id="rate-label")
        yield Sparkline([0.0], id="rate", summary_function=max)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#by-cluster", DataTable).add_columns(("Cluster", "cluster"), ("Accrued", "cost"))
        self.query_one("#by-day", DataTable).add_columns(("Day", "day"), ("Spend", "cost"))
        self.query_one("#exact", DataTable).add_columns(("Cluster", "cluster"), ("Context", "context"),
                                                         ("Exact", "cost"))
        self.action_reload()

    def action_reload(self) -> None:
        if not getattr(self.app, "daemon_up", False):
            return
        for name in ("fetch_costs", "fetch_exact_costs"):
            fetch = getattr(self.app, name, None)
            if fetch is not None:
                fetch()

    def show_exact(self, data: ExactCostsFetched) -> None:
        """AWS's figures per EKS cluster and context; why there are none (no contexts, no login) in red or dim."""
        table = self.query_one("#exact", DataTable)
        table.clear()
        answer = data.answer
        lines: list[Text] = []
        if data.error:
            lines.append(Text(data.error, style="red"))
        elif answer.get("message"):
            lines.append(Text(answer["message"], style="dim"))
        total, rows = 0.0, 0
        for ctx in answer.get("contexts", []):
            if ctx.get("error"):
                hint = f" ({ctx['hint']})" if ctx.get("hint") else ""
                lines.append(Text(f"{ctx['context']}: {ctx['error']}{hint}", style="red"))
            for row in sorted(ctx.get("costs", []), key=lambda r: -r["cost"]):
                if "types" in row:  # instance types the catalog has no price for: named, not guessed
                    lines.append(Text(f"{ctx['context']}: unpriced {', '.join(row['types'])}", style="yellow"))
                    continue
                table.add_row(row["cluster"], ctx["context"], Text(fmt.money(row["cost"]), justify="right"))
                total, rows = total + row["cost"], rows + 1
        if not data.error and not answer.get("message"):
            days = answer.get("days", 31)
            lines.insert(0, Text(f"last {days:g} days: {fmt.money(total)}" if rows
                                 else f"no RECC instances ran in the last {days:g} days", style="bold" if rows else "dim"))
        self.query_one("#exact-status", Static).update(Text("\n").join(lines))

    def show(self, data: CostsFetched, now: float, rate_samples: list[float]) -> None:
        self.data = data
        clusters = self.query_one("#by-cluster", DataTable)
        clusters.clear()
        for c in sorted(data.by_cluster, key=lambda c: -c["cost"]):
            clusters.add_row(c["cluster"], Text(fmt.money(c["cost"]), justify="right"))
        days = self.query_one("#by-day", DataTable)
        days.clear()
        for d in sorted(data.by_day, key=lambda d: d["day"], reverse=True):
            days.add_row(d["day"], Text(fmt.money(d["cost"]), justify="right"))
        spend = month_total(data.by_day, now)
        total = sum(c["cost"] for c in data.by_cluster)
        month = datetime.fromtimestamp(now, timezone.utc).strftime("%B %Y")
        lines = [Text.assemble((f"This month ({month}):", "bold"), f" {fmt.money(spend)}",
                               f" · all history: {fmt.money(total)}")]
        if data.budget_error:
            lines.append(Text(f"budgets: {data.budget_error}", style="red"))
        lines += budget_lines(data.budgets, spend)
        self.query_one("#month", Static).update(Text("\n").join(lines))
        daily = [d["cost"] for d in sorted(data.by_day, key=lambda d: d["day"])][-DAYS_SHOWN:]
        self.query_one("#daily", Sparkline).data = daily or [0.0]
        self.show_rate(rate_samples)

    def show_rate(self, samples: list[float]) -> None:
        if not self.query("#rate"):
            return  # pushed but not composed yet: its first fill shows the samples
        self.query_one("#rate", Sparkline).data = fmt.sparkline_values(samples, 120)
        current = samples[-1] if samples else 0.0
        self.query_one("#rate-label", Label).update(
            f"Live $/h this session (now {fmt.rate(current)}, peak {fmt.rate(max(samples, default=0.0))})")
