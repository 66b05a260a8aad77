"""Exact EKS costs: what each instance ran, from AWS's own records, times the catalog price.

Pure functions over the answers of EC2 ``DescribeInstances`` and Auto Scaling
``DescribeScalingActivities`` (as boto3 returns them), so they are tested as data. An instance
runs from its ``LaunchTime`` until it is terminated (the time in its ``StateTransitionReason``,
``"User initiated (2026-11-28 10:00:00 GMT)"``, or its group's ``Terminating EC2 instance`` activity),
billed per second as EC2 bills Linux on-demand instances. Instances AWS no longer lists (terminated
over an hour ago) come from their group's launch and terminate activities. Runs are attributed by the
tags every RECC instance carries (``recc:user``, ``recc:namespace``, ``recc:job``, ``recc:cluster``),
as Cost Explorer attributes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from typing import Any, Callable, Iterable, Mapping

from recc.costs import accrue, accrue_by_day

ENDED = ("shutting-down", "terminated", "stopping", "stopped")
_REASON_TIME = re.compile(r"\((\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (?:GMT|UTC)\)")
_LAUNCH = re.compile(r"^Launching a new EC2 instance: (i-[0-9a-f]+)")
_TERMINATE = re.compile(r"^Terminating EC2 instance: (i-[0-9a-f]+)")
KEYS = {"cluster": "recc:cluster", "user": "recc:user", "job": "recc:job", "namespace": "recc:namespace"}


@dataclass(frozen=True)
class InstanceRun:
    """One instance from launch to termination (``end`` None: still running)."""

    instance_id: str
    instance_type: str | None
    start: float
    end: float | None
    tags: Mapping[str, str] = field(default_factory=dict)


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def termination_time(reason: str | None) -> float | None:
    """The time in ``"User initiated (2026-11-28 10:00:00 GMT)"`` (EC2 writes GMT, moto UTC)."""
    m = _REASON_TIME.search(reason or "")
    if not m:
        return None
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp()


def _group_parts(group: str, types: Iterable[str]) -> tuple[str | None, dict[str, str]]:
    """(instance type, tags) told by a RECC group name ``recc-<user>-<type with - for .>-<cluster>``."""
    for t in sorted(types, key=len, reverse=True):
        token = f"-{t.replace('.', '-')}-"
        if group.startswith("recc-") and token in group:
            user, cluster = group[len("recc-"):group.index(token)], group[group.index(token) + len(token):]
            return t, {"recc:user": user, "recc:cluster": cluster, "recc:namespace": f"recc-{user}-{cluster}"}
    return None, {}


def runs_from_aws(reservations: Iterable[Mapping[str, Any]], activities: Iterable[Mapping[str, Any]] = (),
                  group_tags: Mapping[str, Mapping[str, str]] | None = None,
                  instance_types: Iterable[str] = ()) -> list[InstanceRun]:
    """Every instance's run, from DescribeInstances reservations and DescribeScalingActivities activities.

    ``group_tags`` are the tags of groups that still exist (for instances only activities know);
    ``instance_types`` are the names used to read a group name when its group is gone.
    """
    group_tags = group_tags or {}
    launched: dict[str, tuple[float, str]] = {}
    terminated: dict[str, float] = {}
    for a in activities:
        if a.get("StatusCode") not in (None, "Successful", "InProgress"):
            continue
        desc = a.get("Description", "")
        if m := _LAUNCH.match(desc):
            launched[m.group(1)] = (_epoch(a.get("EndTime") or a["StartTime"]), a.get("AutoScalingGroupName", ""))
        elif m := _TERMINATE.match(desc):
            terminated[m.group(1)] = _epoch(a["StartTime"])
    runs: dict[str, InstanceRun] = {}
    for r in reservations:
        for i in r.get("Instances", []):
            iid = i["InstanceId"]
            end = None
            if i.get("State", {}).get("Name") in ENDED:
                end = termination_time(i.get("StateTransitionReason")) or terminated.get(iid)
            tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
            runs[iid] = InstanceRun(iid, i.get("InstanceType"), _epoch(i["LaunchTime"]), end, tags)
    types = list(instance_types)
    for iid, (start, group) in launched.items():
        if iid in runs:
            continue
        itype, tags = _group_parts(group, types)
        tags = {**tags, **{k: v for k, v in group_tags.get(group, {}).items() if k.startswith("recc:")}}
        runs[iid] = InstanceRun(iid, itype, start, terminated.get(iid), tags)
    return sorted(runs.values(), key=lambda r: (r.start, r.instance_id))


def accrue_runs(runs: Iterable[InstanceRun], price: Callable[[str | None], float], start: float, end: float,
                by: str = "cluster", tz: tzinfo = timezone.utc) -> dict[str, float]:
    """Dollars between ``start`` and ``end`` per cluster, user, job, namespace or day (``by``).

    Each run is one node from its start to its end (or ``end``), at ``price(instance_type)`` per hour,
    integrated to the second by `recc.costs.accrue` (days split at midnight in ``tz``).
    """
    if by not in (*KEYS, "day"):
        raise ValueError(f"by must be one of {', '.join((*KEYS, 'day'))}, got {by!r}")
    out: dict[str, float] = {}
    for run in runs:
        samples = [(run.start, 1)] + ([(run.end, 0)] if run.end is not None else [])
        if run.end is not None and run.end < run.start:
            continue  # a clock glitch in the records: nothing ran
        dollars_per_hour = price(run.instance_type)
        if by == "day":
            for day, dollars in accrue_by_day(samples, dollars_per_hour, start, end, tz).items():
                out[day] = out.get(day, 0.0) + dollars
            continue
        key = run.tags.get(KEYS[by]) or "-"
        out[key] = out.get(key, 0.0) + accrue(samples, dollars_per_hour, start, end)
    return out
