"""Costs in the daemon: accrual from recorded node counts, reports, and budget alerts.

The arithmetic is `recc.costs` (pure); this module reads the samples from the state,
groups them, and sends each budget alert once a month (the alerts table remembers).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import smtplib
import subprocess
import time
from datetime import datetime, timezone
from email.message import EmailMessage
from typing import Any

from recc.costs import Budget, accrue, accrue_by_day, load_budgets, month_start
from reccd.state import State

log = logging.getLogger("reccd.accounting")


def _price(samples: list[tuple[float, int, float]]) -> float:
    # one cluster has one instance type, so one price; take the latest recorded (a 0-node sample has none)
    return next((p for _, n, p in reversed(samples) if n), 0.0)


def _cost(samples: list[tuple[float, int, float]], start: float, end: float) -> float:
    if not samples:
        return 0.0
    return accrue([(t, n) for t, n, _ in samples], _price(samples), start, end)


async def cluster_cost(state: State, cid: str, now: float | None = None) -> float:
    samples = (await state.samples()).get(cid, [])
    return _cost(samples, samples[0][0] if samples else 0.0, now or time.time())


NO_ACCRUAL: dict[str, Any] = {"cost": 0.0, "at": None, "per_hour": 0.0}  # a cluster that never had nodes


async def accruals(state: State) -> dict[str, dict[str, Any]]:
    """How each cluster with samples accrues, by cluster id: ``{"cost", "at", "per_hour"}``, the dollars
    accrued up to its last node-count change ``at`` and the dollars per hour from then on (its nodes then x
    their price). Cost at ``now`` is ``cost + per_hour * (now - at) / 3600``, exactly what `cluster_cost`
    says; unlike it, this changes only when the node count does (the listing's bytes stay the same)."""
    out: dict[str, dict[str, Any]] = {}
    for cid, samples in (await state.samples()).items():
        if samples:
            at, nodes, _ = samples[-1]
            out[cid] = {"cost": round(_cost(samples, samples[0][0], at), 6), "at": at,
                        "per_hour": round(nodes * _price(samples), 6)}
    return out


async def report(state: State, by: str, now: float | None = None) -> list[dict[str, Any]]:
    """Accrued dollars per cluster, user, job or day (all history)."""
    rows = {r["id"]: r for r in await state.list(include_gone=True)}
    by_cluster = await state.samples()
    now = now or time.time()  # after the reads: a sample recorded meanwhile must not lie after `now`
    totals: dict[str, float] = {}
    for cid, samples in by_cluster.items():
        row = rows.get(cid)
        if row is None or not samples:
            continue
        start = samples[0][0]
        if by == "day":
            for day, dollars in accrue_by_day([(t, n) for t, n, _ in samples], _price(samples), start, now).items():
                totals[day] = totals.get(day, 0.0) + dollars
            continue
        key = {"cluster": row["name"] + ("" if row["status"] in ("running", "scaling") else f" ({row['id']})"),
               "user": row.get("owner") or "?", "job": row.get("job_id") or "-"}[by]
        totals[key] = totals.get(key, 0.0) + _cost(samples, start, now)
    return [{by: k, "cost": round(v, 6)} for k, v in sorted(totals.items())]


async def month_to_date(state: State, now: float) -> dict[tuple[str, str], float]:
    """Spend this month per budget scope: ("user", owner), ("job", id), ("namespace", tag)."""
    start = month_start(now)
    rows = {r["id"]: r for r in await state.list(include_gone=True)}
    spend: dict[tuple[str, str], float] = {}
    for cid, samples in (await state.samples()).items():
        row = rows.get(cid)
        if row is None:
            continue
        dollars = _cost(samples, start, now)
        keys = [("user", row.get("owner") or "?")]
        if row.get("job_id"):
            keys.append(("job", row["job_id"]))
        namespace = ((row.get("spec") or {}).get("tags") or {}).get("namespace")
        if namespace:
            keys.append(("namespace", namespace))
        for key in keys:
            spend[key] = spend.get(key, 0.0) + dollars
    return spend


class BudgetWatch:
    """Checks budgets now and then; each threshold alerts once a month, across restarts."""

    def __init__(self, state: State, publish: Any, owner: str, config: dict[str, Any]) -> None:
        self.state = state
        self.publish = publish
        self.owner = owner
        self.budgets: list[Budget] = load_budgets(config, user=owner)
        self.smtp: dict[str, Any] | None = config.get("smtp")

    async def check(self, now: float | None = None) -> list[str]:
        now = now or time.time()
        if not self.budgets:
            return []
        spend = await month_to_date(self.state, now)
        month = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m")
        sent = []
        for budget in self.budgets:
            name = self.owner if budget.scope == "user" else budget.name
            dollars = spend.get((budget.scope, name), 0.0)
            for percent in budget.crossed(0.0, dollars):
                if await self.state.record_alert(budget.scope, budget.name, month, percent):
                    message = budget.message(percent, dollars)
                    sent.append(message)
                    await self.state.add_event(None, "budget.threshold", message,
                                               {"scope": budget.scope, "name": budget.name, "percent": percent})
                    self.publish("budget.threshold", None, message=message, scope=budget.scope,
                                 name=budget.name, percent=percent, spend=dollars)
                    await asyncio.to_thread(self._notify, message)
        return sent

    def _notify(self, message: str) -> None:
        """A desktop notification where there is a desktop, and an email where SMTP is configured."""
        if shutil.which("notify-send"):
            try:
                subprocess.run(["notify-send", "RECC budget", message], timeout=5, capture_output=True)
            except (OSError, subprocess.SubprocessError):
                pass  # no desktop session: the event and the TUI still carry the alert
        if self.smtp and self.smtp.get("host") and self.smtp.get("to"):
            try:
                mail = EmailMessage()
                mail["Subject"] = "RECC budget alert"
                mail["From"] = self.smtp.get("from", f"recc@{self.smtp['host']}")
                mail["To"] = self.smtp["to"]
                mail.set_content(message)
                with smtplib.SMTP(self.smtp["host"], int(self.smtp.get("port", 25)), timeout=10) as server:
                    server.send_message(mail)
            except (OSError, smtplib.SMTPException) as exc:
                log.warning("could not email the budget alert: %s", exc)
