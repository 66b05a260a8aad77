"""When an idle cluster is harvested: a pure decision from observed facts.

The same code runs in the daemon (its harvest loop) and in `recc harvest` (for the
clusters no daemon watches). Times are epoch seconds (``time.time()``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class IdleFacts:
    """What a cluster's scheduler plugin reports about its own use.

    ``last_activity``: the last time a task ran, was queued or a graph arrived (or the
    scheduler started). ``clients``: connected clients other than the daemon's own.
    ``last_client_left``: when the number of such clients last dropped to zero (None
    while one is connected or if none ever connected; then the cluster's start counts).
    ``observed_at``: the scheduler's clock when it answered.
    """

    last_activity: float
    clients: int
    last_client_left: float | None
    observed_at: float
    started_at: float

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "IdleFacts":
        return cls(last_activity=float(data["last_activity"]), clients=int(data["clients"]),
                   last_client_left=None if data.get("last_client_left") is None else float(data["last_client_left"]),
                   observed_at=float(data["observed_at"]), started_at=float(data["started_at"]))

    def to_dict(self) -> dict[str, Any]:
        return {"last_activity": self.last_activity, "clients": self.clients,
                "last_client_left": self.last_client_left, "observed_at": self.observed_at,
                "started_at": self.started_at}


# --- the decision -----------------------------------------------------------------------

IDLE = "idle"
NO_CLIENT = "no-client"


@dataclass(frozen=True)
class Decision:
    """What to do with one cluster now, and why, in words a person reads.

    ``action`` is ``"keep"``, ``"warn"`` (harvest is near: tell the user, who may
    extend) or ``"harvest"``. ``clock`` is the clock that sets ``deadline`` (``"idle"``,
    ``"no-client"``, or None when no clock runs). ``deadline`` is when the cluster will be
    harvested if nothing changes, in the same clock as the facts; ``seconds_left`` is
    ``deadline - now``, never below 0.
    """

    action: str
    reason: str
    clock: str | None
    deadline: float | None
    seconds_left: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "reason": self.reason, "clock": self.clock,
                "deadline": self.deadline, "seconds_left": self.seconds_left}


def format_duration(seconds: float) -> str:
    """A short duration for people: ``"45s"``, ``"20m 3s"``, ``"1h 2m"``, ``"2d 3h"``.

    Precision falls with size (nobody needs the seconds of a two-hour wait); zero parts
    are dropped (``"20m"``, ``"1h"``). Negative durations keep their sign.
    """
    if seconds < 0:
        return "-" + format_duration(-seconds)
    total = int(round(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        big, small = f"{days}d", f"{hours}h" if hours else ""
    elif hours:
        big, small = f"{hours}h", f"{minutes}m" if minutes else ""
    elif minutes:
        big, small = f"{minutes}m", f"{secs}s" if secs else ""
    else:
        return f"{secs}s"
    return f"{big} {small}" if small else big


def in_local_clock(facts: IdleFacts, received_at: float) -> IdleFacts:
    """``facts`` with every time shifted from the scheduler's clock into the caller's.

    The scheduler and the daemon may disagree about the time (a laptop whose clock
    drifted, a pod on a node without NTP). Shifting by ``received_at - observed_at``
    makes ``observed_at == received_at``, so ages can be measured with the caller's own
    ``now``, and deadlines, the user's "extend" and events all share the daemon's clock.
    The round trip of the request is counted as skew, which makes the cluster look a
    little younger: the error only ever delays a harvest, by that round trip.
    """
    shift = received_at - facts.observed_at
    return IdleFacts(
        last_activity=facts.last_activity + shift,
        clients=facts.clients,
        last_client_left=None if facts.last_client_left is None else facts.last_client_left + shift,
        observed_at=received_at,
        started_at=facts.started_at + shift,
    )


def _check_timeout(value: float | None, what: str) -> None:
    # Specs are validated already; this catches a caller passing something else.
    if value is not None and not value > 0:
        raise ValueError(f"{what} must be positive or None, got {value!r}")


def decide(facts: IdleFacts, *, idle_timeout: float | None, no_client_timeout: float | None,
           warn_before: float, now: float, extended_until: float | None = None) -> Decision:
    """Keep, warn about, or harvest a cluster, from its idle facts.

    Two clocks, each off when its timeout is None:

    - idle: from ``facts.last_activity``, whether or not clients are connected (an open
      notebook that computes nothing still costs money);
    - no-client: while ``facts.clients == 0``, from ``facts.last_client_left`` (or
      ``facts.started_at`` if no client ever left), so a killed kernel does not leave a
      cluster behind but a restarted one can reattach in time.

    Each clock's deadline is ``reference + timeout``, pushed to ``extended_until`` if that
    is later (the user's "extend"); the earliest deadline wins (idle on a tie). The result
    is ``harvest`` at or after the deadline, ``warn`` within ``warn_before`` of it, else
    ``keep``.

    ``now`` and ``extended_until`` must be in the same clock as ``facts``. The daemon
    passes facts through `in_local_clock` with the time it received them, and then uses
    its own ``time.time()`` for ``now``.
    """
    _check_timeout(idle_timeout, "idle_timeout")
    _check_timeout(no_client_timeout, "no_client_timeout")
    if warn_before < 0:
        raise ValueError(f"warn_before must be >= 0, got {warn_before!r}")

    # (deadline, clock, reference, timeout) for each clock that runs.
    candidates: list[tuple[float, str, float, float]] = []
    if idle_timeout is not None:
        candidates.append((facts.last_activity + idle_timeout, IDLE, facts.last_activity, idle_timeout))
    if no_client_timeout is not None and facts.clients == 0:
        ref = facts.last_client_left if facts.last_client_left is not None else facts.started_at
        candidates.append((ref + no_client_timeout, NO_CLIENT, ref, no_client_timeout))

    if not candidates:
        if idle_timeout is None and no_client_timeout is None:
            reason = "idle harvest is off (idle_timeout and no_client_timeout are both None)"
        else:
            reason = f"{facts.clients} client(s) connected and idle_timeout is off"
        return Decision("keep", reason, None, None, None)

    pushed = [(max(d, extended_until) if extended_until is not None else d, c, r, t)
              for d, c, r, t in candidates]
    # min() is stable on ties, and the idle clock is listed first.
    deadline, clock, reference, timeout = min(pushed, key=lambda x: x[0])
    natural = reference + timeout
    # A reference in the future (unconverted skew) reads as "0s", not as a negative age.
    age = max(0.0, now - reference)
    left = deadline - now

    what = (f"no task activity for {format_duration(age)}" if clock == IDLE
            else f"no client connected for {format_duration(age)}")
    setting = f"{'idle_timeout' if clock == IDLE else 'no_client_timeout'} {format_duration(timeout)}"
    if deadline > natural:
        setting += f", extended by {format_duration(deadline - natural)}"
    if now >= deadline:
        return Decision("harvest", f"{what} ({setting})", clock, deadline, 0.0)
    if now >= deadline - warn_before:
        return Decision("warn", f"{what} ({setting}): harvest in {format_duration(left)} unless extended",
                        clock, deadline, left)
    return Decision("keep", f"{what} ({setting}): harvest in {format_duration(left)}", clock, deadline, left)


# --- the heartbeat Lease (the in-cluster reaper) -------------------------------------------


def lease_decision(renew_time: float | None, duration: float | None, created_at: float, *, now: float,
                   grace: float) -> Decision | None:
    """Harvest a cluster whose daemon stopped renewing its heartbeat Lease; None while it is fresh.

    ``renew_time`` and ``duration`` come from the Lease (None when there is none); a cluster with
    no Lease gets ``grace`` seconds from ``created_at`` (its namespace's creation), because its
    daemon writes the first Lease only once the namespace exists. A Lease is fresh until
    ``renew_time + duration``, exactly as Kubernetes leader election reads it.
    """
    if renew_time is None or duration is None:
        age = now - created_at
        if age < grace:
            return Decision("keep", f"no heartbeat Lease yet; made {format_duration(max(0.0, age))} ago "
                                    f"(grace {format_duration(grace)})", "lease", created_at + grace,
                            created_at + grace - now)
        return Decision("harvest", f"no heartbeat Lease {format_duration(age)} after it was made "
                                   f"(grace {format_duration(grace)}): no daemon looks after it", "lease",
                        created_at + grace, 0.0)
    deadline = renew_time + duration
    if now >= deadline:
        return Decision("harvest", f"heartbeat Lease expired {format_duration(now - deadline)} ago (last renewed "
                                   f"{format_duration(now - renew_time)} ago, ttl {format_duration(duration)}): "
                                   "its daemon is gone", "lease", deadline, 0.0)
    return None
