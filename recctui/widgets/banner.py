"""The daemon banner: shown while the daemon does not answer, with the reconnect attempts."""

from __future__ import annotations

from textual.widgets import Static


class DaemonBanner(Static):
    DEFAULT_CSS = """
    DaemonBanner {
        dock: top; height: auto; display: none;
        background: $error; color: $text; text-style: bold; padding: 0 1;
    }
    DaemonBanner.-down { display: block; }
    DaemonBanner.-connecting { display: block; background: $warning; color: $text; }
    """

    def connecting(self, text: str = "Connecting to the RECC daemon (starting it if needed)…") -> None:
        self.set_classes("-connecting")
        self.update(text)

    def down(self, reason: str, attempt: int, retry_in: float) -> None:
        self.set_classes("-down")
        self.update(f"DAEMON UNREACHABLE: {reason} Reconnect attempt {attempt}, next in {retry_in:.0f}s. "
                    f"Data below is stale. Press ctrl+s to start a daemon.")

    def up(self) -> None:
        self.set_classes("")
        self.update("")

    @property
    def is_down(self) -> bool:
        return self.has_class("-down")
