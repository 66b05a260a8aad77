"""`recc logs NAME [--follow]`: log lines per component, new lines only on each round.

Providers with incremental logs (EKS) answer a round with ``since_seconds`` (the time since the
previous round plus `SLACK`) and timestamped lines, so a round over 300 pods moves a few
seconds of lines, not every pod's whole log; the overlap the slack brings is dropped here by
each component's last timestamp. Other providers (``local``: files on this machine) answer whole
logs without timestamps, and lines are counted instead.
"""

from __future__ import annotations

import math
import time
from typing import Any, Iterator

INTERVAL = 1.0  # seconds between follow rounds
SLACK = 2  # seconds of overlap per round: a line written just before the previous round is not lost


def stamp_key(line: str) -> tuple[tuple[str, int], str] | None:
    """``((seconds, nanoseconds), text)`` of a ``<RFC 3339 time> <text>`` line; None if it has no time.

    Kubernetes trims trailing zeros of the fraction (RFC3339Nano), so times compare as numbers, not text."""
    stamp, sep, text = line.partition(" ")
    if not sep or len(stamp) < 20 or stamp[4] != "-" or stamp[10] != "T":
        return None
    head, _, frac = stamp.partition(".")
    digits = "".join(c for c in frac if c.isdigit())
    return (head[:19], int(digits.ljust(9, "0")[:9]) if digits else 0), text


class _Cursor:
    """The newest time seen for one component and how many lines carried exactly that time."""

    def __init__(self) -> None:
        self.at: tuple[str, int] | None = None
        self.count = 0

    def new(self, lines: list[str]) -> list[str]:
        out, at, count, skip = [], self.at, self.count, self.count
        for line in lines:
            parsed = stamp_key(line)
            if parsed is None:
                out.append(line)
                continue
            key, text = parsed
            if self.at is not None and key < self.at:
                continue  # shown in an earlier round
            if self.at is not None and key == self.at and skip > 0:
                skip -= 1
                continue
            out.append(text)
            if at is None or key > at:
                at, count = key, 1
            else:
                count += 1
        self.at, self.count = at, count
        return out


def follow(daemon: Any, name: str, tail: int | None = None, keep_going: bool = False,
           interval: float = INTERVAL) -> Iterator[tuple[str, str]]:
    """Yield ``(component, line)``: the logs (the last ``tail`` lines of each component), then,
    with ``keep_going``, new lines as they come until interrupted."""
    page = daemon.logs_page(name, tail=tail, timestamps=True)
    if not page.get("timestamps"):
        yield from _follow_counting(daemon, name, tail, keep_going, interval)
        return
    cursors: dict[str, _Cursor] = {}
    asked = time.monotonic()
    while True:
        for component, lines in sorted(page["logs"].items()):
            for line in cursors.setdefault(component, _Cursor()).new(lines):
                yield component, line
        if not keep_going:
            return
        time.sleep(interval)
        since = math.ceil(time.monotonic() - asked) + SLACK
        asked = time.monotonic()
        page = daemon.logs_page(name, since_seconds=since, timestamps=True)


def _follow_counting(daemon: Any, name: str, tail: int | None, keep_going: bool,
                     interval: float) -> Iterator[tuple[str, str]]:
    """Whole logs every round; new lines are those past the count already shown."""
    seen: dict[str, int] = {}
    while True:
        for component, lines in sorted(daemon.logs_page(name)["logs"].items()):
            start = seen.get(component)
            if start is None:
                start = max(0, len(lines) - tail) if tail else 0
            for line in lines[start:]:
                yield component, line
            seen[component] = len(lines)
        if not keep_going:
            return
        time.sleep(interval)
