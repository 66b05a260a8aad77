"""`recc orphans`: RECC resources in AWS and Kubernetes that no live cluster explains (docs/eks-operations.md).

Found: Auto Scaling groups, instances and launch templates tagged ``recc:managed`` or named ``recc-*``,
and namespaces labelled ``app.kubernetes.io/managed-by=reccd`` or named ``recc-*`` (not ``recc-system``).
A resource is explained when its cluster's namespace has a fresh heartbeat Lease, or a running daemon of
this user has the cluster as live in its state (a creation in progress has no Lease yet; a crashed
daemon's rows explain nothing), or it is younger than ``--grace``. Each orphan is shown with what it costs per hour (catalog price x instances).

``--delete`` removes them: for a cluster it can name (user and cluster from tags or labels), through
`EksProvider.delete` as its owner (the daemon's own path, which leaves nothing); what it cannot name,
resource by resource. It asks first unless ``--yes``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from recc import manifests as M
from recc.catalog import load_catalog
from recc.errors import PlanError, RECCError, run_for_a_person
from recc.harvest import lease_decision
from recc.paths import data_dir
from recc.reaper_manifests import REAPER_NAMESPACE
from reccd.contexts import Context, load_context
from reccd.providers.eks.apis import EksApis
from reccd.providers.eks.provider import EksProvider
from reccd.reaper import lease_time, owner_of

MANAGED = "recc:managed"
ALIVE_STATES = ["pending", "running", "stopping", "stopped"]


@dataclass
class Orphan:
    """One leftover resource and what it costs per hour (0 for templates and namespaces)."""

    kind: str  # group | instance | launch-template | namespace
    id: str
    namespace: str | None
    user: str | None
    cluster: str | None
    per_hour: float = 0.0
    detail: str = ""
    group: str | None = None  # an instance's group (its cost is counted there)
    deleted: bool = False
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _tags(items: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items or []}


def _price(instance_type: str | None, region: str) -> float:
    try:
        return load_catalog().price(instance_type or "", region)
    except PlanError:
        return 0.0  # unknown to the catalog: shown as $0 with the type named


def _age(when: Any, now: float) -> float:
    if when is None:
        return now
    stamp = when.timestamp() if isinstance(when, datetime) else float(when)
    return now - stamp


async def live_namespaces(apis: EksApis, now: float) -> set[str]:
    """Namespaces with a fresh heartbeat Lease, plus the live EKS clusters of this user's running daemons.

    A state row vouches for its cluster only while its daemon answers: a creation in progress has no
    Lease yet, but a daemon that crashed mid-create will never finish it (a restart would remove it),
    so once its Lease is stale or absent its half-made cluster is an orphan. A fresh Lease still
    explains a cluster whose daemon is down (a persistent cluster lives on its own TTL)."""
    from reccd.harvester import read_rows, sources

    live: set[str] = set()
    found = await apis.k8s("core", "list_namespace")
    for ns in found.items:
        if not ns.metadata.name.startswith("recc-"):
            continue
        lease = await apis.k8s("coord", "read_namespaced_lease", M.HEARTBEAT_LEASE, ns.metadata.name, ok=(404,))
        if lease is not None and lease.spec and lease_decision(
                lease_time(lease.spec.renew_time), lease.spec.lease_duration_seconds, now, now=now, grace=0) is None:
            live.add(ns.metadata.name)
    for src in sources():
        rows = [r for r in await asyncio.to_thread(read_rows, src.db) if r["provider"] == "eks"]
        # asked only when it has EKS rows: a frozen daemon costs its 5 s health timeout
        if rows and await asyncio.to_thread(src.daemon_alive):
            live.update(M.namespace_name(r.get("owner") or apis.user, r["name"]) for r in rows)
    return live


async def find(context: Context, *, all_users: bool = False, grace: float = 900.0,
               now: float | None = None) -> list[Orphan]:
    """Every RECC resource no live cluster explains (this user's unless ``all_users``)."""
    now = now or time.time()
    apis = EksApis(data_dir() / "orphans", context)
    try:
        return await _find(apis, context, all_users, grace, now)
    finally:
        await apis.close_api()


async def _find(apis: EksApis, context: Context, all_users: bool, grace: float, now: float) -> list[Orphan]:
    live = await live_namespaces(apis, now)
    region = context.region
    out: list[Orphan] = []

    def mine(user: str | None, name: str) -> bool:
        if all_users:
            return True
        if user is not None:
            return user == apis.user
        return name.startswith(f"recc-{M.namespace_name(apis.user, 'x')[5:-2]}-")

    def explained(ns: str | None, born: Any) -> bool:
        return (ns is not None and ns in live) or _age(born, now) < grace

    groups = await _pages(apis, "autoscaling", "describe_auto_scaling_groups", "AutoScalingGroups")
    in_groups: dict[str, str] = {}
    for g in groups:
        tags, name = _tags(g.get("Tags")), g["AutoScalingGroupName"]
        if not (tags.get(MANAGED) == "true" or name.startswith("recc-")):
            continue
        ns, user = tags.get("recc:namespace"), tags.get("recc:user")
        for i in g.get("Instances", []):
            in_groups[i["InstanceId"]] = name
        if explained(ns, g.get("CreatedTime")) or not mine(user, name):
            continue
        itype = _group_type(g)
        desired = max(g.get("DesiredCapacity", 0), len(g.get("Instances", [])))
        out.append(Orphan("group", name, ns, user, tags.get("recc:cluster"), desired * _price(itype, region),
                          f"{desired} x {itype or '?'}"))
    reservations = await _pages(apis, "ec2", "describe_instances", "Reservations",
                                Filters=[{"Name": "instance-state-name", "Values": ALIVE_STATES}])
    for r in reservations:
        for i in r["Instances"]:
            tags = _tags(i.get("Tags"))
            ns, user, group = tags.get("recc:namespace"), tags.get("recc:user"), in_groups.get(i["InstanceId"])
            named = tags.get("Name", "").startswith("recc-") or (group or "").startswith("recc-")
            if not (tags.get(MANAGED) == "true" or named) or explained(ns, i.get("LaunchTime")):
                continue
            if not mine(user, tags.get("Name") or group or ""):
                continue
            grouped = group is not None and any(o.kind == "group" and o.id == group for o in out)
            out.append(Orphan("instance", i["InstanceId"], ns, user, tags.get("recc:cluster"),
                              0.0 if grouped else _price(i.get("InstanceType"), region),
                              f"{i.get('InstanceType')} {i['State']['Name']}", group=group))
    templates = await _pages(apis, "ec2", "describe_launch_templates", "LaunchTemplates")
    group_names = {g["AutoScalingGroupName"] for g in groups}
    for t in templates:
        tags, name = _tags(t.get("Tags")), t["LaunchTemplateName"]
        if not (tags.get(MANAGED) == "true" or name.startswith("recc-")):
            continue
        ns, user = tags.get("recc:namespace"), tags.get("recc:user")
        if explained(ns, t.get("CreateTime")) or not mine(user, name):
            continue
        if name in group_names and name not in {o.id for o in out if o.kind == "group"}:
            continue  # the launch template of a group that is not an orphan
        out.append(Orphan("launch-template", t["LaunchTemplateId"], ns, user, tags.get("recc:cluster"),
                          detail=name))
    namespaces = await apis.k8s("core", "list_namespace")
    for ns in namespaces.items:
        name, labels = ns.metadata.name, ns.metadata.labels or {}
        managed = labels.get("app.kubernetes.io/managed-by") == "reccd"
        if not (managed or name.startswith("recc-")) or name == REAPER_NAMESPACE:
            continue
        user, cluster, _ = owner_of(ns)
        if explained(name, ns.metadata.creation_timestamp) or not mine(user, name):
            continue
        out.append(Orphan("namespace", name, name, user, cluster,
                          detail="terminating" if ns.metadata.deletion_timestamp else ""))
    return out


def _group_type(group: dict[str, Any]) -> str | None:
    types = {i.get("InstanceType") for i in group.get("Instances", []) if i.get("InstanceType")}
    if types:
        return sorted(types)[0]
    for name in load_catalog().names():  # recc-<user>-<type with - for .>-<cluster>
        if f"-{name.replace('.', '-')}-" in group["AutoScalingGroupName"]:
            return name
    return None


async def _pages(apis: EksApis, service: str, method: str, key: str, **kwargs: Any) -> list[dict[str, Any]]:
    out, token = [], None
    while True:
        page = await apis.aws(service, method, **kwargs, **({"NextToken": token} if token else {}))
        out.extend(page.get(key, []))
        token = page.get("NextToken")
        if not token:
            return out


async def delete(context: Context, orphans: list[Orphan]) -> None:
    """Delete the orphans: a nameable cluster through its owner's provider, the rest one by one."""
    apis = EksApis(data_dir() / "orphans", context)
    providers: dict[str, EksProvider] = {}
    try:
        # loose instances first: a cluster's delete waits for every instance tagged with its namespace
        loose = [o for o in orphans if o.kind == "instance" and o.group is None]
        if loose:
            await apis.aws("ec2", "terminate_instances", InstanceIds=[o.id for o in loose])
            for o in loose:
                o.deleted = True
        clusters = {(o.user, o.cluster) for o in orphans if o.user and o.cluster
                    and o.namespace == M.namespace_name(o.user, o.cluster)}

        async def remove_cluster(user: str, cluster: str) -> None:
            provider = providers.setdefault(user, EksProvider(data_dir() / "orphans", context, user=user,
                                                                 poll=0.5))
            try:
                await provider.delete(cluster, None)
                error = None
            except RECCError as exc:
                error = exc.message
            for o in orphans:
                if (o.user, o.cluster) == (user, cluster) and not o.deleted:
                    o.deleted, o.error = error is None, error

        await asyncio.gather(*(remove_cluster(u, c) for u, c in sorted(clusters)))  # type: ignore[arg-type]
        for o in [o for o in orphans if not o.deleted and o.error is None]:
            try:
                await _delete_one(apis, o)
                o.deleted = True
            except RECCError as exc:
                o.error = exc.message
    finally:
        for p in providers.values():
            await p.close()
        await apis.close_api()


async def _delete_one(apis: EksApis, o: Orphan) -> None:
    if o.kind == "group":
        await apis.aws("autoscaling", "delete_auto_scaling_group", AutoScalingGroupName=o.id, ForceDelete=True,
                       ok=("ValidationError",))
    elif o.kind == "launch-template":
        await apis.aws("ec2", "delete_launch_template", LaunchTemplateId=o.id,
                       ok=("InvalidLaunchTemplateId.NotFound", "InvalidLaunchTemplateName.NotFoundException"))
    elif o.kind == "instance":
        await apis.aws("ec2", "terminate_instances", InstanceIds=[o.id])
    elif o.kind == "namespace":
        await apis.k8s("core", "delete_namespace", o.id, ok=(404, 409))


def table(orphans: list[Orphan]) -> str:
    if not orphans:
        return "no orphans: every RECC resource belongs to a live cluster"
    rows = [("KIND", "ID", "NAMESPACE", "USER", "$/H", "DETAIL")]
    for o in orphans:
        state = " (deleted)" if o.deleted else (f" (FAILED: {o.error})" if o.error else "")
        rows.append((o.kind, o.id, o.namespace or "-", o.user or "-",
                     f"${o.per_hour:,.2f}" if o.kind in ("group", "instance") and not o.group else "-",
                     o.detail + (f" in {o.group}" if o.group else "") + state))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[5] for r in rows]
    lines.append(f"total: ${sum(o.per_hour for o in orphans):,.2f}/h")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recc orphans", description=__doc__.split("\n\n")[0])
    parser.add_argument("--context")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--delete", action="store_true")
    parser.add_argument("--yes", "-y", action="store_true")
    parser.add_argument("--all-users", action="store_true")
    parser.add_argument("--grace", type=float, default=900.0)
    args = parser.parse_args(argv)

    def run() -> int:
        context = load_context(args.context)
        orphans = asyncio.run(find(context, all_users=args.all_users, grace=args.grace))
        if args.delete and orphans:
            if not args.yes:
                if not sys.stdin.isatty():
                    raise RECCError(f"refusing to delete {len(orphans)} orphan(s) without confirmation",
                                    hint="pass --yes")
                print(table(orphans))
                if input(f"Delete these {len(orphans)} resources? [y/N] ").strip().lower() not in ("y", "yes"):
                    print("nothing deleted")
                    return 1
            asyncio.run(delete(context, orphans))
        print(json.dumps([asdict(o) for o in orphans], indent=2) if args.json else table(orphans))
        return 1 if any(o.error for o in orphans) else 0

    return run_for_a_person(run)


if __name__ == "__main__":
    sys.exit(main())
