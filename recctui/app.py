"""`recc-tui`: the RECC dashboard (clusters, costs, logs). A placeholder until the TUI issue lands."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.widgets import Footer, Header, Static


class RECCApp(App[None]):
    TITLE = "RECC"
    BINDINGS = [("q", "quit", "Quit")]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("The RECC dashboard is not built yet. Use `recc ls`, `recc up`, `recc down`.")
        yield Footer()


def main() -> None:
    RECCApp().run()
