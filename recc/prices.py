"""`recc prices refresh`: on-demand prices from the AWS Pricing API, stored as a dated price file.

For each catalog instance type, one ``pricing:GetProducts`` query (service ``AmazonEC2``; Linux,
shared tenancy, no pre-installed software, capacity status ``Used``: the plain on-demand price) is
paged through; each ``PriceList`` entry is a JSON *string* holding ``product.attributes`` (with
``instanceType`` and ``regionCode``) and ``terms.OnDemand.<offer>.priceDimensions.<rate>.pricePerUnit.USD``.
The prices of the catalog's regions are written to ``<data dir>/catalog-YYYY-MM-DD.json``, which
`recc.catalog.load_catalog` lays over the shipped catalog (shapes stay the shipped ones; a type or
region the file lacks keeps its shipped price).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from recc.errors import ProviderError
from recc.paths import data_dir

PRICING_REGION = "us-east-1"  # the Pricing API's endpoint (also ap-south-1, eu-central-1)
FILE_PREFIX = "catalog-"
ON_DEMAND_FILTERS = {"operatingSystem": "Linux", "tenancy": "Shared", "preInstalledSw": "NA",
                     "capacitystatus": "Used", "licenseModel": "No License required"}


def product_filters(instance_type: str) -> list[dict[str, str]]:
    """GetProducts filters for the plain on-demand Linux price of one instance type, every region."""
    pairs = {"instanceType": instance_type, **ON_DEMAND_FILTERS}
    return [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in pairs.items()]


def parse_price_list(price_list: Iterable[str], regions: Iterable[str]) -> dict[str, dict[str, float]]:
    """``{instance type: {region: $/h}}`` from GetProducts ``PriceList`` entries (JSON strings)."""
    wanted = set(regions)
    out: dict[str, dict[str, float]] = {}
    for text in price_list:
        item = json.loads(text) if isinstance(text, str) else text
        attrs = item.get("product", {}).get("attributes", {})
        region, itype = attrs.get("regionCode"), attrs.get("instanceType")
        if region not in wanted or not itype:
            continue
        if any(attrs.get(k, v) != v for k, v in ON_DEMAND_FILTERS.items()):
            continue  # the filters should have excluded it; never take a dedicated or Windows price
        for offer in item.get("terms", {}).get("OnDemand", {}).values():
            for dim in offer.get("priceDimensions", {}).values():
                usd = dim.get("pricePerUnit", {}).get("USD")
                if dim.get("unit") == "Hrs" and usd is not None and float(usd) > 0:
                    out.setdefault(itype, {})[region] = float(usd)
    return out


def fetch(client: Any, instance_types: Iterable[str], regions: Iterable[str]) -> dict[str, dict[str, float]]:
    """Prices from the Pricing API (``client`` is a boto3 ``pricing`` client), paging through each type."""
    from botocore.exceptions import BotoCoreError, ClientError

    regions = list(regions)
    prices: dict[str, dict[str, float]] = {}
    for itype in instance_types:
        token = None
        while True:
            kwargs: dict[str, Any] = {"ServiceCode": "AmazonEC2", "Filters": product_filters(itype),
                                      "FormatVersion": "aws_v1", "MaxResults": 100}
            if token:
                kwargs["NextToken"] = token
            try:
                page = client.get_products(**kwargs)
            except (ClientError, BotoCoreError) as e:
                raise ProviderError(f"the AWS Pricing API did not answer for {itype}: {e}",
                                    hint="it needs pricing:GetProducts and AWS credentials "
                                         "(any account; prices are public)") from e
            for t, by_region in parse_price_list(page.get("PriceList", []), regions).items():
                prices.setdefault(t, {}).update(by_region)
            token = page.get("NextToken")
            if not token:
                break
    return prices


def refreshed_files(folder: Path | None = None) -> list[Path]:
    """The dated price files in the data folder, oldest first."""
    folder = folder or data_dir()
    return sorted(folder.glob(f"{FILE_PREFIX}[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9].json"))


def refresh(regions: Iterable[str] | None = None, profile: str | None = None, client: Any = None,
            instance_types: Iterable[str] | None = None, now: float | None = None) -> tuple[Path, list[dict]]:
    """Fetch the catalog's prices and store them dated; the path and what changed against the current catalog."""
    from recc.catalog import load_catalog

    catalog = load_catalog()
    regions = list(regions or catalog.regions)
    if client is None:
        import boto3

        client = boto3.Session(profile_name=profile).client("pricing", region_name=PRICING_REGION)
    types = list(instance_types or catalog.names())
    prices = fetch(client, types, regions)
    if not prices:
        raise ProviderError("the AWS Pricing API returned no prices for the catalog's instance types",
                            hint=f"regions asked: {', '.join(regions)}")
    changes = []
    for itype, by_region in sorted(prices.items()):
        for region, new in sorted(by_region.items()):
            old = catalog.instance(itype).prices.get(region) if itype in catalog else None
            if old is None or abs(old - new) > 1e-9:
                changes.append({"instance_type": itype, "region": region, "old": old, "new": new})
    day = time.strftime("%Y-%m-%d", time.gmtime(now or time.time()))
    doc = {"as_of": day, "source": f"AWS Pricing API GetProducts (AmazonEC2 on-demand, Linux, shared tenancy), "
                                   f"fetched {day}", "prices": prices}
    path = data_dir() / f"{FILE_PREFIX}{day}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    os.replace(tmp, path)  # a reader never sees half a file
    return path, changes


def overlay(base: Mapping[str, Any], refreshed: Mapping[str, Any]) -> dict[str, Any]:
    """The shipped catalog document with a price file's prices laid over it (pure)."""
    doc = json.loads(json.dumps(base))
    for itype, by_region in refreshed.get("prices", {}).items():
        if itype in doc["instance_types"]:
            doc["instance_types"][itype]["prices"].update({r: float(p) for r, p in by_region.items()})
    doc["as_of"] = str(refreshed.get("as_of", doc["as_of"]))
    doc["source"] = dict(doc["source"], prices=str(refreshed.get("source", "refreshed")))
    return doc
