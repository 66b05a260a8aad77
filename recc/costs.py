"""What clusters cost: accrual from node counts, and monthly budgets with thresholds.

Pure functions over data the daemon records. A cluster's cost is the integral of its
node count over time times the price of one node-hour: the daemon stores a sample
``(time, nodes)`` whenever the count changes, and the count holds until the next
sample. Times are epoch seconds; money is dollars (a float, rounded only for display).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone, tzinfo
from typing import Any, Mapping, Sequence

from recc.errors import SpecError

Sample = tuple[float, int]
SCOPES = ("user", "namespace", "job")
DEFAULT_THRESHOLDS = (50, 80, 100)


def _check_samples(samples: Sequence[Sample], price_per_node_hour: float, start: float, end: float) -> None:
    # Unsorted samples mean the recorder is wrong; sorting them here would hide that bug
    # and bill a timeline that never happened.
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    if price_per_node_hour < 0:
        raise ValueError(f"price_per_node_hour must be >= 0, got {price_per_node_hour}")
    for i, (t, n) in enumerate(samples):
        if n < 0:
            raise ValueError(f"sample {i} has a negative node count {n}")
        if i and t < samples[i - 1][0]:
            raise ValueError(f"samples are not in time order: sample {i} at {t} is before {samples[i - 1][0]}")


def _node_seconds(samples: Sequence[Sample], start: float, end: float) -> float:
    """Node-seconds of the piecewise-constant count, clipped to [start, end]."""
    parts = []
    for i, (t, n) in enumerate(samples):
        t_next = samples[i + 1][0] if i + 1 < len(samples) else math.inf
        lo, hi = max(t, start), min(t_next, end)
        if hi > lo and n:
            parts.append(n * (hi - lo))
    # fsum: a month of small pieces adds up without drift.
    return math.fsum(parts)


def accrue(samples: Sequence[Sample], price_per_node_hour: float, start: float, end: float) -> float:
    """Dollars spent between ``start`` and ``end``.

    ``samples`` are ``(time, nodes from then on)`` in time order (a later sample at the
    same time replaces an earlier one); before the first sample nothing runs. Unsorted
    samples, a negative count or price, or ``end < start`` are a ``ValueError``.
    """
    _check_samples(samples, price_per_node_hour, start, end)
    # One multiplication at the end keeps the result as exact as the node-seconds are.
    return _node_seconds(samples, start, end) * price_per_node_hour / 3600.0


def _next_midnight(t: float, tz: tzinfo) -> tuple[str, float]:
    """The local date of ``t`` and the epoch time of the midnight that ends it."""
    day = datetime.fromtimestamp(t, tz).date()
    nxt = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
    return day.isoformat(), nxt.timestamp()


def accrue_by_day(samples: Sequence[Sample], price_per_node_hour: float, start: float, end: float,
                  tz: tzinfo = timezone.utc) -> dict[str, float]:
    """Dollars per calendar day (``"YYYY-MM-DD"`` in ``tz``), split at local midnight.

    Every day that [start, end) touches has a key, with 0.0 for days nothing ran, so a
    per-day view has no gaps. The values add up to `accrue` over the same span.
    """
    _check_samples(samples, price_per_node_hour, start, end)
    out: dict[str, float] = {}
    t = start
    while t < end:
        day, midnight = _next_midnight(t, tz)
        hi = min(midnight, end)
        out[day] = out.get(day, 0.0) + _node_seconds(samples, t, hi) * price_per_node_hour / 3600.0
        t = hi
    return out


def month_start(now: float) -> float:
    """Epoch time of 00:00 UTC on the first day of ``now``'s month (budgets reset there)."""
    d = datetime.fromtimestamp(now, timezone.utc)
    return datetime(d.year, d.month, 1, tzinfo=timezone.utc).timestamp()


def _is_dollars(value: Any) -> bool:
    # bool is an int in Python; "monthly: yes" is a typo, not $1.
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and math.isfinite(value) and value > 0)


def _is_percents(value: Any) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) > 0
            and all(not isinstance(p, bool) and isinstance(p, int) and p > 0 for p in value))


