"""The `recc` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable

from recc.errors import RECCError, SpecError, run_for_a_person


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:,.2f}/h"


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def _spec_overrides(args: argparse.Namespace) -> dict[str, Any]:
    fields = {"n_workers": "workers", "instance_type": "instance_type", "worker_cpu": "worker_cpu",
              "worker_memory": "worker_memory", "worker_gpu": "worker_gpu", "region": "region",
              "idle_timeout": "idle_timeout", "no_client_timeout": "no_client_timeout",
              "heartbeat_ttl": "heartbeat_ttl", "persist": "persist"}
    return {k: getattr(args, v) for k, v in fields.items() if getattr(args, v, None) is not None}


def _daemon(start: bool = True) -> Any:
    from recc.daemon_client import DaemonClient

    return DaemonClient.connect(start=start)


# -- commands -------------------------------------------------------------------------------

def cmd_plan(args: argparse.Namespace) -> int:
    from recc.plan import format_plan, plan
    from recc.templates import resolve

    spec = resolve(args.template, **_spec_overrides(args))
    p = plan(spec)
    if args.json:
        _print_json(dict(p.to_dict(), template=spec.template, n_workers=spec.n_workers))
    else:
        print(format_plan(p, spec))
    return 0


def cmd_templates(args: argparse.Namespace) -> int:
    from recc.templates import list_templates

    templates = list_templates()
    if args.json:
        _print_json({name: spec.to_dict() for name, spec in templates.items()})
        return 0
    rows = [[n, s.provider, s.instance_type, str(s.n_workers), f"{s.worker_cpu:g}",
             f"{s.worker_memory / 2**30:g}GiB", str(s.worker_gpu)] for n, s in sorted(templates.items())]
    print(_table(rows, ["TEMPLATE", "PROVIDER", "INSTANCE", "WORKERS", "CPU", "MEMORY", "GPU"]))
    return 0


def _wait_running(daemon: Any, name: str, quiet: bool) -> dict[str, Any]:
    shown = ""
    while True:
        info = daemon.get_cluster(name)
        line = f"{name}: {info['status']}, workers {info['workers']['ready']}/{info['workers']['desired']}"
        if line != shown and not quiet:
            print(line, file=sys.stderr, flush=True)
            shown = line
        if info["status"] == "running":
            return info
        if info["status"] in ("failed", "deleted"):
            raise RECCError(f"cluster {name} could not be created: {info.get('error') or info['status']}",
                            hint=f"see `recc logs {name}` or the daemon log")
        time.sleep(0.25)


def _pod_patch(path: str | None) -> dict[str, Any] | None:
    """``--pod-patch FILE.yaml``: the mapping in the file (ClusterSpec validates it before anything exists)."""
    if path is None:
        return None
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise SpecError(f"cannot read the pod patch {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise SpecError(f"the pod patch {path} is not valid YAML{where}",
                        hint="it must be one mapping, e.g. spec: {priorityClassName: research-high}") from None
    if not isinstance(data, dict):
        raise SpecError(f"the pod patch {path} must be a mapping of pod-template fields, found "
                        f"{type(data).__name__}", hint="e.g. spec: {priorityClassName: research-high}")
    return data


def cmd_up(args: argparse.Namespace) -> int:
    from recc.plan import format_plan, plan
    from recc.templates import resolve

    # validated here (ClusterSpec), before the daemon is asked for anything
    spec = resolve(args.template, **_spec_overrides(args), context=args.context,
                   pod_patch=_pod_patch(args.pod_patch))
    p = plan(spec)
    if args.dry_run:
        if spec.provider == "eks":
            import getpass

            from recc.manifests import dry_run_yaml

            print(dry_run_yaml(spec, args.name or f"{spec.template}-example", getpass.getuser()))
        else:
            print(format_plan(p, spec))
            print("# the local provider runs a scheduler and workers as processes here: nothing to apply")
        return 0
    if not args.json:
        print(format_plan(p, spec), file=sys.stderr)
    daemon = _daemon()
    created = daemon.create_cluster(spec.to_dict(), args.name, confirm_cost=args.yes)
    info = _wait_running(daemon, created["name"], args.json)
    if args.json:
        _print_json(info)
    else:
        print(f"cluster {info['name']} is running: scheduler {info['endpoints']['scheduler']}")
        print(f"  use it: RSHClient({info['name']!r})    delete it: recc down {info['name']}")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    clusters = _daemon().list_clusters(include_gone=args.all)
    if args.json:
        _print_json(clusters)
        return 0
    if not clusters:
        print("no clusters" + ("" if args.all else " running (see `recc ls --all` for history)"))
        return 0
    rows = []
    for c in clusters:
        harvest = c.get("harvest") or {}
        left = harvest.get("seconds_left")
        rows.append([c["name"], c["provider"], c["status"], f"{c['workers']['ready']}/{c['workers']['desired']}",
                     _money(c["cost_per_hour"]), c["endpoints"]["scheduler"] or "-", c["tunnel"].get("state", "-"),
                     "-" if left is None else f"{left / 60:.0f}m",
                     (c.get("deleted_reason") or "")[:60] if args.all else ""])
    headers = ["NAME", "PROVIDER", "STATUS", "WORKERS", "COST", "SCHEDULER", "TUNNEL", "HARVEST IN", ""]
    if args.all:
        headers[-1] = "WHY GONE"
    print(_table(rows, headers).rstrip())
    return 0


def cmd_extend(args: argparse.Namespace) -> int:
    info = _daemon().extend(args.name, args.minutes)
    print(f"cluster {info['name']} will not be harvested for at least {args.minutes:g} minutes")
    return 0


def cmd_cost(args: argparse.Namespace) -> int:
    if getattr(args, "exact", False):
        from recc.cli_ops import cost_exact

        return cost_exact(args)
    rows = _daemon().costs(args.by)
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no costs recorded yet")
        return 0
    total = sum(r["cost"] for r in rows)
    print(_table([[r[args.by], f"${r['cost']:,.2f}"] for r in rows] + [["total", f"${total:,.2f}"]],
                 [args.by.upper(), "COST"]))
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    if args.n_workers < 0:
        raise SpecError(f"the number of workers must be 0 or more, got {args.n_workers}")
    info = _daemon().scale(args.name, args.n_workers)
    print(f"cluster {info['name']} scaled to {info['workers']['desired']} workers")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from recc.logfollow import follow

    for component, line in follow(_daemon(), args.name, tail=args.tail or None, keep_going=args.follow):
        print(f"[{component}] {line}", flush=True)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    daemon = _daemon(start=False)
    if args.all:
        names = [c["name"] for c in daemon.list_clusters()]
        if not names:
            print("no clusters running")
            return 0
        if not args.yes:
            if not sys.stdin.isatty():
                raise RECCError(f"refusing to delete {len(names)} clusters without confirmation", hint="pass --yes")
            answer = input(f"Delete {len(names)} clusters ({', '.join(names)})? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return 1
    elif args.name:
        names = [args.name]
    else:
        raise SpecError("name a cluster to delete, or pass --all")
    for name in names:
        daemon.delete_cluster(name)
        print(f"deleted {name}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from recc.demo import main as demo

    return demo(n_workers=args.workers, periods=args.dates)


def cmd_daemon(args: argparse.Namespace) -> int:
    from recc.daemon_client import DaemonClient

    if args.action in ("install", "uninstall"):
        from recc.install import run

        return run(args.action, args.dry_run, args.target)
    client = DaemonClient()
    if args.action == "start":
        if client.is_alive():
            print(f"the RECC daemon is already running at {client.address}")
            return 0
        client.start_daemon(quiet=True)
        print(f"the RECC daemon is running at {client.address}")
        return 0
    if args.action == "stop":
        if not client.is_alive():
            print(f"no RECC daemon is running at {client.address}")
            return 0
        pid = client.health()["pid"]
        client.shutdown()
        deadline = time.monotonic() + 60
        while client.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        print(f"stopped the RECC daemon (pid {pid})")
        return 0
    try:
        health = client.health()
    except RECCError:
        if args.json:
            _print_json({"running": False, "socket": client.address})
        else:
            print(f"no RECC daemon is running at {client.address}")
        return 1
    if args.json:
        _print_json(dict(health, running=True))
    else:
        print(f"the RECC daemon {health['version']} is running at {health['socket']} (pid {health['pid']}, "
              f"log {health.get('log')})")
    return 0


# -- parser ---------------------------------------------------------------------------------

def _add_size_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, help="number of workers")
    p.add_argument("--instance-type", help="EC2 instance type, e.g. r5.4xlarge")
    p.add_argument("--worker-cpu", type=float, help="cores per worker")
    p.add_argument("--worker-memory", help="memory per worker, e.g. 15GiB")
    p.add_argument("--worker-gpu", type=int, help="GPUs per worker")
    p.add_argument("--region", help="AWS region for prices")


def build_parser() -> argparse.ArgumentParser:
    from recc import cli_ops

    parser = argparse.ArgumentParser(prog="recc", description="Ephemeral, cost-visible Dask clusters.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(fn=fn)
        return p

    p = command("plan", cmd_plan, "show nodes, workers per node and $/h for a template")
    p.add_argument("template", nargs="?", default="local")
    _add_size_options(p)
    p.add_argument("--json", action="store_true")

    p = command("templates", cmd_templates, "list cluster templates")
    p.add_argument("--json", action="store_true")

    p = command("up", cmd_up, "create a cluster and wait until it runs")
    p.add_argument("template")
    _add_size_options(p)
    p.add_argument("--name", help="cluster name (default: <template>-<random>)")
    p.add_argument("--idle-timeout", help="harvest after this long without tasks (e.g. '20 minutes')")
    p.add_argument("--no-client-timeout", help="harvest this long after the last client left")
    p.add_argument("--heartbeat-ttl", help="the cluster stops itself this long after the daemon's last heartbeat")
    p.add_argument("--persist", action="store_true", default=None,
                   help="survive the daemon's stop (logout) until its own heartbeat TTL or idle timeout")
    p.add_argument("--yes", "-y", action="store_true", help="confirm a cost above max_cost_per_hour")
    p.add_argument("--context", help="EKS: the context to make it in (default: the template's, else the "
                                      "daemon's RECC_CONTEXT / adhoc)")
    p.add_argument("--pod-patch", metavar="FILE.yaml",
                   help="EKS: extra pod-template fields merged into the scheduler's and workers' pods "
                        "(docs/eks-operations.md, Expert access); checked before anything is made")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be created (for EKS: Kubernetes YAML a person can kubectl apply)")
    p.add_argument("--json", action="store_true")

    p = command("ls", cmd_ls, "list clusters")
    p.add_argument("--all", action="store_true", help="include deleted and failed clusters")
    p.add_argument("--json", action="store_true")

    p = command("extend", cmd_extend, "postpone the idle harvest of a cluster")
    p.add_argument("name")
    p.add_argument("--minutes", type=float, default=30, help="keep it at least this long (default 30)")

    p = command("cost", cmd_cost, "accrued costs")
    p.add_argument("--by", choices=["cluster", "user", "job", "day"], default="cluster")
    p.add_argument("--json", action="store_true")
    cli_ops.add_cost_options(p)

    p = command("scale", cmd_scale, "scale a cluster to N workers")
    p.add_argument("name")
    p.add_argument("n_workers", type=int)

    p = command("logs", cmd_logs, "show a cluster's scheduler and worker logs")
    p.add_argument("name")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    p.add_argument("--tail", type=int, default=0, help="only the last N lines of each component")

    p = command("down", cmd_down, "delete a cluster (or all) and everything made for it")
    p.add_argument("name", nargs="?")
    p.add_argument("--all", action="store_true")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")

    cli_ops.register(command)  # harvest (and the reaper), orphans, budgets, prices, kubeconfig, eks-token

    from recc.datasync import add_sync_arguments, cmd_sync

    p = command("sync", cmd_sync, "copy new or changed files from one datastore to another")
    add_sync_arguments(p)

    p = command("demo", cmd_demo, "create a local cluster, run a date-partitioned workload, delete it")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--dates", type=int, default=20, help="number of business days to process")

    p = command("daemon", cmd_daemon, "start, stop or inspect the per-user daemon; install or remove its autostart")
    p.add_argument("action", choices=["start", "stop", "status", "install", "uninstall"])
    p.add_argument("--json", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="install/uninstall: print what would be written and run")
    p.add_argument("--for", dest="target", choices=["linux", "windows"],
                   help="install/uninstall: the platform's registration to use (default: this one)")

    from recc.cli_auth import add_commands as add_auth_commands
    from recc.doctor import add_commands as add_doctor_command

    add_auth_commands(command)
    add_doctor_command(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_for_a_person(lambda: args.fn(args))

if __name__ == "__main__":
    sys.exit(main())
