"""One cluster's logs: scheduler and each worker, follow on/off, timestamps, filter, save.

A thread worker polls the daemon's log tail while following; new lines are found by
overlap with the previous tail and kept in a bounded buffer. A deleted cluster shows the
lines the daemon kept when it was deleted.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Log, Select, Static
from textual.worker import Worker, get_current_worker

from recc.errors import DaemonUnavailable
from recctui import format as fmt
from recctui.link import report_worker_error
from recctui.messages import LogsFetched
from recctui.screens.dialogs import SaveDialog
from recctui.widgets.banner import DaemonBanner

BUFFER_LINES = 5000
TAIL = 500
POLL_SECONDS = 1.0
ALL = "all"


class LogsScreen(Screen[None]):
    DEFAULT_CSS = """
    LogsScreen #logs-bar { height: 3; }
    LogsScreen #logs-title { width: 1fr; padding: 1 1 0 1; }
    LogsScreen #component { width: 28; }
    LogsScreen #log-filter { width: 40; }
    LogsScreen Log { height: 1fr; border: round $primary; }
    """
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("f", "toggle_follow", "Follow on/off"),
        Binding("t", "toggle_timestamps", "Timestamps"),
        Binding("slash", "filter", "Filter"),
        Binding("s", "save", "Save"),
        Binding("r", "reload", "Reload"),
    ]

    def __init__(self, row: dict[str, Any], follow: bool = True) -> None:
        super().__init__()
        self.target = dict(row)
        self.live = fmt.is_live(row)
        self.following = follow and self.live
        self.timestamps = True
        self.filter_text = ""
        self.component = ALL
        self.buffer: deque[tuple[str, str]] = deque(maxlen=BUFFER_LINES)
        self.last_tail: dict[str, list[str]] = {}
        self.components: list[str] = []
        self.fetches = 0

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield DaemonBanner()
        with Horizontal(id="logs-bar"):
            yield Static(id="logs-title")
            yield Select([(ALL, ALL)], value=ALL, allow_blank=False, id="component")
            yield Input(placeholder="filter (/)", id="log-filter")
        yield Log(max_lines=BUFFER_LINES, id="log")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"logs of {self.name_}"
        self.query_one(Log).focus()
        self._title()
        self.fetch(follow=self.following)

    @property
    def name_(self) -> str:
        return self.target["name"]

    def _title(self) -> None:
        state = ("following" if self.following else "paused") if self.live else \
            f"{self.target.get('status')}: lines kept at the end"
        ts = "timestamps" if self.timestamps else "no timestamps"
        self.query_one("#logs-title", Static).update(
            f"[b]{self.name_}[/b] · {state} · {ts} · {len(self.buffer)}/{BUFFER_LINES} lines")

    # -- fetching ---------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="logs", exit_on_error=False)
    def fetch(self, follow: bool) -> None:
        worker = get_current_worker()
        client = getattr(self.app, "client", None)
        if client is None:
            return  # no daemon yet: the banner says so
        while not worker.is_cancelled:
            try:
                logs = client.logs(self.name_, tail=TAIL)
            except DaemonUnavailable:
                logs = None  # the banner says so; keep trying while following
            if logs is not None:
                self.post_message(LogsFetched(self.name_, logs))
            if not follow:
                return
            worker.cancelled_event.wait(POLL_SECONDS)

    def on_logs_fetched(self, message: LogsFetched) -> None:
        self.fetches += 1
        added: list[tuple[str, str]] = []
        for component, lines in message.logs.items():
            added += [(component, line) for line in fmt.new_lines(self.last_tail.get(component, []), lines)]
            self.last_tail[component] = lines
        if sorted(message.logs) != sorted(self.components):
            self.components = list(message.logs)
            select = self.query_one("#component", Select)
            select.set_options([(ALL, ALL)] + [(c, c) for c in self.components])
            select.value = self.component if self.component in self.components else ALL
        self.buffer.extend(added)
        log = self.query_one(Log)
        log.write_lines([self._line(c, line) for c, line in added if self._shown(c, line)])
        self._title()

    # -- display ----------------------------------------------------------------------------------

    def _shown(self, component: str, line: str) -> bool:
        if self.component != ALL and component != self.component:
            return False
        return not self.filter_text or self.filter_text.lower() in line.lower()

    def _line(self, component: str, line: str) -> str:
        if not self.timestamps:
            line = fmt.split_timestamp(line)[1]
        return f"{component:<12} {line}"

    def redraw(self) -> None:
        log = self.query_one(Log)
        log.clear()
        log.write_lines([self._line(c, line) for c, line in self.buffer if self._shown(c, line)])
        self._title()

    @property
    def shown_lines(self) -> list[str]:
        return [self._line(c, line) for c, line in self.buffer if self._shown(c, line)]

    # -- actions -----------------------------------------------------------------------------------

    def action_back(self) -> None:
        if self.focused is self.query_one("#log-filter", Input):
            self.query_one(Log).focus()
            return
        self.workers.cancel_group(self, "logs")
        self.app.pop_screen()

    def action_toggle_follow(self) -> None:
        if not self.live:
            self.notify(f"{self.name_} is {self.target.get('status')}: there is nothing more to follow", timeout=4)
            return
        self.following = not self.following
        if self.following:
            self.fetch(follow=True)
        else:
            self.workers.cancel_group(self, "logs")
        self._title()

    def action_toggle_timestamps(self) -> None:
        self.timestamps = not self.timestamps
        self.redraw()

    def action_filter(self) -> None:
        self.query_one("#log-filter", Input).focus()

    def action_reload(self) -> None:
        if not self.following:
            self.fetch(follow=False)

    @on(Input.Changed, "#log-filter")
    def _filter(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        self.redraw()

    @on(Input.Submitted, "#log-filter")
    def _filter_done(self) -> None:
        self.query_one(Log).focus()

    @on(Select.Changed, "#component")
    def _component(self, event: Select.Changed) -> None:
        if event.value != self.component:
            self.component = str(event.value)
            self.redraw()

    def action_save(self) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        default = str(Path.cwd() / f"recc-{self.name_}-{stamp}.log")
        self.app.push_screen(SaveDialog(default), self._save_to)

    def _save_to(self, path: str | None) -> None:
        if not path:
            return
        lines = [f"{c} {line}" for c, line in self.buffer]
        try:
            Path(path).expanduser().write_text("\n".join(lines) + "\n", encoding="utf-8")
        except OSError as exc:
            self.notify(f"could not save the log to {path}: {exc.strerror or exc}", severity="error")
            return
        self.notify(f"saved {len(lines)} lines to {path}", timeout=5)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        report_worker_error(self, event)
