"""`recc budgets apply`: the budgets of ``config.yaml`` as AWS Budgets (docs/eks-operations.md).

One AWS budget per configured budget, named ``recc-<scope>-<name>``: monthly, cost, limited to the
cost allocation tag of its scope (``recc:user``, ``recc:namespace`` or ``recc:job``, which every RECC
instance carries; activate them as cost allocation tags in the Billing console), with one ACTUAL
notification per threshold percent, each with the configured email subscribers. Applying again
converges: the limit and filter are updated, notifications and subscribers added and removed, and
nothing is called when nothing changed. AWS keeps the alerting when no laptop is awake; the daemon's
own alerts (`reccd.accounting.BudgetWatch`) stay as the desktop's.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any, Iterable

from recc.config import load_user_config
from recc.costs import Budget, load_budgets
from recc.errors import ProviderError, RECCError, run_for_a_person

TAG_OF_SCOPE = {"user": "recc:user", "namespace": "recc:namespace", "job": "recc:job"}


def budget_name(b: Budget) -> str:
    """``recc-<scope>-<name>``; AWS forbids ``:`` and ``\\`` in budget names."""
    return f"recc-{b.scope}-{b.name}".replace(":", "-").replace("\\", "-")[:100]


def aws_budget(b: Budget) -> dict[str, Any]:
    """The Budget structure of the Budgets API for ``b``."""
    return {"BudgetName": budget_name(b), "BudgetLimit": {"Amount": f"{b.monthly_limit:.2f}", "Unit": "USD"},
            "TimeUnit": "MONTHLY", "BudgetType": "COST",
            "CostFilters": {"TagKeyValue": [f"user:{TAG_OF_SCOPE[b.scope]}${b.name}"]}}


def notification(percent: int) -> dict[str, Any]:
    return {"NotificationType": "ACTUAL", "ComparisonOperator": "GREATER_THAN", "Threshold": float(percent),
            "ThresholdType": "PERCENTAGE"}


def _subscribers(emails: Iterable[str]) -> list[dict[str, str]]:
    return [{"SubscriptionType": "EMAIL", "Address": e} for e in sorted(set(emails))]


def _call(client: Any, method: str, ok: tuple[str, ...] = (), **kwargs: Any) -> Any:
    from botocore.exceptions import ClientError

    try:
        return getattr(client, method)(**kwargs)
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code in ok:
            return None
        raise ProviderError(f"AWS Budgets {method} failed: {code}: {e.response['Error'].get('Message')}",
                            hint="budgets need budgets:ViewBudget and budgets:ModifyBudget "
                                 "(docs/eks-operations.md)") from e


def _same_budget(have: dict[str, Any], want: dict[str, Any]) -> bool:
    return (float(have["BudgetLimit"]["Amount"]) == float(want["BudgetLimit"]["Amount"])
            and have.get("TimeUnit") == want["TimeUnit"]
            and sorted(have.get("CostFilters", {}).get("TagKeyValue", [])) == want["CostFilters"]["TagKeyValue"])


def apply_one(client: Any, account: str, b: Budget, dry_run: bool = False) -> list[str]:
    """Create or converge one budget; the changes made (or that would be made), in words."""
    want, name = aws_budget(b), budget_name(b)
    have = _call(client, "describe_budget", ok=("NotFoundException",), AccountId=account, BudgetName=name)
    if have is None:
        if not dry_run:
            _call(client, "create_budget", AccountId=account, Budget=want, NotificationsWithSubscribers=[
                {"Notification": notification(p), "Subscribers": _subscribers(b.emails)} for p in b.thresholds
                if b.emails])
        return [f"{name}: created (${b.monthly_limit:,.2f}/month, thresholds {list(b.thresholds)}%"
                + (f", emails {', '.join(b.emails)})" if b.emails else ", no email subscribers)")]
    changes = []
    if not _same_budget(have["Budget"], want):
        changes.append(f"{name}: limit ${float(have['Budget']['BudgetLimit']['Amount']):,.2f} -> "
                       f"${b.monthly_limit:,.2f}, filter {want['CostFilters']['TagKeyValue'][0]}")
        if not dry_run:
            _call(client, "update_budget", AccountId=account, NewBudget=want)
    notes = _call(client, "describe_notifications_for_budget", AccountId=account, BudgetName=name)
    existing = {int(n["Threshold"]): n for n in notes.get("Notifications", [])
                if n.get("NotificationType") == "ACTUAL" and n.get("ThresholdType", "PERCENTAGE") == "PERCENTAGE"}
    wanted = set(b.thresholds) if b.emails else set()  # a notification needs a subscriber
    for p in sorted(set(existing) - wanted):
        changes.append(f"{name}: notification at {p}% removed")
        if not dry_run:
            _call(client, "delete_notification", AccountId=account, BudgetName=name, Notification=existing[p])
    for p in sorted(wanted - set(existing)):
        changes.append(f"{name}: notification at {p}% added for {', '.join(b.emails)}")
        if not dry_run:
            _call(client, "create_notification", AccountId=account, BudgetName=name, Notification=notification(p),
                  Subscribers=_subscribers(b.emails))
    for p in sorted(wanted & set(existing)):
        subs = _call(client, "describe_subscribers_for_notification", AccountId=account, BudgetName=name,
                     Notification=existing[p])
        have_emails = {s["Address"] for s in subs.get("Subscribers", []) if s.get("SubscriptionType") == "EMAIL"}
        for e in sorted(set(b.emails) - have_emails):
            changes.append(f"{name}: {e} subscribed at {p}%")
            if not dry_run:
                _call(client, "create_subscriber", AccountId=account, BudgetName=name, Notification=existing[p],
                      Subscriber={"SubscriptionType": "EMAIL", "Address": e})
        for e in sorted(have_emails - set(b.emails)):
            changes.append(f"{name}: {e} unsubscribed at {p}%")
            if not dry_run:
                _call(client, "delete_subscriber", AccountId=account, BudgetName=name, Notification=existing[p],
                      Subscriber={"SubscriptionType": "EMAIL", "Address": e})
    return changes


def apply(client: Any, account: str, budgets: list[Budget], dry_run: bool = False) -> list[str]:
    """Converge every configured budget; the changes, in words (empty: all up to date)."""
    return [c for b in budgets for c in apply_one(client, account, b, dry_run)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recc budgets", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["apply", "show"])
    parser.add_argument("--context")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    def run() -> int:
        import boto3

        from reccd.contexts import load_context

        budgets = load_budgets(load_user_config(), user=getpass.getuser())
        if not budgets:
            raise RECCError("no budgets in config.yaml", hint="add budgets: (docs/spend-safety.md)")
        context = load_context(args.context)
        session = boto3.Session(profile_name=context.profile, region_name=context.region)
        client = session.client("budgets", region_name="us-east-1")  # Budgets has one endpoint
        account = _call(session.client("sts", region_name=context.region), "get_caller_identity")["Account"]
        if args.action == "show":
            rows = [{"name": budget_name(b), "budget": aws_budget(b), "thresholds": list(b.thresholds),
                     "emails": list(b.emails)} for b in budgets]
            print(json.dumps(rows, indent=2) if args.json else
                  "\n".join(f"{r['name']}: ${r['budget']['BudgetLimit']['Amount']}/month on "
                            f"{r['budget']['CostFilters']['TagKeyValue'][0]}, thresholds {r['thresholds']}%, "
                            f"emails {', '.join(r['emails']) or '-'}" for r in rows))
            return 0
        changes = apply(client, account, budgets, args.dry_run)
        if args.json:
            print(json.dumps({"account": account, "changes": changes, "dry_run": args.dry_run}, indent=2))
        else:
            print("\n".join(changes) if changes else "AWS Budgets are up to date")
            if args.dry_run and changes:
                print("(dry run: nothing was changed)")
        return 0

    return run_for_a_person(run)


if __name__ == "__main__":
    sys.exit(main())
