"""`recc logs --follow` rounds: Kubernetes trims a time's trailing zeros, so times compare as numbers."""

from recc.logfollow import _Cursor, stamp_key


def test_trimmed_fractions_compare_as_numbers() -> None:
    shorter = stamp_key("2026-11-28T12:00:00.1234Z a")
    longer = stamp_key("2026-11-28T12:00:00.12345Z b")
    assert shorter is not None and longer is not None
    assert shorter[0] < longer[0]  # as text ".1234Z" > ".12345Z"
    assert stamp_key("2026-11-28T12:00:01Z c")[0] > longer[0]
    assert stamp_key("no time here") is None


def test_overlapping_rounds_show_each_line_once() -> None:
    cursor = _Cursor()
    first = ["2026-11-28T12:00:00.1Z one", "2026-11-28T12:00:00.1Z two", "2026-11-28T12:00:00.5Z three"]
    assert cursor.new(first) == ["one", "two", "three"]
    # the next round overlaps (since_seconds + slack): repeats are dropped, a same-time new line is kept
    second = ["2026-11-28T12:00:00.5Z three", "2026-11-28T12:00:00.5Z four", "2026-11-28T12:00:02Z five"]
    assert cursor.new(second) == ["four", "five"]
