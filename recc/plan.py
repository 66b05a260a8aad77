"""Pack a cluster's workers onto nodes and estimate what it costs per hour.

Pure decision logic: a `ClusterSpec` and the instance catalog in, a `Plan` out. Workers are
packed onto *allocatable* capacity, which is what Kubernetes lets pods request after the
kubelet, system reservations and the per-node daemonsets took theirs (docs/planning.md has
the model and its sources). The ``local`` provider plans one "node": this machine.
"""

from __future__ import annotations

import math
import os
from decimal import ROUND_HALF_UP, Decimal
from dataclasses import asdict, dataclass
from typing import Any

import psutil

from recc.catalog import Catalog, InstanceType, load_catalog
from recc.errors import PlanError
from recc.spec import ClusterSpec

MIB = 2**20
# Karpenter's estimate of the memory the VM/kernel keeps (VM_MEMORY_OVERHEAD_PERCENT).
# The real kubelet capacity per type is unverified, so this is a heuristic, not a fact.
VM_MEMORY_OVERHEAD = 0.075
EVICTION_HARD_MEMORY_MIB = 100
# kube-reserved CPU: (range start, range end) in millicores -> percent * 100 (nodeadm/bootstrap.sh).
CPU_RESERVE_RANGES = ((0, 1000, 600), (1000, 2000, 100), (2000, 4000, 50), (4000, None, 25))
# Daemonsets on every EKS node: aws-node requests 50m, kube-proxy 100m, no memory.
DAEMONSET_CPU_MILLIS = 150
DAEMONSET_MEMORY_MIB = 0
DAEMONSET_PODS = 2
LOCAL_PRICE_ENV = "RECC_LOCAL_PRICE_PER_HOUR"


@dataclass(frozen=True)
class Allocatable:
    """What RECC's pods may request on one node."""

    cpu_millis: int
    memory_mib: int
    pods: int
    gpus: int


def max_pods(instance: InstanceType) -> int:
    """EKS max pods without prefix delegation: ``ENIs * (IPv4 per ENI - 1) + 2``."""
    return instance.enis * (instance.ipv4_per_eni - 1) + 2


def kube_reserved_cpu_millis(vcpu: int) -> int:
    """kube-reserved CPU: 6% of the first core, 1% of the second, 0.5% of cores 3-4, 0.25% above."""
    total = vcpu * 1000
    reserved = 0
    for start, end, pct100 in CPU_RESERVE_RANGES:
        if total > start:
            top = total if end is None else min(total, end)
            # Integer division per range, as bootstrap.sh and nodeadm do.
            reserved += (top - start) * pct100 // 100 // 100
    return reserved


def kube_reserved_memory_mib(pods: int) -> int:
    """kube-reserved memory: ``11 * maxPods + 255`` MiB."""
    return 11 * pods + 255


def kubelet_memory_mib(nominal_mib: int, overhead: float = VM_MEMORY_OVERHEAD) -> int:
    """Estimated kubelet memory capacity: nominal less Karpenter's VM overhead (rounded up to MiB)."""
    return nominal_mib - math.ceil(nominal_mib * overhead)


def allocatable(instance: InstanceType, *, vm_overhead: float = VM_MEMORY_OVERHEAD,
                daemonsets: bool = True) -> Allocatable:
    """Capacity left for RECC's pods on one EKS node of ``instance``.

    ``vm_overhead=0, daemonsets=False`` gives the upper bound in facts.md's table
    (nominal - kube-reserved - eviction threshold).
    """
    pods = max_pods(instance)
    cpu = instance.vcpu * 1000 - kube_reserved_cpu_millis(instance.vcpu)
    memory = (kubelet_memory_mib(instance.memory_mib, vm_overhead) - kube_reserved_memory_mib(pods)
              - EVICTION_HARD_MEMORY_MIB)
    if daemonsets:
        cpu, memory, pods = cpu - DAEMONSET_CPU_MILLIS, memory - DAEMONSET_MEMORY_MIB, pods - DAEMONSET_PODS
    return Allocatable(cpu_millis=cpu, memory_mib=memory, pods=pods, gpus=instance.gpus)


