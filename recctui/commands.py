"""The command palette (Ctrl+P): every action, for the selected cluster and by cluster name."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Iterator

from textual.command import DiscoveryHit, Hit, Hits, Provider

from recctui import format as fmt

# (title, action method, help); per-cluster ones take the cluster's name
GLOBAL = (
    ("Create a cluster", "action_create", "pick a template, see the plan and its $/h, confirm"),
    ("Costs", "action_costs", "accrued per cluster and per day, this month against the budgets"),
    ("Refresh", "action_refresh", "ask the daemon for every cluster now"),
    ("Show all clusters / live only", "action_toggle_all", "include clusters deleted more than an hour ago"),
    ("Filter clusters", "action_filter", "type to filter the table (/)"),
    ("Start the daemon", "action_start_daemon", "start reccd if it is not running"),
    ("Extend the warned cluster", "action_extend_warned", "answer the last harvest warning (30 minutes)"),
)
PER_CLUSTER = (
    ("Logs", "action_logs", "scheduler and worker logs", False),
    ("Scale", "action_scale", "change the number of workers", True),
    ("Extend", "action_extend", "postpone the idle harvest by 30 minutes", True),
    ("Delete", "action_delete", "delete the cluster (asks for its name)", True),
    ("Open dashboard", "action_dashboard", "open the Dask dashboard in the browser", True),
    ("Copy RSHClient line", "action_copy_client", "copy RSHClient(\"name\") to the clipboard", False),
)


class ClusterCommands(Provider):
    def _commands(self) -> Iterator[tuple[str, Callable[[], Any], str]]:
        app: Any = self.app
        for title, method, help_text in GLOBAL:
            yield title, getattr(app, method), help_text
        selected = app.target_quiet()
        if selected is not None:
            for title, method, help_text, needs_live in PER_CLUSTER:
                if fmt.is_live(selected) or not needs_live:
                    yield f"{title} (selected: {selected['name']})", partial(getattr(app, method), selected["name"]), \
                        help_text
        for row in sorted(app.clusters.values(), key=lambda r: r["name"]):
            if not fmt.is_live(row):
                continue
            for title, method, help_text, _ in PER_CLUSTER:
                yield f"{title}: {row['name']}", partial(getattr(app, method), row["name"]), help_text

    async def discover(self) -> Hits:
        seen = 0
        for title, callback, help_text in self._commands():
            if ":" in title and seen > 40:
                continue  # the per-cluster list is for searching, not browsing
            seen += 1
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, callback, help_text in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, text=title, help=help_text)
