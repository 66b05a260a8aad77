"""`recc cost --exact`: EKS spend from the instances' own launch and termination times in AWS.

Reads DescribeInstances (every RECC-tagged instance, any state) and DescribeScalingActivities
(``IncludeDeletedGroups``, so instances of deleted groups still count for the six weeks AWS keeps
activities), and prices each second an instance ran at the catalog's on-demand price
(`recc.instancecost`). This matches what Cost Explorer attributes to the propagated tags, up to the
catalog's price (`recc prices refresh` keeps it current).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any, Callable

from botocore.exceptions import BotoCoreError

from recc.catalog import load_catalog
from recc.errors import PlanError, RECCError, run_for_a_person
from recc.instancecost import InstanceRun, accrue_runs, runs_from_aws
from recc.paths import data_dir
from reccd.contexts import Context, all_contexts, load_context
from reccd.providers.eks.apis import EksApis

MANAGED = "recc:managed"
AWS_TIMEOUT = 60.0  # per context: a daemon request must not hang on an unreachable region


async def _pages(apis: EksApis, service: str, method: str, key: str, token_key: str = "NextToken",
                 **kwargs: Any) -> list[dict[str, Any]]:
    out, token = [], None
    while True:
        page = await apis.aws(service, method, **kwargs, **({token_key: token} if token else {}))
        out.extend(page.get(key, []))
        token = page.get("NextToken")
        if not token:
            return out


async def collect(context: Context, *, all_users: bool = False,
                  session_factory: Callable[[], Any] | None = None) -> list[InstanceRun]:
    """The runs of every RECC instance in the context's account and region (this user's unless ``all_users``).

    ``session_factory`` gives the base AWS session (the daemon's login); without it, the context's profile."""
    apis = EksApis(data_dir() / "costs", context, session_factory=session_factory)
    reservations = await _pages(apis, "ec2", "describe_instances", "Reservations",
                                Filters=[{"Name": "tag-key", "Values": [MANAGED]}])
    activities = await _pages(apis, "autoscaling", "describe_scaling_activities", "Activities",
                              IncludeDeletedGroups=True)
    activities = [a for a in activities if a.get("AutoScalingGroupName", "").startswith("recc-")]
    groups = await _pages(apis, "autoscaling", "describe_auto_scaling_groups", "AutoScalingGroups")
    group_tags = {g["AutoScalingGroupName"]: {t["Key"]: t["Value"] for t in g.get("Tags", [])} for g in groups}
    runs = runs_from_aws(reservations, activities, group_tags, load_catalog().names())
    return [r for r in runs if all_users or r.tags.get("recc:user") == apis.user]


def report(runs: list[InstanceRun], region: str, by: str, start: float, end: float) -> list[dict[str, Any]]:
    catalog = load_catalog()

    def price(itype: str | None) -> float:
        try:
            return catalog.price(itype or "", region)
        except PlanError:
            return 0.0  # not in the catalog: shown under "unpriced"

    totals = accrue_runs(runs, price, start, end, by)
    unpriced = sorted({r.instance_type or "?" for r in runs if price(r.instance_type) == 0.0})
    rows = [{by: k, "cost": round(v, 6)} for k, v in sorted(totals.items())]
    if unpriced:
        rows.append({by: "unpriced instance types", "cost": 0.0, "types": unpriced})
    return rows


async def exact_costs(by: str, days: float,
                      session_factory_for: Callable[[str], Callable[[], Any] | None] = lambda name: None,
                      timeout: float = AWS_TIMEOUT) -> dict[str, Any]:
    """``GET /v1/costs?exact=1``: `report` for every configured EKS context, each with its own error.

    No contexts (or a broken ``contexts:``) is not an error of the request: the answer says so in
    ``message``, so the TUI can show why there is nothing. A context AWS refuses (no login, expired
    credentials, no rights) answers its ``error`` and ``hint``; the others still answer."""
    now = time.time()
    answer: dict[str, Any] = {"by": by, "days": days, "exact": True, "contexts": [], "message": None}
    try:
        contexts = all_contexts()
    except RECCError as exc:
        answer["message"] = f"{exc.message} (exact costs come from AWS; {exc.hint})" if exc.hint else exc.message
        return answer

    async def one(ctx: Context) -> dict[str, Any]:
        out: dict[str, Any] = {"context": ctx.name, "region": ctx.region, "costs": [], "error": None, "hint": None}
        try:
            runs = await asyncio.wait_for(collect(ctx, session_factory=session_factory_for(ctx.name)), timeout)
            out["costs"] = report(runs, ctx.region, by, now - days * 86400, now)
        except RECCError as exc:
            out["error"], out["hint"] = exc.message, exc.hint
        except BotoCoreError as exc:  # no credentials at all, or AWS unreachable: before any API answer
            out["error"], out["hint"] = f"AWS: {exc}", "run `recc login` (or set the context's profile); docs/credentials.md"
        except asyncio.TimeoutError:
            out["error"], out["hint"] = f"AWS did not answer within {timeout:g} s", "try again; `recc doctor` checks access"
        return out

    answer["contexts"] = list(await asyncio.gather(*(one(c) for c in contexts.values())))
    return answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recc cost --exact", description=__doc__.split("\n\n")[0])
    parser.add_argument("--by", choices=["cluster", "user", "job", "namespace", "day"], default="cluster")
    parser.add_argument("--days", type=float, default=31.0)
    parser.add_argument("--context")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--all-users", action="store_true")
    args = parser.parse_args(argv)

    def run() -> int:
        context = load_context(args.context)
        now = time.time()
        runs = asyncio.run(collect(context, all_users=args.all_users))
        rows = report(runs, context.region, args.by, now - args.days * 86400, now)
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        if not rows:
            print(f"no RECC instances ran in the last {args.days:g} days")
            return 0
        width = max(len(str(r[args.by])) for r in rows + [{args.by: args.by.upper()}])
        print(f"{args.by.upper():<{width}}  COST")
        for r in rows:
            print(f"{r[args.by]:<{width}}  ${r['cost']:,.2f}" + (f"  ({', '.join(r['types'])})" if "types" in r else ""))
        print(f"{'total':<{width}}  ${sum(r['cost'] for r in rows):,.2f}")
        return 0

    return run_for_a_person(run)


if __name__ == "__main__":
    sys.exit(main())
