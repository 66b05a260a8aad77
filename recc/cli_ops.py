"""`recc` commands for running RECC on a shared AWS account (docs/eks-operations.md).

``harvest`` (with the in-cluster reaper), ``orphans``, ``cost --exact``, ``budgets``, ``kubeconfig`` and
``eks-token`` need the EKS provider's clients, which live in the daemon's package; `recc` never imports
`reccd`, so these run ``python -m reccd.<module>`` with the same arguments (as ``recc harvest`` always has).
``prices refresh`` needs no provider and runs here (`recc.prices`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any, Callable

Command = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def _argv(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """``args`` written back as a command line for ``parser`` (positionals first, in order)."""
    out: list[str] = []
    for action in parser._actions:  # argparse keeps no public list; this one has been stable for decades
        if isinstance(action, argparse._HelpAction) or action.dest in ("fn", "command"):
            continue
        value = getattr(args, action.dest, None)
        if not action.option_strings:
            if value is not None:
                out.extend(value if isinstance(value, list) else [str(value)])
        elif isinstance(action, argparse._StoreTrueAction):
            if value:
                out.append(action.option_strings[-1])
        elif value is not None and value != action.default:
            out.extend([action.option_strings[-1], str(value)])
    return out


def _forward(module: str, parser: argparse.ArgumentParser, *prefix: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return subprocess.call([sys.executable, "-m", module, *prefix, *_argv(parser, args)])

    return run


def add_harvest(command: Command) -> None:
    """``recc harvest``: this user's daemons' clusters (default), or the in-cluster reaper (``--provider eks``)."""
    p = command("harvest", lambda a: 0,
                "delete idle or orphaned clusters no daemon looks after (the daemon's own rules); "
                "--provider eks is the in-cluster reaper")
    p.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    p.add_argument("--json", action="store_true")
    p.add_argument("--provider", choices=["local", "eks"], default="local",
                   help="eks: every RECC namespace of the context's EKS cluster, by heartbeat Lease and idle facts")
    p.add_argument("--context", help="the EKS context (default: RECC_CONTEXT, else adhoc)")
    p.add_argument("--grace", type=float, default=15 * 60.0,
                   help="seconds a RECC namespace may live without a heartbeat Lease (default 900)")
    p.add_argument("--print-cronjob", action="store_true",
                   help="print the reaper's Namespace, ServiceAccount, ConfigMap and CronJob (YAML)")
    p.add_argument("--image", help="--print-cronjob: an image with recc installed")
    p.add_argument("--role-arn", help="--print-cronjob: the reaper's role for IRSA (else EKS Pod Identity)")
    p.add_argument("--schedule", default="*/5 * * * *", help="--print-cronjob: cron schedule")
    p.set_defaults(fn=_forward("reccd.harvester", p))


def add_orphans(command: Command) -> None:
    p = command("orphans", lambda a: 0,
                "list (and delete) RECC-tagged or RECC-named AWS and Kubernetes resources no live cluster explains")
    p.add_argument("--context", help="the EKS context (default: RECC_CONTEXT, else adhoc)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--delete", action="store_true", help="delete them (asks first unless --yes)")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument("--all-users", action="store_true", help="everyone's, not only yours (deleting needs the rights)")
    p.add_argument("--grace", type=float, default=15 * 60.0,
                   help="seconds a resource may be younger than this and still be a creation in progress")
    p.set_defaults(fn=_forward("reccd.orphans", p))


def add_budgets(command: Command) -> None:
    p = command("budgets", lambda a: 0, "AWS Budgets from the budgets in config.yaml")
    p.add_argument("action", choices=["apply", "show"])
    p.add_argument("--context", help="the context whose account and region (default: RECC_CONTEXT, else adhoc)")
    p.add_argument("--dry-run", action="store_true", help="apply: only say what would change")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_forward("reccd.budgets", p))


def add_kubeconfig(command: Command) -> None:
    p = command("kubeconfig", lambda a: 0,
                "write a kubeconfig for one cluster's namespace (credentials from `recc eks-token`)")
    p.add_argument("name", help="the cluster")
    p.add_argument("--context", help="the EKS context (default: RECC_CONTEXT, else adhoc)")
    p.add_argument("--output", "-o", help="where to write it (default: <data>/kubeconfig/<name>.yaml)")
    p.add_argument("--user", help="the cluster's owner (default: you)")
    p.set_defaults(fn=_forward("reccd.kubeaccess", p, "kubeconfig"))

    p = command("eks-token", lambda a: 0, "print an EKS ExecCredential (a kubeconfig exec plugin)")
    p.add_argument("--cluster-name", required=True, help="the EKS cluster")
    p.add_argument("--region", help="its region")
    p.add_argument("--profile", help="AWS profile (default: the standard credential chain)")
    p.add_argument("--role-arn", help="assume this role first")
    p.set_defaults(fn=_forward("reccd.kubeaccess", p, "eks-token"))


def add_prices(command: Command) -> None:
    p = command("prices", cmd_prices, "refresh the instance catalog's prices from the AWS Pricing API")
    p.add_argument("action", choices=["refresh", "show"])
    p.add_argument("--region", action="append", help="only these regions (default: the catalog's)")
    p.add_argument("--profile", help="AWS profile (default: the standard credential chain)")
    p.add_argument("--json", action="store_true")


def cmd_prices(args: argparse.Namespace) -> int:
    import json

    from recc.catalog import load_catalog
    from recc.prices import refresh

    if args.action == "show":
        cat = load_catalog()
        info: dict[str, Any] = {"as_of": cat.as_of, "source": dict(cat.source), "regions": list(cat.regions),
                                "instance_types": len(cat)}
        print(json.dumps(info, indent=2) if args.json else
              f"catalog as of {cat.as_of}: {len(cat)} instance types in {', '.join(cat.regions)}\n"
              f"prices: {cat.source.get('prices', '')}")
        return 0
    path, changes = refresh(regions=args.region, profile=args.profile)
    if args.json:
        print(json.dumps({"path": str(path), "changes": changes}, indent=2))
    else:
        for c in changes:
            print(f"{c['instance_type']:<14} {c['region']:<12} ${c['old'] if c['old'] is not None else '-'}"
                  f" -> ${c['new']}")
        print(f"{len(changes)} price(s) changed; the catalog is now {path}")
    return 0


def add_cost_options(p: argparse.ArgumentParser) -> None:
    """``recc cost --exact``: from the instances' own launch and termination times in AWS."""
    p.add_argument("--exact", action="store_true",
                   help="EKS: from the instances' launch and termination times in AWS (as Cost Explorer attributes "
                        "them by tag) instead of the daemon's node counts")
    p.add_argument("--context", help="--exact: the EKS context (default: RECC_CONTEXT, else adhoc)")
    p.add_argument("--days", type=float, default=31.0, help="--exact: how far back (default 31 days)")
    p.add_argument("--all-users", action="store_true", help="--exact: everyone's, not only yours")


def cost_exact(args: argparse.Namespace) -> int:
    argv = ["--by", args.by, "--days", str(args.days)] + (["--json"] if args.json else []) + (
        ["--context", args.context] if args.context else []) + (["--all-users"] if args.all_users else [])
    return subprocess.call([sys.executable, "-m", "reccd.exactcost", *argv])


def register(command: Command) -> None:
    """Add these commands to the ``recc`` parser (``command`` is `recc.cli.build_parser`'s helper)."""
    add_harvest(command)
    add_orphans(command)
    add_budgets(command)
    add_prices(command)
    add_kubeconfig(command)
