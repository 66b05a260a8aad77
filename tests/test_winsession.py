"""The Windows end-session handler's logic, driven by calling it as Windows would."""

from __future__ import annotations

import threading
import time

from reccd.winsession import WM_ENDSESSION, WM_QUERYENDSESSION, EndSessionHandler


def test_query_allows_logout_at_once_and_starts_the_cleanup() -> None:
    release = threading.Event()
    calls = []

    def cleanup() -> None:
        calls.append("start")
        release.wait(5)

    handler = EndSessionHandler(cleanup, timeout=5)
    started = time.monotonic()
    assert handler(WM_QUERYENDSESSION, 0, 0) == 1  # never blocks or vetoes the logout
    assert time.monotonic() - started < 0.5
    time.sleep(0.1)
    assert calls == ["start"]
    release.set()
    assert handler(WM_ENDSESSION, 1, 0) == 0
    assert handler.finished.is_set()
    assert calls == ["start"]  # the cleanup runs once


def test_end_session_waits_for_the_cleanup_but_only_up_to_the_bound() -> None:
    handler = EndSessionHandler(lambda: time.sleep(30), timeout=0.5)
    started = time.monotonic()
    assert handler(WM_ENDSESSION, 1, 0) == 0
    assert 0.4 < time.monotonic() - started < 3


def test_a_cancelled_logout_changes_nothing_and_other_messages_go_to_the_default() -> None:
    calls = []
    handler = EndSessionHandler(lambda: calls.append(1))
    assert handler(WM_ENDSESSION, 0, 0) == 0
    assert handler(0x0001, 0, 0) is None  # WM_CREATE: default processing
    time.sleep(0.1)
    assert calls == []


def test_a_failing_cleanup_still_lets_windows_end_the_session() -> None:
    def boom() -> None:
        raise RuntimeError("no network")

    handler = EndSessionHandler(boom, timeout=2)
    assert handler(WM_ENDSESSION, 1, 0) == 0
    assert handler.finished.is_set()