@dataclass(frozen=True)
class Plan:
    """How many nodes a spec needs, how its workers sit on them, and the estimated $/h."""

    provider: str
    instance_type: str
    region: str
    n_workers: int
    nodes: int
    workers_per_node: int
    workers_on_first_node: int  # the first node also runs the scheduler
    price_per_node_hour: float
    cost_per_hour: float
    allocatable: Allocatable

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``allocatable`` as a nested object)."""
        return asdict(self)


@dataclass(frozen=True)
class _Request:
    """One pod's requests in allocatable units (millicores, MiB)."""

    cpu_millis: int
    memory_mib: int
    gpus: int = 0


def _request(cpu: float, memory_bytes: int, gpus: int = 0) -> _Request:
    # Kubernetes rounds requests up; round() first so 0.1 * 1000 is 100, not 101.
    return _Request(math.ceil(round(cpu * 1000, 6)), math.ceil(memory_bytes / MIB), gpus)


def _fit(room: Allocatable, pod: _Request) -> int:
    """How many ``pod``s fit in ``room``."""
    counts = [room.cpu_millis // pod.cpu_millis, room.memory_mib // pod.memory_mib, room.pods]
    if pod.gpus:
        counts.append(room.gpus // pod.gpus)
    return max(0, min(counts))


def _shortfall(room: Allocatable, pod: _Request, what: str, instance: str) -> str | None:
    """One line saying which resource ``pod`` lacks on ``instance``, or None if it fits."""
    if pod.gpus > room.gpus:
        return f"{what} asks {pod.gpus} GPU(s) but {instance} has {room.gpus}"
    if pod.cpu_millis > room.cpu_millis:
        return (f"{what} asks {pod.cpu_millis / 1000:g} CPU but each {instance} node has "
                f"{room.cpu_millis / 1000:g} CPU allocatable")
    if pod.memory_mib > room.memory_mib:
        return (f"{what} asks {pod.memory_mib / 1024:.1f} GiB but each {instance} node has "
                f"{room.memory_mib / 1024:.1f} GiB allocatable")
    if room.pods < 1:
        return f"each {instance} node has no room for another pod"
    return None


def _suggest(catalog: Catalog, region: str, worker: _Request, scheduler: _Request, what: str) -> str:
    """A hint naming the cheapest catalog types where one worker and the scheduler fit."""
    fits = []
    for inst in catalog:
        if region not in inst.prices:
            continue
        alloc = allocatable(inst)
        if _fit(alloc, worker) >= 1 and _fit(alloc, scheduler) >= 1:
            fits.append((inst.prices[region], inst.name))
    if not fits:
        return f"no instance type in the catalog fits {what}; ask for less CPU, memory or GPUs"
    names = [name for _, name in sorted(fits)[:3]]
    smaller = "a smaller scheduler" if what == "the scheduler" else "smaller workers"
    return f"use a larger instance type (e.g. {', '.join(names)}) or {smaller}"


def plan(spec: ClusterSpec, catalog: Catalog | None = None) -> Plan:
    """Nodes, packing and estimated $/h for ``spec``; `PlanError` if it cannot be placed."""
    if spec.provider == "local":
        return _plan_local(spec)
    catalog = catalog or load_catalog()
    inst = catalog.instance(spec.instance_type)
    price = catalog.price(inst.name, spec.region)
    worker = _request(spec.worker_cpu, spec.worker_memory, spec.worker_gpu)
    scheduler = _request(spec.scheduler_cpu, spec.scheduler_memory)
    if worker.gpus and not inst.gpus:
        raise PlanError(f"workers ask for {worker.gpus} GPU(s) but {inst.name} has none",
                        hint=_gpu_hint(catalog, spec.region, worker.gpus))
    alloc = allocatable(inst)
    for pod, what in ((scheduler, "the scheduler"), (worker, "one worker")):
        reason = _shortfall(alloc, pod, what, inst.name)
        if reason and (pod is scheduler or spec.n_workers > 0):
            hint = (_gpu_hint(catalog, spec.region, worker.gpus) if pod.gpus > alloc.gpus
                    else _suggest(catalog, spec.region, worker, scheduler, what))
            raise PlanError(reason, hint=hint)
    per_node = _fit(alloc, worker)
    # The scheduler pod takes its share of the first node; workers fill the rest of it.
    first_room = Allocatable(alloc.cpu_millis - scheduler.cpu_millis, alloc.memory_mib - scheduler.memory_mib,
                             alloc.pods - 1, alloc.gpus)
    first = min(_fit(first_room, worker), spec.n_workers)
    rest = spec.n_workers - first
    nodes = 1 + (math.ceil(rest / per_node) if rest > 0 else 0)
    return Plan(provider=spec.provider, instance_type=inst.name, region=spec.region, n_workers=spec.n_workers,
                nodes=nodes, workers_per_node=per_node, workers_on_first_node=first,
                price_per_node_hour=price, cost_per_hour=round(nodes * price, 6), allocatable=alloc)


def _gpu_hint(catalog: Catalog, region: str, gpus: int) -> str:
    names = [i.name for i in sorted(catalog, key=lambda i: i.prices.get(region, math.inf))
             if i.gpus >= gpus and region in i.prices][:3]
    if not names:
        return f"no instance type in the catalog has {gpus} GPUs; ask for fewer GPUs per worker"
    return f"use a GPU instance type such as {', '.join(names)}, or set worker_gpu=0"


def local_price_per_hour() -> float:
    """The local machine's $/h from ``RECC_LOCAL_PRICE_PER_HOUR`` (default 0.0)."""
    raw = os.environ.get(LOCAL_PRICE_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise PlanError(f"{LOCAL_PRICE_ENV}={raw!r} is not a price",
                        hint="set it to this machine's cost in $/h, e.g. 0.5, or unset it")
    return value


def _plan_local(spec: ClusterSpec) -> Plan:
    # Local workers share this machine's CPUs (oversubscription is allowed: Dask threads
    # just contend), but one worker larger than all of its memory can never run.
    cpus = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    memory_mib = psutil.virtual_memory().total // MIB
    for what, size in (("one worker", spec.worker_memory), ("the scheduler", spec.scheduler_memory)):
        if math.ceil(size / MIB) > memory_mib and (what == "the scheduler" or spec.n_workers > 0):
            raise PlanError(f"{what} asks {size / 2**30:.1f} GiB but this machine has {memory_mib / 1024:.1f} GiB",
                            hint="ask for less memory per worker, or use an eks template")
    price = local_price_per_hour()
    # No pod limit locally; report the processes this plan runs (workers + scheduler).
    alloc = Allocatable(cpu_millis=cpus * 1000, memory_mib=memory_mib, pods=spec.n_workers + 1, gpus=0)
    return Plan(provider="local", instance_type="local", region="local", n_workers=spec.n_workers, nodes=1,
                workers_per_node=spec.n_workers, workers_on_first_node=spec.n_workers,
                price_per_node_hour=price, cost_per_hour=price, allocatable=alloc)


def format_money(amount: float) -> str:
    """Dollars to the cent, half up as people round (``0.125`` -> ``$0.13``)."""
    cents = Decimal(repr(amount)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return f"${cents:,.2f}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def format_plan(plan: Plan, spec: ClusterSpec) -> str:
    """One line for people, e.g.

    ``plan: 43 x r5.4xlarge (7 workers/node) for 300 workers, est. $43.34/h (us-east-1)``
    """
    cost = f"est. {format_money(plan.cost_per_hour)}/h"
    if plan.provider == "local":
        a = plan.allocatable
        return (f"plan: {_plural(spec.n_workers, 'worker')} on this machine "
                f"({a.cpu_millis // 1000} CPUs, {a.memory_mib / 1024:.1f} GiB), {cost} (local)")
    per_node = "worker/node" if plan.workers_per_node == 1 else "workers/node"
    return (f"plan: {plan.nodes} x {plan.instance_type} ({plan.workers_per_node} {per_node}) "
            f"for {_plural(spec.n_workers, 'worker')}, {cost} ({plan.region})")