@dataclass(frozen=True)
class Budget:
    """A monthly spending limit for the user, a namespace or a job, with alert thresholds.

    ``thresholds`` are percents of ``monthly_limit`` (dollars); each alerts once a month,
    when month-to-date spend first reaches it.
    """

    scope: str
    name: str
    monthly_limit: float
    thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS
    emails: tuple[str, ...] = ()  # AWS Budgets' email subscribers (`recc budgets apply`)

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise SpecError(f"budget scope {self.scope!r} is not one of {', '.join(SCOPES)}")
        if not _is_dollars(self.monthly_limit):
            raise SpecError(f"monthly budget for {self.scope} {self.name!r} must be a positive number "
                            f"of dollars, got {self.monthly_limit!r}")
        if not _is_percents(self.thresholds):
            raise SpecError(f"budget thresholds for {self.scope} {self.name!r} must be positive whole "
                            f"percents, got {self.thresholds!r}", hint="e.g. [50, 80, 100]")
        object.__setattr__(self, "monthly_limit", float(self.monthly_limit))
        object.__setattr__(self, "thresholds", tuple(sorted(set(self.thresholds))))

    def crossed(self, before: float, after: float) -> list[int]:
        """The thresholds (percents, ascending) reached going from spend ``before`` to ``after``.

        A threshold counts as crossed when spend reaches it, so a step that starts exactly
        on a threshold does not report it again, and spend that stays above reports nothing.
        """
        # spend*100 against percent*limit rather than spend against limit*percent/100: one
        # rounding fewer, so a spend exactly at the threshold reliably counts as reaching it.
        return [p for p in self.thresholds if before * 100 < p * self.monthly_limit <= after * 100]

    def message(self, percent: int, spend: float) -> str:
        """The alert a person reads when ``percent`` is crossed."""
        who = f"{self.scope} {self.name}"
        return (f"month-to-date spend ${spend:,.2f} has reached {percent}% of the "
                f"${self.monthly_limit:,.2f} monthly budget for {who}")


def _emails(where: str, value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(e, str) and "@" in e for e in items):
        raise SpecError(f"{where} must be an email address or a list of them, got {value!r}",
                        hint="e.g. email: [research-leads@example.com]")
    return tuple(items)


def _entry(where: str, value: Any, scope: str, name: str, emails: tuple[str, ...] = ()) -> Budget:
    if not isinstance(value, Mapping):
        raise SpecError(f"{where} must be a mapping like {{monthly: 500}}, got {value!r}")
    unknown = sorted(str(k) for k in value if k not in ("monthly", "thresholds", "email"))
    if unknown:
        # A misspelt key would silently drop a budget: exactly the surprise bill to avoid.
        raise SpecError(f"{where} has unknown key(s): {', '.join(unknown)}",
                        hint="known keys: monthly, thresholds, email")
    if "email" in value:
        emails = _emails(f"{where}.email", value["email"])
    if "monthly" not in value:
        raise SpecError(f"{where} needs 'monthly' (dollars per month)", hint=f"e.g. {where}.monthly: 500")
    monthly = value["monthly"]
    if not _is_dollars(monthly):
        raise SpecError(f"{where}.monthly must be a positive number of dollars, got {monthly!r}")
    thresholds = value.get("thresholds", DEFAULT_THRESHOLDS)
    if not _is_percents(thresholds):
        raise SpecError(f"{where}.thresholds must be a list of positive whole percents, got {thresholds!r}",
                        hint="e.g. [50, 80, 100]")
    return Budget(scope, name, float(monthly), tuple(thresholds), emails)


def load_budgets(config: Mapping[str, Any], *, user: str = "user") -> list[Budget]:
    """The budgets in a config mapping (its ``budgets:`` key); none if it has none.

    Format::

        budgets:
          user: {monthly: 500, thresholds: [50, 80, 100]}
          namespaces: {research: {monthly: 2000}}
          jobs: {nightly-risk: {monthly: 300}}

    ``user`` names the user budget in alerts (the daemon passes its user's name).
    Anything malformed is a `SpecError` naming the key and what is wrong.
    """
    if not isinstance(config, Mapping):
        raise SpecError(f"the config must be a mapping, got {type(config).__name__}")
    section = config.get("budgets")
    if section is None:
        return []
    if not isinstance(section, Mapping):
        raise SpecError(f"budgets must be a mapping with user, namespaces and jobs, got {section!r}")
    unknown = sorted(str(k) for k in section if k not in ("user", "namespaces", "jobs", "email"))
    if unknown:
        raise SpecError(f"budgets has unknown key(s): {', '.join(unknown)}",
                        hint="known keys: user, namespaces, jobs, email")
    emails = _emails("budgets.email", section["email"]) if section.get("email") is not None else ()
    out: list[Budget] = []
    if section.get("user") is not None:
        out.append(_entry("budgets.user", section["user"], "user", user, emails))
    for key, scope in (("namespaces", "namespace"), ("jobs", "job")):
        group = section.get(key)
        if group is None:
            continue
        if not isinstance(group, Mapping):
            raise SpecError(f"budgets.{key} must map {scope} names to budgets, got {group!r}",
                            hint=f"e.g. budgets.{key}.<name>.monthly: 300")
        for name, value in group.items():
            if not isinstance(name, str) or not name:
                raise SpecError(f"budgets.{key}: {scope} name {name!r} is not a non-empty string")
            out.append(_entry(f"budgets.{key}.{name}", value, scope, name, emails))
    return out

