"""The harvest decision, tested as data: facts, timeouts and a time in; action, clock and deadline out."""

from __future__ import annotations

import pytest

from recc.harvest import Decision, IdleFacts, decide, format_duration, in_local_clock

T0 = 1_800_000_000.0  # the cluster's start
IDLE, NO_CLIENT = 20 * 60.0, 10 * 60.0
WARN = 2 * 60.0


def facts(*, activity: float = 0.0, clients: int = 0, left: float | None = None, at: float | None = None) -> IdleFacts:
    """Facts with times given as seconds after T0."""
    return IdleFacts(last_activity=T0 + activity, clients=clients,
                     last_client_left=None if left is None else T0 + left,
                     observed_at=T0 + (at if at is not None else activity), started_at=T0)


# id, facts, idle_timeout, no_client_timeout, now (after T0), extended_until (after T0) -> action, clock, deadline (after T0)
CASES = [
    # A client busy with tasks keeps the cluster; the idle clock restarts with each task.
    ("busy-with-client", facts(activity=5000, clients=1), IDLE, NO_CLIENT, 5001, None, "keep", "idle", 6200),
    # A connected but idle client does not prevent harvest.
    ("idle-connected-client", facts(activity=0, clients=1), IDLE, NO_CLIENT, 1200, None, "harvest", "idle", 1200),
    ("idle-connected-late", facts(activity=0, clients=1), IDLE, NO_CLIENT, 9999, None, "harvest", "idle", 1200),
    # The warning window: from deadline - warn_before up to the deadline.
    ("before-warn-window", facts(activity=0, clients=1), IDLE, NO_CLIENT, 1079.5, None, "keep", "idle", 1200),
    ("warn-window-opens", facts(activity=0, clients=1), IDLE, NO_CLIENT, 1080, None, "warn", "idle", 1200),
    ("warn-just-before", facts(activity=0, clients=1), IDLE, NO_CLIENT, 1199.9, None, "warn", "idle", 1200),
    # No client ever connected: the no-client clock counts from the start.
    ("never-connected", facts(activity=0), IDLE, NO_CLIENT, 600, None, "harvest", "no-client", 600),
    ("never-connected-early", facts(activity=0), IDLE, NO_CLIENT, 100, None, "keep", "no-client", 600),
    # A client left at +1000: within no_client_timeout the cluster stays (a kernel restart can reattach)...
    ("left-within", facts(activity=1000, left=1000), IDLE, NO_CLIENT, 1300, None, "keep", "no-client", 1600),
    ("left-warn", facts(activity=1000, left=1000), IDLE, NO_CLIENT, 1500, None, "warn", "no-client", 1600),
    # ...and after it, the cluster is harvested.
    ("left-after", facts(activity=1000, left=1000), IDLE, NO_CLIENT, 1600, None, "harvest", "no-client", 1600),
    # Reattached in time: a connected client stops the no-client clock; only idle counts.
    ("reattached", facts(activity=1000, clients=1, left=None), IDLE, NO_CLIENT, 1700, None, "keep", "idle", 2200),
    # No client but tasks still running (fire-and-forget): the no-client clock still runs.
    ("busy-no-client", facts(activity=1590, left=1000), IDLE, NO_CLIENT, 1600, None, "harvest", "no-client", 1600),
    # Extend pushes the deadline of whichever clock applies...
    ("extended-keeps", facts(activity=0, clients=1), IDLE, NO_CLIENT, 1200, 1500, "keep", "idle", 1500),
    ("extended-warns", facts(activity=0, clients=1), IDLE, NO_CLIENT, 1380, 1500, "warn", "idle", 1500),
    ("extended-harvests", facts(activity=0, clients=1), IDLE, NO_CLIENT, 1500, 1500, "harvest", "idle", 1500),
    ("extended-no-client", facts(activity=1000, left=1000), IDLE, NO_CLIENT, 1600, 1900, "keep", "no-client", 1900),
    # ...but never pulls one in.
    ("extend-in-past", facts(activity=0, clients=1), IDLE, NO_CLIENT, 1200, 100, "harvest", "idle", 1200),
    # Extend is a floor for every clock: the no-client deadline moves to it, idle's (later) stays.
    ("extend-floor", facts(activity=0), IDLE, NO_CLIENT, 850, 900, "warn", "no-client", 900),
    ("extend-floor-passed", facts(activity=0), IDLE, NO_CLIENT, 950, 900, "harvest", "no-client", 900),
    # None turns a clock off.
    ("idle-off-client", facts(activity=0, clients=1), None, NO_CLIENT, 99999, None, "keep", None, None),
    ("idle-off-no-client", facts(activity=0), None, NO_CLIENT, 600, None, "harvest", "no-client", 600),
    ("no-client-off", facts(activity=0), IDLE, None, 1199, None, "warn", "idle", 1200),
    ("both-off", facts(activity=0), None, None, 99999, None, "keep", None, None),
    # On a tie the idle clock is reported.
    ("tie", facts(activity=0), 600.0, 600.0, 600, None, "harvest", "idle", 600),
]


