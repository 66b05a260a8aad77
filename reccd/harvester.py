"""`recc harvest`: the daemon's idle-harvest decision, for clusters no daemon looks after.

It reads the desktop daemon's ``<data>/state.db`` and each job daemon's ``<data>/jobs/<job>-<pid>/state.db``,
asks each live cluster's scheduler for its idle facts (without renewing its heartbeat) and
judges them with `recc.harvest.decide`; processes no live row explains are orphans. A cluster
is deleted through its database's daemon when that daemon answers (it records the deletion),
else through the provider, and the row is marked deleted by ``recc harvest`` as the daemon would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from recc.daemon_client import DaemonClient
from recc.errors import RECCError, run_for_a_person
from recc.harvest import decide, in_local_clock
from recc.paths import data_dir, runtime_dir, socket_path
from recc.spec import ClusterSpec, ClusterStatus
from reccd.providers import Provider, load_provider
from reccd.state import LIVE, State

BY = "recc harvest"
ORPHAN = "no RECC record explains these processes"
SILENT = "the scheduler does not answer"
HALF_MADE = (ClusterStatus.PENDING.value, ClusterStatus.CREATING.value, ClusterStatus.DELETING.value)
LOG_TAIL_LINES = 200


class Source:
    """One daemon's folders: its state database, its clusters' folders and its socket."""

    def __init__(self, label: str, data: Path, socket: Path | None) -> None:
        self.label, self.data, self.socket, self.db = label, data, socket, data / "state.db"
        self._providers: dict[tuple[str, str | None], Provider] = {}
        self._state: State | None = None  # opened only to record a deletion

    def provider(self, name: str, context: str | None = None) -> Provider:
        """The provider ``name``; for eks, in ``context`` (the cluster's own, as its daemon would use)."""
        key = (name, context if name == "eks" else None)
        if key not in self._providers:
            kwargs = {"context": key[1]} if key[1] else {}
            self._providers[key] = load_provider(name, workdir=self.data / "clusters" / name, **kwargs)
        return self._providers[key]

    def provider_for(self, row: dict[str, Any]) -> Provider:
        """A row's provider in its cluster's context (spec, else checkpoint; older rows: the default)."""
        context = (row.get("spec") or {}).get("context") or (row.get("checkpoint") or {}).get("context")
        return self.provider(row["provider"], context)

    def daemon_alive(self) -> bool:
        """Whether this folder's daemon answers (a frozen one does not, within 5 s)."""
        try:
            return self.socket is not None and DaemonClient(str(self.socket)).health(timeout=5.0) is not None
        except RECCError:
            return False

    async def state(self) -> State:
        if self._state is None:
            self._state = State(self.db)
            await self._state.open()
        return self._state

    async def close(self) -> None:
        if self._state is not None:
            await self._state.close()


def sources() -> list[Source]:
    """The desktop daemon's folders, then each job daemon's (``jobs/<job>-<pid>``)."""
    data = data_dir()
    found = [Source("daemon", data, socket_path())]
    jobs = data / "jobs"
    for folder in sorted(jobs.iterdir()) if jobs.is_dir() else []:
        if folder.is_dir():
            pid = folder.name.rsplit("-", 1)[-1]
            sock = runtime_dir() / f"job-{pid}" / "reccd.sock" if pid.isdigit() else None
            found.append(Source(f"job:{folder.name}", folder, sock))
    return found


def read_rows(db: Path) -> list[dict[str, Any]]:
    """The live clusters of a state database, opened read-only (a damaged field reads as None)."""
    if not db.exists():
        return []
    con = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True)
    try:
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA busy_timeout=5000")
        rows = con.execute(f"SELECT * FROM clusters WHERE status IN ({','.join('?' * len(LIVE))})"
                           " ORDER BY created_at", LIVE).fetchall()
        out = []
        for r in rows:
            row: dict[str, Any] = State._row(r)  # type: ignore[assignment]
            # damaged, or never updated: the journal's last readable checkpoint
            for j in [] if row.get("checkpoint") else con.execute(
                    "SELECT checkpoint FROM journal WHERE cluster_id=? AND phase IN ('done','complete')"
                    " AND checkpoint IS NOT NULL ORDER BY seq DESC", (r["id"],)):
                with suppress(ValueError):
                    row["checkpoint"] = json.loads(j["checkpoint"])
                    break
            out.append(row)
        return out
    finally:
        con.close()


def verdict(action: str, reason: str, clock: str | None = None, seconds_left: float | None = None,
            **extra: Any) -> dict[str, Any]:
    return {"action": action, "clock": clock, "reason": reason, "seconds_left": seconds_left, "deleted": False,
            "error": None, **extra}


