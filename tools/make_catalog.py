"""Generate ``recc/data/catalog.json``: instance shapes and on-demand prices.

Run with a Python that has moto installed (the project venv does not need it)::

    python3 tools/make_catalog.py            # writes recc/data/catalog.json
    python3 tools/make_catalog.py --check    # exits 1 if the shipped file is stale

Shapes (vCPU, memory, GPUs, ENIs, IPv4 per ENI) come from moto's copy of EC2
DescribeInstanceTypes. moto 5.2 no longer carries the previous-generation p3 sizes, so
those three rows are written here by hand (see ``P3_SHAPES``).

Prices are transcribed by hand from the public AWS on-demand price list (Linux, shared
tenancy); there was no network to call the Pricing API. For each family and region one
anchor size is written down and the other sizes are scaled linearly by memory, which is
how AWS prices the m5, r5, c5, t3 and p3 sizes (memory per vCPU is fixed within m5/r5/c5/p3,
and t3 sizes scale with memory, not vCPU). g4dn does not scale linearly (the GPU is a fixed
cost), so its us-east-1 prices are written per size and the other regions are scaled by
their g4dn.xlarge ratio to us-east-1. Refresh from the Pricing API when it is reachable.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

AS_OF = "2026-11-28"
FAMILIES = ("m5", "r5", "c5", "t3", "g4dn", "p3")
REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
OUT = Path(__file__).resolve().parent.parent / "recc" / "data" / "catalog.json"

# (anchor instance type, $/h) per region and family.
ANCHORS: dict[str, dict[str, tuple[str, float]]] = {
    "us-east-1": {
        "m5": ("m5.large", 0.096), "r5": ("r5.large", 0.126), "c5": ("c5.large", 0.085),
        "t3": ("t3.medium", 0.0416), "g4dn": ("g4dn.xlarge", 0.526), "p3": ("p3.2xlarge", 3.06),
    },
    "eu-west-1": {
        "m5": ("m5.large", 0.107), "r5": ("r5.large", 0.141), "c5": ("c5.large", 0.096),
        "t3": ("t3.medium", 0.0456), "g4dn": ("g4dn.xlarge", 0.587), "p3": ("p3.2xlarge", 3.305),
    },
}
# us-west-2 charges the same as us-east-1 for these families.
ANCHORS["us-west-2"] = dict(ANCHORS["us-east-1"])

# g4dn us-east-1 on-demand Linux $/h per size, from the public price list.
G4DN_US_EAST_1 = {
    "g4dn.xlarge": 0.526, "g4dn.2xlarge": 0.752, "g4dn.4xlarge": 1.204, "g4dn.8xlarge": 2.176,
    "g4dn.12xlarge": 3.912, "g4dn.16xlarge": 4.352, "g4dn.metal": 7.824,
}

# Not in moto 5.2's data. vCPU / memory / GPUs: AWS's published P3 specifications
# (8/61 GiB/1 V100, 32/244 GiB/4, 64/488 GiB/8). ENIs x IPv4: the values that give
# amazon-eks-ami's eni-max-pods.txt max pods (58, 234, 234).
P3_SHAPES = {
    "p3.2xlarge": {"vcpu": 8, "memory_mib": 61 * 1024, "gpus": 1, "enis": 4, "ipv4_per_eni": 15},
    "p3.8xlarge": {"vcpu": 32, "memory_mib": 244 * 1024, "gpus": 4, "enis": 8, "ipv4_per_eni": 30},
    "p3.16xlarge": {"vcpu": 64, "memory_mib": 488 * 1024, "gpus": 8, "enis": 8, "ipv4_per_eni": 30},
}

SOURCE = {
    "shapes": (
        "vcpu, memory_mib, gpus, enis and ipv4_per_eni from moto {moto}'s copy of EC2 "
        "DescribeInstanceTypes (moto/ec2/resources/instance_types.json.gz); p3.2xlarge, p3.8xlarge "
        "and p3.16xlarge are not in it and were written by hand from AWS's published P3 "
        "specifications and amazon-eks-ami's eni-max-pods.txt"
    ),
    "prices": (
        "USD per instance-hour, on-demand, Linux, shared tenancy, transcribed by hand from the "
        "public AWS on-demand price list (not fetched from the Pricing API); one size per family "
        "and region transcribed, other sizes scaled linearly by memory; g4dn transcribed per size "
        "for us-east-1 and scaled by the region's g4dn.xlarge ratio elsewhere; us-west-2 equals "
        "us-east-1 for these families. To be refreshed from the AWS Pricing API."
    ),
}


def moto_shapes(path: Path | None) -> tuple[dict[str, dict[str, int]], str]:
    """Shapes of the catalog's families from moto's instance type data, and moto's version."""
    version = "(unknown version)"
    if path is None:
        try:
            import moto  # noqa: PLC0415 - only this tool needs moto
        except ImportError:
            sys.exit("moto is not importable here; run with a Python that has it, or pass --moto-data")
        version = moto.__version__
        base = Path(os.path.dirname(moto.__file__)) / "ec2" / "resources"
        # Newer moto ships the file gzipped.
        path = next((p for p in (base / "instance_types.json", base / "instance_types.json.gz") if p.exists()), None)
        if path is None:
            sys.exit(f"no instance_types.json(.gz) under {base}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    pattern = re.compile(rf"^({'|'.join(FAMILIES)})\.")
    shapes = {}
    for name, info in data.items():
        if not pattern.match(name):
            continue
        gpus = sum(g.get("Count", 0) for g in info.get("GpuInfo", {}).get("Gpus", []))
        shapes[name] = {
            "vcpu": info["VCpuInfo"]["DefaultVCpus"],
            "memory_mib": info["MemoryInfo"]["SizeInMiB"],
            "gpus": gpus,
            "enis": info["NetworkInfo"]["MaximumNetworkInterfaces"],
            "ipv4_per_eni": info["NetworkInfo"]["Ipv4AddressesPerInterface"],
        }
    return shapes, version


def price(name: str, shape: dict[str, int], shapes: dict[str, dict[str, int]], region: str) -> float:
    """On-demand $/h of ``name`` in ``region`` from the anchors (see the module docstring)."""
    family = name.split(".")[0]
    anchor, anchor_price = ANCHORS[region][family]
    if family == "g4dn":
        ratio = anchor_price / G4DN_US_EAST_1[anchor]
        return round(G4DN_US_EAST_1[name] * ratio, 4)
    return round(anchor_price * shape["memory_mib"] / shapes[anchor]["memory_mib"], 6)


def size_key(name: str) -> tuple[str, float]:
    """Sort sizes small to large: nano < micro < ... < xlarge < 2xlarge < ... < metal."""
    family, size = name.split(".")
    order = {"nano": 0.125, "micro": 0.25, "small": 0.5, "medium": 0.75, "large": 1, "xlarge": 2, "metal": 1e6}
    if size in order:
        return family, order[size]
    return family, 2 * float(size.removesuffix("xlarge"))


def build(moto_data: Path | None = None) -> dict[str, Any]:
    """The catalog document."""
    shapes, version = moto_shapes(moto_data)
    missing = set(P3_SHAPES) & set(shapes)
    if missing:  # a moto that has p3 again wins over the hand-written rows
        print(f"note: moto has {sorted(missing)}; using moto's shapes", file=sys.stderr)
    shapes = {**P3_SHAPES, **shapes}
    instances = {}
    for name in sorted(shapes, key=size_key):
        shape = shapes[name]
        instances[name] = {**shape, "prices": {r: price(name, shape, shapes, r) for r in REGIONS}}
    return {
        "as_of": AS_OF,
        "currency": "USD",
        "source": {k: v.format(moto=version) for k, v in SOURCE.items()},
        "regions": list(REGIONS),
        "instance_types": instances,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moto-data", type=Path, help="path to moto's instance_types.json(.gz)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = parser.parse_args(argv)
    text = json.dumps(build(args.moto_data), indent=1) + "\n"
    if args.check:
        same = args.out.exists() and args.out.read_text(encoding="utf-8") == text
        print("catalog is up to date" if same else f"{args.out} differs from what this tool generates")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