@pytest.mark.parametrize(
    "fx, idle_timeout, no_client_timeout, now, extended, action, clock, deadline",
    [c[1:] for c in CASES], ids=[c[0] for c in CASES],
)
def test_decide_table(fx, idle_timeout, no_client_timeout, now, extended, action, clock, deadline):
    d = decide(fx, idle_timeout=idle_timeout, no_client_timeout=no_client_timeout, warn_before=WARN,
               now=T0 + now, extended_until=None if extended is None else T0 + extended)
    assert (d.action, d.clock) == (action, clock), d.reason
    assert d.deadline == (None if deadline is None else T0 + deadline)
    if deadline is None:
        assert d.seconds_left is None
    else:
        assert d.seconds_left == pytest.approx(max(0.0, deadline - now))
    assert d.reason


def test_reasons_read_as_sentences():
    d = decide(facts(activity=0, clients=1), idle_timeout=IDLE, no_client_timeout=NO_CLIENT,
               warn_before=WARN, now=T0 + 1203)
    assert d.reason == "no task activity for 20m 3s (idle_timeout 20m)"
    d = decide(facts(activity=1000, left=1000), idle_timeout=IDLE, no_client_timeout=NO_CLIENT,
               warn_before=WARN, now=T0 + 1610)
    assert d.reason == "no client connected for 10m 10s (no_client_timeout 10m)"
    d = decide(facts(activity=0, clients=1), idle_timeout=IDLE, no_client_timeout=NO_CLIENT,
               warn_before=WARN, now=T0 + 1100)
    assert d.reason == "no task activity for 18m 20s (idle_timeout 20m): harvest in 1m 40s unless extended"
    d = decide(facts(activity=0, clients=1), idle_timeout=IDLE, no_client_timeout=NO_CLIENT,
               warn_before=WARN, now=T0 + 1500, extended_until=T0 + 1500)
    assert d.reason == "no task activity for 25m (idle_timeout 20m, extended by 5m)"
    d = decide(facts(activity=0, clients=1), idle_timeout=None, no_client_timeout=NO_CLIENT,
               warn_before=WARN, now=T0)
    assert "idle_timeout is off" in d.reason
    d = decide(facts(), idle_timeout=None, no_client_timeout=None, warn_before=WARN, now=T0)
    assert "off" in d.reason


def test_to_dict():
    d = decide(facts(activity=0, clients=1), idle_timeout=IDLE, no_client_timeout=NO_CLIENT,
               warn_before=WARN, now=T0 + 1100)
    assert d.to_dict() == {"action": "warn", "reason": d.reason, "clock": "idle",
                           "deadline": T0 + 1200, "seconds_left": pytest.approx(100.0)}
    assert Decision(**d.to_dict()) == d


def test_skewed_scheduler_clock():
    # The scheduler's clock runs an hour ahead; the daemon receives its facts at daemon time R.
    skew, received = 3600.0, T0 + 500
    seen = IdleFacts(last_activity=T0 + skew, clients=1, last_client_left=None,
                     observed_at=T0 + 500 + skew, started_at=T0 + skew)
    local = in_local_clock(seen, received)
    assert (local.last_activity, local.observed_at, local.started_at) == (T0, received, T0)
    assert local.clients == 1 and local.last_client_left is None
    d = decide(local, idle_timeout=IDLE, no_client_timeout=NO_CLIENT, warn_before=WARN, now=T0 + 1200)
    assert (d.action, d.deadline) == ("harvest", T0 + 1200)
    # Without the conversion the cluster would look an hour younger (and would be kept).
    d = decide(seen, idle_timeout=IDLE, no_client_timeout=NO_CLIENT, warn_before=WARN, now=T0 + 1200)
    assert d.action == "keep" and "for 0s" in d.reason
    left = IdleFacts(last_activity=T0, clients=0, last_client_left=T0 + 10, observed_at=T0 + 20, started_at=T0)
    assert in_local_clock(left, T0 + 25).last_client_left == T0 + 15


@pytest.mark.parametrize("kwargs", [
    {"idle_timeout": 0}, {"idle_timeout": -5}, {"no_client_timeout": 0}, {"warn_before": -1},
])
def test_bad_arguments(kwargs):
    args = {"idle_timeout": IDLE, "no_client_timeout": NO_CLIENT, "warn_before": WARN, **kwargs}
    with pytest.raises(ValueError):
        decide(facts(), now=T0, **args)


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (0.4, "0s"), (45, "45s"), (59.6, "1m"), (60, "1m"), (1203, "20m 3s"), (1200, "20m"),
    (3600, "1h"), (3720, "1h 2m"), (3759, "1h 2m"), (86400 + 3 * 3600 + 59, "1d 3h"), (2 * 86400, "2d"),
    (-90, "-1m 30s"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