async def judge(src: Source, row: dict[str, Any], daemon_alive: bool) -> dict[str, Any]:
    """What the daemon's harvest loop would decide about ``row`` now."""
    status = row["status"]
    if status != ClusterStatus.RUNNING.value and daemon_alive:
        return verdict("keep", f"{status}: its daemon is working on it")
    if status in HALF_MADE:
        return verdict("harvest", f"it was {status} when its daemon stopped; nobody will finish it")
    try:
        provider = src.provider_for(row)
        spec = ClusterSpec.from_dict(row["spec"]) if row["spec"] else ClusterSpec()  # unreadable: defaults
    except RECCError as exc:
        return verdict("keep", f"cannot check it: {exc.message}")
    try:
        facts = await provider.idle_facts(row["name"], row["checkpoint"] or {})  # type: ignore[attr-defined]
    except RECCError as exc:
        return verdict("harvest", SILENT, detail=exc.message)
    facts = in_local_clock(facts, time.time())
    decision = decide(facts, idle_timeout=spec.idle_timeout, no_client_timeout=spec.no_client_timeout,
                      warn_before=spec.harvest_warning, now=time.time(), extended_until=row.get("extended_until"))
    return verdict(decision.action, decision.reason, decision.clock, decision.seconds_left)


async def delete_recorded(src: Source, row: dict[str, Any], result: dict[str, Any]) -> None:
    """Delete through the provider and record it in the row, as the daemon's delete does."""
    from reccd.accounting import cluster_cost

    state = await src.state()
    cid, reason = row["id"], f"harvested: {result['reason']}"
    provider = src.provider_for(row)
    await state.add_event(cid, "cluster.harvested", f"harvested by {BY}: {result['reason']}",
                          {"reason": result["reason"], "clock": result["clock"], "by": BY})
    await state.update(cid, status=ClusterStatus.DELETING.value)  # live until done: a failure can be retried
    await state.add_event(cid, "cluster.status", f"deleting: {reason}", {"status": ClusterStatus.DELETING.value})
    fields: dict[str, Any] = {}
    with suppress(Exception):  # the tombstone's logs are a courtesy; deletion is the duty
        fields["logs_tail"] = await provider.logs(row["name"], row["checkpoint"] or {}, LOG_TAIL_LINES)
    await provider.delete(row["name"], row["checkpoint"])
    await state.add_sample(cid, 0, 0.0)
    fields["total_cost"] = await cluster_cost(state, cid)
    await state.update(cid, status=ClusterStatus.DELETED.value, deleted_at=time.time(), deleted_by=BY,
                       deleted_reason=reason, **fields)
    await state.add_event(cid, "cluster.status", reason, {"status": ClusterStatus.DELETED.value})


async def remove(src: Source, row: dict[str, Any] | None, result: dict[str, Any], daemon_alive: bool) -> None:
    try:
        if row is None:  # an orphan: no row to update; the database gets an event, as reconcile writes
            await src.provider(result["provider"]).delete(result["name"], None)
            if src.db.exists():
                await (await src.state()).add_event(None, "orphan.removed", f"{BY} removed leftover processes of "
                                                    f"{result['name']}", {"provider": result["provider"], "by": BY})
        elif daemon_alive:  # its daemon records the deletion
            await asyncio.to_thread(DaemonClient(str(src.socket)).delete_cluster, row["id"],
                                    f"harvested: {result['reason']}", BY)
        else:
            await delete_recorded(src, row, result)
        result["deleted"] = True
    except (RECCError, sqlite3.Error, OSError) as exc:
        result["error"] = exc.message if isinstance(exc, RECCError) else f"{type(exc).__name__}: {exc}"


async def harvest_source(src: Source, dry_run: bool) -> list[dict[str, Any]]:
    # Processes first, rows second: a daemon inserts a row before it spawns, so a cluster
    # being created now is never mistaken for an orphan.
    local = src.data / "clusters" / "local"
    owned = await src.provider("local").list_owned() if local.is_dir() else []  # type: ignore[attr-defined]
    rows = await asyncio.to_thread(read_rows, src.db)
    alive = await asyncio.to_thread(src.daemon_alive)
    verdicts = await asyncio.gather(*(judge(src, r, alive) for r in rows))
    items: list[tuple[dict[str, Any] | None, dict[str, Any]]] = [
        (row, {"name": row["name"], "provider": row["provider"], "source": src.label, **v})
        for row, v in zip(rows, verdicts)]
    known = {r["name"] for r in rows if r["provider"] == "local"}
    items += [(None, {"name": name, "provider": "local", "source": "orphan", **verdict("harvest", ORPHAN),
                      "folder": str(local / name)}) for name in owned if name not in known]
    if not dry_run:
        await asyncio.gather(*(remove(src, row, result, alive) for row, result in items
                               if result["action"] == "harvest"))
    return [result for _, result in items]


