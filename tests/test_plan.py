"""Planning: allocatable capacity per node, packing, node counts and $/h."""

from __future__ import annotations

import json

import psutil
import pytest

from recc.catalog import Catalog, load_catalog
from recc.errors import PlanError
from recc.plan import (Allocatable, allocatable, format_plan, kube_reserved_cpu_millis,
                       kube_reserved_memory_mib, max_pods, plan)
from recc.spec import ClusterSpec
from recc.templates import resolve

GiB = 2**30


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    # Templates must not pick up the developer's own templates.yaml or local price.
    monkeypatch.setenv("RECC_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("RECC_LOCAL_PRICE_PER_HOUR", raising=False)


def eks(**kw) -> ClusterSpec:
    return ClusterSpec(provider="eks", **kw)


# facts.md section 1: type -> max pods, kube-reserved CPU (m), kube-reserved memory (Mi),
# and "nominal - reserved - 100Mi" (CPU m, memory Mi).
FACTS = [
    ("m5.4xlarge", 234, 110, 2829, 15890, 62607),
    ("r5.12xlarge", 234, 190, 2829, 47810, 390287),
    ("r5.4xlarge", 234, 110, 2829, 15890, 128143),
    ("c5.xlarge", 58, 80, 893, 3920, 7199),
    ("t3.xlarge", 58, 80, 893, 3920, 15391),
    ("g4dn.xlarge", 29, 80, 574, 3920, 15710),
]


@pytest.mark.parametrize("name, pods, res_cpu, res_mem, cpu, mem", FACTS)
def test_reservations_match_the_eks_ami(name, pods, res_cpu, res_mem, cpu, mem):
    inst = load_catalog().instance(name)
    assert max_pods(inst) == pods
    assert kube_reserved_cpu_millis(inst.vcpu) == res_cpu
    assert kube_reserved_memory_mib(max_pods(inst)) == res_mem
    upper = allocatable(inst, vm_overhead=0, daemonsets=False)
    assert upper == Allocatable(cpu_millis=cpu, memory_mib=mem, pods=pods, gpus=inst.gpus)


@pytest.mark.parametrize("vcpu, millis", [(2, 70), (4, 80), (16, 110), (48, 190), (96, 310)])
def test_kube_reserved_cpu_by_range(vcpu, millis):
    assert kube_reserved_cpu_millis(vcpu) == millis


def test_allocatable_takes_vm_overhead_and_daemonsets_off():
    inst = load_catalog().instance("m5.4xlarge")
    alloc = allocatable(inst)
    # 150m for aws-node + kube-proxy, 2 pods for them, 7.5% (rounded up) of 64 GiB for the VM.
    assert alloc.cpu_millis == 15890 - 150
    assert alloc.pods == 234 - 2
    assert alloc.memory_mib == 65536 - 4916 - 2829 - 100
    assert allocatable(load_catalog().instance("g4dn.xlarge")).gpus == 1


def test_300_large_workers():
    spec = resolve("large-cluster-large-workers", n_workers=300)
    p = plan(spec)
    assert (p.nodes, p.workers_per_node, p.instance_type, p.region) == (43, 7, "r5.4xlarge", "us-east-1")
    assert p.price_per_node_hour == pytest.approx(1.008)
    assert p.cost_per_hour == pytest.approx(43.344)
    assert format_plan(p, spec) == "plan: 43 x r5.4xlarge (7 workers/node) for 300 workers, est. $43.34/h (us-east-1)"


def test_the_region_sets_the_price():
    spec = resolve("large-cluster-large-workers", n_workers=300, region="eu-west-1")
    p = plan(spec)
    assert p.nodes == 43
    assert format_plan(p, spec).endswith("est. $48.50/h (eu-west-1)")


def test_plan_is_json_ready():
    d = json.loads(json.dumps(plan(resolve("large-cluster-large-workers")).to_dict()))
    assert d["nodes"] == 8 and d["workers_per_node"] == 7 and d["cost_per_hour"] == pytest.approx(8.064)
    assert d["allocatable"]["cpu_millis"] == 15740


def test_the_scheduler_takes_room_on_the_first_node():
    # m5.xlarge: 3.77 CPU allocatable holds three 1-CPU workers, or the scheduler and two.
    p = plan(resolve("small-cluster-small-workers"))
    assert (p.workers_per_node, p.workers_on_first_node, p.nodes) == (3, 2, 2)
    assert plan(resolve("small-cluster-small-workers", n_workers=2)).nodes == 1
    assert plan(resolve("small-cluster-small-workers", n_workers=0)).nodes == 1


def test_gpu_workers_one_per_gpu():
    spec = resolve("gpu-workers")
    p = plan(spec)
    assert (p.nodes, p.workers_per_node) == (4, 1)
    assert format_plan(p, spec) == "plan: 4 x g4dn.xlarge (1 worker/node) for 4 workers, est. $2.10/h (us-east-1)"
    # Four GPUs on a g4dn.12xlarge: four workers per node, whatever CPU and memory are left.
    p = plan(resolve("gpu-workers", instance_type="g4dn.12xlarge", n_workers=8))
    assert (p.workers_per_node, p.nodes) == (4, 2)
    assert p.cost_per_hour == pytest.approx(2 * 3.912)


def test_a_one_cpu_scheduler_next_to_a_gpu_worker_needs_its_own_node():
    p = plan(resolve("gpu-workers", scheduler_cpu=1))
    assert (p.workers_on_first_node, p.nodes) == (0, 5)


@pytest.mark.parametrize("overrides, message, hint", [
    ({"instance_type": "m5.large", "worker_gpu": 1}, "m5.large has none", "g4dn.xlarge"),
    ({"instance_type": "g4dn.xlarge", "worker_gpu": 2}, "asks 2 GPU", "g4dn.12xlarge"),
    ({"instance_type": "m5.large", "worker_memory": 64 * GiB}, "asks 64.0 GiB", "larger instance type"),
    ({"instance_type": "m5.large", "worker_cpu": 4}, "asks 4 CPU", "larger instance type"),
    ({"instance_type": "t3.nano", "worker_cpu": 0.1, "worker_memory": "64MiB"}, "the scheduler", "smaller scheduler"),
    ({"instance_type": "m5.larg"}, "unknown instance type", "m5.large"),
    ({"instance_type": "m5.large", "region": "mars-1"}, "mars-1", "us-east-1"),
])
def test_impossible_specs_say_why(overrides, message, hint):
    with pytest.raises(PlanError) as err:
        plan(eks(**overrides))
    assert message in err.value.message
    assert hint in err.value.hint
    assert "\n" not in str(err.value)


def test_a_custom_catalog_is_used():
    catalog = Catalog.from_dict({
        "as_of": "test", "source": {"shapes": "test", "prices": "test"}, "regions": ["here"],
        "instance_types": {"box.big": {"vcpu": 8, "memory_mib": 32768, "gpus": 0, "enis": 4,
                                       "ipv4_per_eni": 15, "prices": {"here": 1.5}}},
    })
    p = plan(eks(instance_type="box.big", region="here", n_workers=10, worker_cpu=2, worker_memory=4 * GiB), catalog)
    assert (p.workers_per_node, p.nodes, p.cost_per_hour) == (3, 4, 6.0)


def test_local_is_this_machine_and_free_by_default():
    spec = resolve("local")
    p = plan(spec)
    assert (p.nodes, p.workers_per_node, p.instance_type, p.cost_per_hour) == (1, 2, "local", 0.0)
    assert p.allocatable.cpu_millis == psutil.cpu_count() * 1000
    assert p.allocatable.memory_mib == psutil.virtual_memory().total // 2**20
    assert format_plan(p, spec).startswith("plan: 2 workers on this machine (")
    assert format_plan(p, spec).endswith("est. $0.00/h (local)")


def test_local_allows_more_cpu_than_the_machine_has():
    n = psutil.cpu_count() * 4
    p = plan(resolve("local", n_workers=n, worker_cpu=8, worker_memory="64MiB"))
    assert (p.nodes, p.workers_per_node) == (1, n)


def test_local_refuses_a_worker_bigger_than_the_machine():
    too_big = psutil.virtual_memory().total + GiB
    with pytest.raises(PlanError, match="this machine has"):
        plan(resolve("local", worker_memory=too_big))


def test_local_price_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("RECC_LOCAL_PRICE_PER_HOUR", "0.125")
    spec = resolve("local")
    p = plan(spec)
    assert p.cost_per_hour == 0.125
    assert "est. $0.13/h" in format_plan(p, spec)
    monkeypatch.setenv("RECC_LOCAL_PRICE_PER_HOUR", "cheap")
    with pytest.raises(PlanError, match="RECC_LOCAL_PRICE_PER_HOUR"):
        plan(spec)
