"""Cost accrual over scripted timelines, per-day splits, and budget thresholds."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from recc.costs import Budget, accrue, accrue_by_day, load_budgets, month_start
from recc.daemon_client import live_row
from recc.errors import SpecError
from reccd.accounting import accruals, cluster_cost
from reccd.state import State

H = 3600.0
PRICE = 1.008  # m5.xlarge-like on-demand $/node-hour
T0 = datetime(2026, 3, 10, 9, 0, tzinfo=timezone.utc).timestamp()


def cents(x: float) -> int:
    return round(x * 100)


def test_scripted_timeline_to_the_cent():
    # 2 nodes for 90 min, then 5 nodes for 30 min, then the cluster is gone.
    samples = [(T0, 2), (T0 + 1.5 * H, 5), (T0 + 2 * H, 0)]
    expected = 2 * 1.5 * PRICE + 5 * 0.5 * PRICE  # 5.544
    assert cents(accrue(samples, PRICE, T0, T0 + 3 * H)) == cents(expected) == 554
    assert accrue(samples, PRICE, T0, T0 + 3 * H) == pytest.approx(expected, abs=1e-9)


def test_long_timeline_of_many_changes_to_the_cent():
    # A month of autoscaling: the count changes every 7 minutes, between 1 and 50 nodes.
    samples, node_minutes, t = [], 0, T0
    for i in range(6000):
        n = 1 + (i * 37) % 50
        samples.append((t, n))
        node_minutes += n * 7
        t += 7 * 60
    samples.append((t, 0))
    expected_cents = round(node_minutes * 0.192 * 100 / 60)
    assert cents(accrue(samples, 0.192, T0, t + H)) == expected_cents


@pytest.mark.parametrize("start, end, expected_node_hours", [
    (T0 - H, T0, 0.0),                    # before the first sample nothing ran
    (T0 + 0.5 * H, T0 + H, 2 * 0.5),      # clipped inside the first segment
    (T0 + H, T0 + 1.75 * H, 2 * 0.5 + 5 * 0.25),  # across a change
    (T0 + 1.75 * H, T0 + 10 * H, 5 * 0.25),  # the trailing 0 stops accrual
    (T0 + H, T0 + H, 0.0),                # an empty span
])
def test_clipping(start, end, expected_node_hours):
    samples = [(T0, 2), (T0 + 1.5 * H, 5), (T0 + 2 * H, 0)]
    assert accrue(samples, PRICE, start, end) == pytest.approx(expected_node_hours * PRICE)


def test_last_sample_holds_until_end_and_duplicates_replace():
    assert accrue([(T0, 3)], 2.0, T0, T0 + 2 * H) == pytest.approx(12.0)
    # Two samples at one instant: the later one is the count from then on.
    assert accrue([(T0, 3), (T0, 1)], 2.0, T0, T0 + H) == pytest.approx(2.0)
    assert accrue([], 2.0, T0, T0 + H) == 0.0
    assert accrue([(T0, 4)], 0.0, T0, T0 + H) == 0.0  # local: price 0, same code


@pytest.mark.parametrize("samples, price, start, end, message", [
    ([(T0 + 10, 2), (T0, 1)], 1.0, T0, T0 + H, "not in time order"),
    ([(T0, -1)], 1.0, T0, T0 + H, "negative node count"),
    ([(T0, 1)], -1.0, T0, T0 + H, "price"),
    ([(T0, 1)], 1.0, T0 + H, T0, "before start"),
])
def test_accrue_rejects_bad_input(samples, price, start, end, message):
    with pytest.raises(ValueError, match=message):
        accrue(samples, price, start, end)
    with pytest.raises(ValueError, match=message):
        accrue_by_day(samples, price, start, end)


def test_day_split_at_utc_midnight():
    # 4 nodes from 22:00 to 02:00 UTC: 2 hours on each day.
    start = datetime(2026, 3, 10, 22, 0, tzinfo=timezone.utc).timestamp()
    samples = [(start, 4), (start + 4 * H, 0)]
    days = accrue_by_day(samples, PRICE, start, start + 4 * H)
    assert list(days) == ["2026-03-10", "2026-03-11"]
    assert cents(days["2026-03-10"]) == cents(days["2026-03-11"]) == cents(8 * PRICE)
    assert sum(days.values()) == pytest.approx(accrue(samples, PRICE, start, start + 4 * H))


def test_day_split_in_a_time_zone_and_empty_days():
    tz = ZoneInfo("America/New_York")
    # 20:00 to 04:00 local on 2026-03-07/08, over the DST change (02:00 -> 03:00 on the 8th).
    start = datetime(2026, 3, 7, 20, 0, tzinfo=tz).timestamp()
    end = datetime(2026, 3, 8, 4, 0, tzinfo=tz).timestamp()
    assert end - start == 7 * H  # one hour lost to DST
    samples = [(start, 1), (end, 0)]
    days = accrue_by_day(samples, 1.0, start, end + 2 * 86400, tz=tz)
    assert days == pytest.approx({"2026-03-07": 4.0, "2026-03-08": 3.0, "2026-03-09": 0.0, "2026-03-10": 0.0})
    assert accrue_by_day(samples, 1.0, start, start) == {}


def test_month_start():
    now = datetime(2026, 3, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp()
    assert month_start(now) == datetime(2026, 3, 1, tzinfo=timezone.utc).timestamp()
    assert month_start(month_start(now)) == month_start(now)
    assert month_start(month_start(now) - 1) == datetime(2026, 2, 1, tzinfo=timezone.utc).timestamp()


def test_budget_thresholds_cross_exactly_once():
    b = Budget("user", "alice", 500.0)
    assert b.thresholds == (50, 80, 100)
    spend = [0.0, 100.0, 249.99, 250.0, 300.0, 399.0, 510.0, 520.0, 1000.0]
    alerts = [p for before, after in zip(spend, spend[1:]) for p in b.crossed(before, after)]
    assert alerts == [50, 80, 100]  # each once, in order, none while staying above
    assert b.crossed(249.99, 250.0) == [50]  # reaching is crossing
    assert b.crossed(250.0, 260.0) == []     # starting on it is not crossing again
    assert b.crossed(100.0, 450.0) == [50, 80]  # two in one step
    assert b.crossed(0.0, 10_000.0) == [50, 80, 100]
    assert b.crossed(450.0, 100.0) == []  # spend never goes down within a month; nothing to report
    assert "80% of the $500.00 monthly budget for user alice" in b.message(80, 401.5)


def test_budget_threshold_reached_exactly():
    b = Budget("job", "j", 0.07, (10, 100))
    assert b.crossed(0.0, 0.007) == [10]
    assert b.crossed(0.05, 0.07) == [100]
    assert b.crossed(0.05, 0.0699) == []


def test_budget_validation():
    assert Budget("namespace", "r", 10, (100, 50, 50)).thresholds == (50, 100)
    for bad in [dict(scope="team"), dict(monthly_limit=0), dict(monthly_limit=math.inf),
                dict(monthly_limit=True), dict(thresholds=()), dict(thresholds=(50, -1)), dict(thresholds=(50.5,))]:
        args = {"scope": "user", "name": "u", "monthly_limit": 10.0, **bad}
        with pytest.raises(SpecError):
            Budget(**args)


def test_load_budgets():
    config = {"budgets": {"user": {"monthly": 500, "thresholds": [50, 80, 100]},
                          "namespaces": {"research": {"monthly": 2000}},
                          "jobs": {"nightly-risk": {"monthly": 300, "thresholds": [90]}}}}
    assert load_budgets(config, user="alice") == [
        Budget("user", "alice", 500.0, (50, 80, 100)),
        Budget("namespace", "research", 2000.0, (50, 80, 100)),
        Budget("job", "nightly-risk", 300.0, (90,)),
    ]
    assert load_budgets({}) == []
    assert load_budgets({"budgets": None}) == []
    assert load_budgets({"budgets": {"user": None, "namespaces": None}}) == []


@pytest.mark.parametrize("budgets, key, problem", [
    ("lots", "budgets", "must be a mapping"),
    ({"users": {"monthly": 5}}, "budgets", "unknown key(s): users"),
    ({"user": 500}, "budgets.user", "must be a mapping"),
    ({"user": {"montly": 500}}, "budgets.user", "unknown key(s): montly"),
    ({"user": {"thresholds": [50]}}, "budgets.user", "needs 'monthly'"),
    ({"user": {"monthly": "500"}}, "budgets.user.monthly", "positive number of dollars"),
    ({"user": {"monthly": -1}}, "budgets.user.monthly", "positive number of dollars"),
    ({"namespaces": {"research": {"monthly": 0}}}, "budgets.namespaces.research.monthly", "positive number"),
    ({"namespaces": ["research"]}, "budgets.namespaces", "must map namespace names"),
    ({"namespaces": {7: {"monthly": 5}}}, "budgets.namespaces", "is not a non-empty string"),
    ({"jobs": {"nightly": {"monthly": 5, "thresholds": "50,80"}}}, "budgets.jobs.nightly.thresholds",
     "positive whole percents"),
    ({"jobs": {"nightly": {"monthly": 5, "thresholds": [50, 0]}}}, "budgets.jobs.nightly.thresholds",
     "positive whole percents"),
    ({"jobs": {"nightly": {"monthly": 5, "thresholds": []}}}, "budgets.jobs.nightly.thresholds",
     "positive whole percents"),
])
def test_load_budgets_errors_name_key_and_problem(budgets, key, problem):
    with pytest.raises(SpecError) as info:
        load_budgets({"budgets": budgets})
    assert info.value.message.startswith(key)
    assert problem in info.value.message


def test_a_listing_accrual_extrapolates_to_the_cost_the_daemon_reports(tmp_path) -> None:
    """The listing carries ``accrual`` (cost at the last node change and $/h since) instead of a cost that
    moves every second; what a client extrapolates from it is the daemon's own `cluster_cost`, to the cent,
    at any later time, and it stops growing once the cluster has no nodes."""
    async def scenario() -> None:
        state = State(tmp_path / "state.db")
        await state.open()
        try:
            await state.add_sample("c1", 2, PRICE, at=T0)
            await state.add_sample("c1", 5, PRICE, at=T0 + H)
            await state.add_sample("c2", 3, PRICE, at=T0)
            await state.add_sample("c2", 0, 0.0, at=T0 + 2 * H)  # deleted: no more nodes
            got = await accruals(state)
            assert got["c1"] == {"cost": pytest.approx(2 * PRICE), "at": T0 + H, "per_hour": pytest.approx(5 * PRICE)}
            assert got["c2"]["per_hour"] == 0.0 and "never" not in got
            row = {"created_at": T0, "deleted_at": None}
            for cid, later in (("c1", T0 + H), ("c1", T0 + 1.5 * H), ("c1", T0 + 3 * H + 17),
                               ("c2", T0 + 2 * H), ("c2", T0 + 9 * H)):  # a listing is made after its `at`
                shown = live_row(dict(row, accrual=got[cid]), later)["accrued_cost"]
                assert cents(shown) == cents(await cluster_cost(state, cid, later))
            assert cents(live_row(dict(row, accrual=got["c2"]), T0 + 9 * H)["accrued_cost"]) == cents(6 * PRICE)
        finally:
            await state.close()

    asyncio.run(scenario())


def test_a_listing_row_shows_age_cost_and_countdown_as_of_now() -> None:
    """What `DaemonClient.list_clusters` adds to each row: the listing's bytes do not move with time, the
    rows a caller gets do."""
    row = {"created_at": T0, "deleted_at": None, "accrual": {"cost": 1.0, "at": T0 + 60, "per_hour": 3.6},
           "harvest": {"action": "keep", "deadline": T0 + 600, "seconds_left": 540.0}}
    at_120 = live_row(dict(row, harvest=dict(row["harvest"])), T0 + 120)
    assert at_120["age_seconds"] == 120.0 and at_120["accrued_cost"] == pytest.approx(1.06)
    assert at_120["harvest"]["seconds_left"] == 480.0
    at_900 = live_row(dict(row, harvest=dict(row["harvest"])), T0 + 900)
    assert at_900["harvest"]["seconds_left"] == 0.0  # past the deadline: never negative
    gone = live_row({"created_at": T0, "deleted_at": T0 + 30, "accrual": {"cost": 0.5, "at": T0 + 30, "per_hour": 0.0},
                     "harvest": None}, T0 + 5000)
    assert gone["age_seconds"] == 30.0 and gone["accrued_cost"] == 0.5  # a gone cluster's figures stand still
    never = live_row({"created_at": T0, "deleted_at": None, "accrual": {"cost": 0.0, "at": None, "per_hour": 0.0}},
                     T0 + 10)
    assert never["accrued_cost"] == 0.0