async def harvest(dry_run: bool) -> list[dict[str, Any]]:
    """Judge (and unless ``dry_run``, harvest) every cluster of every daemon of this user."""
    results: list[dict[str, Any]] = []
    for src in sources():
        try:
            results += await harvest_source(src, dry_run)
        except sqlite3.Error as exc:  # one unreadable database must not hide the others
            print(f"recc: skipping {src.db}: {exc}", file=sys.stderr)
        finally:
            await src.close()
    return results


def table(results: list[dict[str, Any]], dry_run: bool) -> str:
    if not results:
        return "no clusters found"
    rows = [("NAME", "SOURCE", "ACTION", "CLOCK", "WHY")]
    for r in results:
        action = "harvested" if r["deleted"] else ("harvest FAILED" if r["error"] else r["action"])
        why = r["reason"] + (f": {r['error']}" if r["error"] else "")
        rows.append((r["name"], r["source"], action, r["clock"] or "-", why))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[4] for row in rows]
    if dry_run and any(r["action"] == "harvest" for r in results):
        lines.append("(dry run: nothing was deleted)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="recc harvest",
        description="Delete idle or orphaned clusters that no daemon looks after, by the daemon's own rules.")
    parser.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    add_eks_arguments(parser)
    args = parser.parse_args(argv)

    def run() -> int:
        if args.print_cronjob:
            print(cronjob_yaml(args), end="")
            return 0
        if args.provider == "eks":
            from reccd.contexts import all_contexts, load_context
            from reccd.reaper import reap, reap_all

            if args.context:
                results = asyncio.run(reap(load_context(args.context), dry_run=args.dry_run, grace=args.grace,
                                           workdir=data_dir() / "reaper", contexts=all_contexts()))
            else:  # every configured EKS cluster; each namespace in the context it records
                results = asyncio.run(reap_all(all_contexts(), dry_run=args.dry_run, grace=args.grace,
                                               workdir=data_dir() / "reaper"))
        else:
            results = asyncio.run(harvest(args.dry_run))
        print(json.dumps(results, indent=2) if args.json else table(results, args.dry_run))
        failed = [r for r in results if r["error"]]
        for r in failed:
            print(f"recc: could not delete {r['name']} ({r['source']}): {r['error']}", file=sys.stderr)
        return 1 if failed else 0

    return run_for_a_person(run)


def add_eks_arguments(parser: argparse.ArgumentParser) -> None:
    """The reaper's options (``--provider eks``) and ``--print-cronjob``'s."""
    parser.add_argument("--provider", choices=["local", "eks"], default="local",
                        help="eks: judge every RECC namespace of the context's EKS cluster by its heartbeat "
                             "Lease and idle facts (the in-cluster reaper); local (default): this user's daemons")
    parser.add_argument("--context", help="the EKS context (--print-cronjob default: RECC_CONTEXT, else adhoc; "
                                          "--provider eks default: every configured EKS cluster, each "
                                          "namespace in the context it was made in)")
    parser.add_argument("--grace", type=float, default=15 * 60.0,
                        help="seconds a RECC namespace may live without a heartbeat Lease (default 900)")
    parser.add_argument("--print-cronjob", action="store_true",
                        help="print the reaper's Namespace, ServiceAccount, ConfigMap and CronJob as YAML")
    parser.add_argument("--image", help="--print-cronjob: an image with recc installed")
    parser.add_argument("--role-arn", help="--print-cronjob: the reaper's role (IRSA annotation); "
                                           "without it, an EKS Pod Identity association is expected")
    parser.add_argument("--schedule", default="*/5 * * * *", help="--print-cronjob: cron schedule")


def cronjob_yaml(args: argparse.Namespace) -> str:
    """``--print-cronjob``: the reaper's objects for the chosen context."""
    from recc.config import load_user_config
    from recc.errors import SpecError
    from recc.reaper_manifests import ReaperOptions, reaper_yaml
    from reccd.contexts import load_context

    context = load_context(args.context)
    if not args.image:
        raise SpecError("--print-cronjob needs --image: an image with recc installed",
                        hint="e.g. --image 111122223333.dkr.ecr.us-east-1.amazonaws.com/recc:0.1.0")
    settings = dict((load_user_config().get("contexts") or {}).get(context.name) or {})
    opts = ReaperOptions(context=context.name, context_settings=settings, image=args.image,
                         role_arn=args.role_arn, schedule=args.schedule)
    return reaper_yaml(opts, context.eks_cluster)


if __name__ == "__main__":
    sys.exit(main())
