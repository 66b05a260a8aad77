"""The shipped instance catalog: what it knows, what it costs, and how it says no."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from recc.catalog import Catalog, InstanceType, load_catalog
from recc.errors import PlanError

FAMILIES = {
    "m5": ["large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "metal"],
    "r5": ["large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "metal"],
    "c5": ["large", "xlarge", "2xlarge", "4xlarge", "9xlarge", "12xlarge", "18xlarge", "24xlarge", "metal"],
    "t3": ["nano", "micro", "small", "medium", "large", "xlarge", "2xlarge"],
    "g4dn": ["xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "metal"],
    "p3": ["2xlarge", "8xlarge", "16xlarge"],
}
REGIONS = ("us-east-1", "us-west-2", "eu-west-1")


def test_catalog_is_loaded_once_and_says_where_its_numbers_come_from():
    catalog = load_catalog()
    assert load_catalog() is catalog
    assert catalog.as_of == "2026-11-28"
    assert catalog.currency == "USD"
    assert "moto" in catalog.source["shapes"] and "DescribeInstanceTypes" in catalog.source["shapes"]
    assert "price list" in catalog.source["prices"] and "Pricing API" in catalog.source["prices"]


def test_every_common_size_is_priced_in_every_region():
    catalog = load_catalog()
    assert set(catalog.regions) == set(REGIONS)
    for family, sizes in FAMILIES.items():
        for size in sizes:
            inst = catalog.instance(f"{family}.{size}")
            assert inst.family == family
            assert set(inst.prices) == set(REGIONS)
            assert all(p > 0 for p in inst.prices.values())


@pytest.mark.parametrize("name, us_east_1, eu_west_1", [
    ("m5.large", 0.096, 0.107), ("r5.large", 0.126, 0.141), ("c5.large", 0.085, 0.096),
    ("t3.medium", 0.0416, 0.0456), ("g4dn.xlarge", 0.526, 0.587), ("p3.2xlarge", 3.06, 3.305),
])
def test_anchor_prices(name, us_east_1, eu_west_1):
    catalog = load_catalog()
    assert catalog.price(name, "us-east-1") == pytest.approx(us_east_1)
    assert catalog.price(name, "us-west-2") == pytest.approx(us_east_1)
    assert catalog.price(name, "eu-west-1") == pytest.approx(eu_west_1)


def test_sizes_scale_within_a_family():
    catalog = load_catalog()
    assert catalog.price("r5.4xlarge", "us-east-1") == pytest.approx(1.008)
    assert catalog.price("m5.24xlarge", "us-east-1") == pytest.approx(4.608)
    assert catalog.price("c5.9xlarge", "us-east-1") == pytest.approx(1.53)
    assert catalog.price("t3.nano", "us-east-1") == pytest.approx(0.0052)
    assert catalog.price("p3.16xlarge", "eu-west-1") == pytest.approx(26.44)
    # g4dn is not linear: a bigger size adds CPU and memory, not GPUs.
    assert catalog.price("g4dn.2xlarge", "us-east-1") == pytest.approx(0.752)


@pytest.mark.parametrize("name, vcpu, memory_mib, gpus, enis, ipv4", [
    ("m5.4xlarge", 16, 65536, 0, 8, 30),
    ("r5.12xlarge", 48, 393216, 0, 8, 30),
    ("c5.xlarge", 4, 8192, 0, 4, 15),
    ("t3.xlarge", 4, 16384, 0, 4, 15),
    ("g4dn.xlarge", 4, 16384, 1, 3, 10),
    ("g4dn.12xlarge", 48, 196608, 4, 8, 30),
    ("p3.8xlarge", 32, 249856, 4, 8, 30),
])
def test_shapes_match_the_reference(name, vcpu, memory_mib, gpus, enis, ipv4):
    inst = load_catalog().instance(name)
    assert (inst.vcpu, inst.memory_mib, inst.gpus, inst.enis, inst.ipv4_per_eni) == (vcpu, memory_mib, gpus, enis, ipv4)


def test_unknown_instance_type_suggests_close_matches():
    with pytest.raises(PlanError) as err:
        load_catalog().instance("r5.4xlage")
    assert "r5.4xlage" in err.value.message
    assert "r5.4xlarge" in err.value.hint


def test_unknown_family_names_the_known_ones():
    with pytest.raises(PlanError) as err:
        load_catalog().instance("zz")
    assert "m5" in err.value.hint and "g4dn" in err.value.hint


def test_unknown_region_lists_known_regions():
    with pytest.raises(PlanError) as err:
        load_catalog().price("m5.large", "ap-south-9")
    assert "ap-south-9" in err.value.message
    for region in REGIONS:
        assert region in err.value.hint


def test_instances_are_read_only():
    inst = load_catalog().instance("m5.large")
    with pytest.raises(AttributeError):
        inst.vcpu = 64  # type: ignore[misc]
    with pytest.raises(TypeError):
        inst.prices["us-east-1"] = 0.0  # type: ignore[index]
    assert hash(inst) == hash(load_catalog().instance("m5.large"))
    assert isinstance(inst, InstanceType) and inst.to_dict()["prices"]["us-east-1"] == 0.096


def test_a_malformed_catalog_is_a_plan_error():
    with pytest.raises(PlanError, match="malformed"):
        Catalog.from_dict({"instance_types": {"x.large": {"vcpu": 2}}, "regions": [], "source": {}, "as_of": "x"})


def test_shipped_file_matches_the_generator():
    tool = Path(__file__).resolve().parent.parent / "tools" / "make_catalog.py"
    result = subprocess.run([sys.executable, str(tool), "--check"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
