"""EKS operations as data and with botocore's Stubber where moto cannot help: exact costs from a scripted
timeline, AWS Budgets (moto for create/describe, Stubber for updates and subscribers), Pricing refresh
(Stubber with the API's PriceList shape), the pod-template patch and the reaper's Lease rule."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws

from recc.catalog import load_catalog
from recc.costs import load_budgets
from recc.errors import SpecError
from recc.harvest import lease_decision
from recc.instancecost import accrue_runs, runs_from_aws
from recc.templates import resolve
from reccd import budgets as B

KEYS = dict(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def _epoch(text: str) -> float:
    return _t(text).timestamp()


def test_exact_cost_of_a_scripted_timeline_to_the_cent():
    tags = {"recc:user": "arathe", "recc:cluster": "c1", "recc:job": "nightly", "recc:namespace": "recc-arathe-c1"}
    reservations = [{"Instances": [
        # 3.5 h across midnight, terminated (EC2 writes the time in GMT)
        {"InstanceId": "i-0a", "InstanceType": "c5.xlarge", "LaunchTime": _t("2026-11-01 22:00:00"),
         "State": {"Name": "terminated"}, "StateTransitionReason": "User initiated (2026-11-02 01:30:00 GMT)",
         "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]},
        # still running at "now" (03:00): 2 h
        {"InstanceId": "i-0c", "InstanceType": "c5.xlarge", "LaunchTime": _t("2026-11-02 01:00:00"),
         "State": {"Name": "running"}, "StateTransitionReason": "",
         "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]}]
    # an instance of a deleted group, known only from its activities (2 h of r5.4xlarge)
    activities = [
        {"ActivityId": "a1", "AutoScalingGroupName": "recc-bob-r5-4xlarge-big", "StatusCode": "Successful",
         "Description": "Launching a new EC2 instance: i-0b", "StartTime": _t("2026-11-01 23:59:30"),
         "EndTime": _t("2026-11-02 00:00:00")},
        {"ActivityId": "a2", "AutoScalingGroupName": "recc-bob-r5-4xlarge-big", "StatusCode": "Successful",
         "Description": "Terminating EC2 instance: i-0b", "StartTime": _t("2026-11-02 02:00:00"),
         "EndTime": _t("2026-11-02 02:01:00")}]
    catalog = load_catalog()
    runs = runs_from_aws(reservations, activities, {}, catalog.names())
    assert [(r.instance_id, r.instance_type) for r in runs] == [("i-0a", "c5.xlarge"), ("i-0b", "r5.4xlarge"),
                                                                ("i-0c", "c5.xlarge")]

    def price(t):
        return catalog.price(t, "us-east-1")

    start, now = _epoch("2026-11-01 00:00:00"), _epoch("2026-11-02 03:00:00")
    c5, r5 = price("c5.xlarge"), price("r5.4xlarge")
    by_cluster = accrue_runs(runs, price, start, now, "cluster")
    assert round(by_cluster["c1"], 2) == round((3.5 + 2) * c5, 2)
    assert round(by_cluster["big"], 2) == round(2 * r5, 2)
    assert accrue_runs(runs, price, start, now, "user").keys() == {"arathe", "bob"}
    by_day = accrue_runs(runs, price, start, now, "day")
    assert round(by_day["2026-11-01"], 2) == round(2 * c5, 2)
    assert round(by_day["2026-11-02"], 2) == round(1.5 * c5 + 2 * r5 + 2 * c5, 2)
    assert accrue_runs(runs, price, start, now, "job")["nightly"] == pytest.approx(by_cluster["c1"])


BUDGET_CONFIG = {"budgets": {"email": "leads@example.com", "user": {"monthly": 500},
                             "jobs": {"nightly-risk": {"monthly": 300, "thresholds": [90, 100],
                                                       "email": ["risk@example.com"]}}}}


@mock_aws
def test_budgets_apply_creates_them_in_moto():
    budgets = load_budgets(BUDGET_CONFIG, user="arathe")
    client = boto3.client("budgets", **KEYS)
    changes = B.apply(client, "123456789012", budgets)
    assert changes[0].startswith("recc-user-arathe: created ($500.00/month, thresholds [50, 80, 100]%")
    made = {b["BudgetName"]: b for b in client.describe_budgets(AccountId="123456789012")["Budgets"]}
    assert made["recc-user-arathe"]["CostFilters"] == {"TagKeyValue": ["user:recc:user$arathe"]}
    assert made["recc-job-nightly-risk"]["BudgetLimit"]["Amount"] in ("300.00", "300", "300.0")
    notes = client.describe_notifications_for_budget(AccountId="123456789012", BudgetName="recc-job-nightly-risk")
    assert sorted(n["Threshold"] for n in notes["Notifications"]) == [90.0, 100.0]


def test_budgets_apply_converges_limits_notifications_and_subscribers():
    budget = load_budgets({"budgets": {"jobs": {"nightly-risk": {"monthly": 400, "thresholds": [80, 100],
                                                                  "email": ["new@example.com"]}}}})[0]
    client = boto3.client("budgets", **KEYS)
    name, acct = "recc-job-nightly-risk", "123456789012"
    old = {"BudgetName": name, "BudgetLimit": {"Amount": "300.0", "Unit": "USD"}, "TimeUnit": "MONTHLY",
           "BudgetType": "COST", "CostFilters": {"TagKeyValue": ["user:recc:job$nightly-risk"]}}
    note = {f"{p}": {"NotificationType": "ACTUAL", "ComparisonOperator": "GREATER_THAN", "Threshold": float(p),
                     "ThresholdType": "PERCENTAGE"} for p in (50, 80)}
    with Stubber(client) as stub:
        stub.add_response("describe_budget", {"Budget": old}, {"AccountId": acct, "BudgetName": name})
        stub.add_response("update_budget", {}, {"AccountId": acct, "NewBudget": B.aws_budget(budget)})
        stub.add_response("describe_notifications_for_budget", {"Notifications": [note["50"], note["80"]]},
                          {"AccountId": acct, "BudgetName": name})
        stub.add_response("delete_notification", {}, {"AccountId": acct, "BudgetName": name,
                                                      "Notification": note["50"]})
        stub.add_response("create_notification", {}, {"AccountId": acct, "BudgetName": name,
                                                      "Notification": B.notification(100),
                                                      "Subscribers": [{"SubscriptionType": "EMAIL",
                                                                       "Address": "new@example.com"}]})
        stub.add_response("describe_subscribers_for_notification",
                          {"Subscribers": [{"SubscriptionType": "EMAIL", "Address": "old@example.com"}]},
                          {"AccountId": acct, "BudgetName": name, "Notification": note["80"]})
        stub.add_response("create_subscriber", {}, {"AccountId": acct, "BudgetName": name, "Notification": note["80"],
                                                    "Subscriber": {"SubscriptionType": "EMAIL",
                                                                   "Address": "new@example.com"}})
        stub.add_response("delete_subscriber", {}, {"AccountId": acct, "BudgetName": name, "Notification": note["80"],
                                                    "Subscriber": {"SubscriptionType": "EMAIL",
                                                                   "Address": "old@example.com"}})
        changes = B.apply(client, acct, [budget])
        stub.assert_no_pending_responses()
    assert changes == [f"{name}: limit $300.00 -> $400.00, filter user:recc:job$nightly-risk",
                       f"{name}: notification at 50% removed", f"{name}: notification at 100% added for new@example.com",
                       f"{name}: new@example.com subscribed at 80%", f"{name}: old@example.com unsubscribed at 80%"]
    # converged: nothing to call but the reads
    current = dict(old, BudgetLimit={"Amount": "400.0", "Unit": "USD"})
    with Stubber(client) as stub:
        stub.add_response("describe_budget", {"Budget": current}, {"AccountId": acct, "BudgetName": name})
        stub.add_response("describe_notifications_for_budget", {"Notifications": [note["80"], B.notification(100)]},
                          {"AccountId": acct, "BudgetName": name})
        for n in (note["80"], B.notification(100)):
            stub.add_response("describe_subscribers_for_notification",
                              {"Subscribers": [{"SubscriptionType": "EMAIL", "Address": "new@example.com"}]},
                              {"AccountId": acct, "BudgetName": name, "Notification": n})
        assert B.apply(client, acct, [budget]) == []
    with pytest.raises(SpecError, match="budgets.email"):
        load_budgets({"budgets": {"email": "not-an-address", "user": {"monthly": 5}}})


def _price_item(itype: str, region: str, usd: str, tenancy: str = "Shared") -> str:
    """One PriceList entry as GetProducts returns it: a JSON string."""
    sku = f"SKU{abs(hash((itype, region, tenancy))) % 10**8}"
    return json.dumps({
        "product": {"productFamily": "Compute Instance", "sku": sku, "attributes": {
            "instanceType": itype, "regionCode": region, "location": "US East (N. Virginia)", "tenancy": tenancy,
            "operatingSystem": "Linux", "preInstalledSw": "NA", "capacitystatus": "Used",
            "licenseModel": "No License required", "servicecode": "AmazonEC2", "vcpu": "4"}},
        "serviceCode": "AmazonEC2", "version": "20261120000000", "publicationDate": "2026-11-20T00:00:00Z",
        "terms": {"OnDemand": {f"{sku}.JRTCKXETXF": {
            "offerTermCode": "JRTCKXETXF", "sku": sku, "effectiveDate": "2026-11-01T00:00:00Z", "termAttributes": {},
            "priceDimensions": {f"{sku}.JRTCKXETXF.6YS6EN2CT7": {
                "rateCode": f"{sku}.JRTCKXETXF.6YS6EN2CT7", "unit": "Hrs", "beginRange": "0", "endRange": "Inf",
                "description": f"${usd} per On Demand Linux {itype} Instance Hour", "appliesTo": [],
                "pricePerUnit": {"USD": usd}}}}}}})


def test_prices_refresh_from_the_pricing_api(monkeypatch, tmp_path):
    monkeypatch.setenv("RECC_DATA_DIR", str(tmp_path))
    from recc.prices import product_filters, refresh

    client = boto3.client("pricing", **KEYS)
    with Stubber(client) as stub:
        stub.add_response("get_products", {"FormatVersion": "aws_v1", "NextToken": "page2", "PriceList": [
            _price_item("c5.xlarge", "us-east-1", "0.1700000000"),
            _price_item("c5.xlarge", "ap-south-1", "0.0850000000")]},  # a region the catalog does not ask for
            {"ServiceCode": "AmazonEC2", "Filters": product_filters("c5.xlarge"), "FormatVersion": "aws_v1",
             "MaxResults": 100})
        stub.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": [
            _price_item("c5.xlarge", "eu-west-1", "0.2020000000")]},
            {"ServiceCode": "AmazonEC2", "Filters": ANY, "FormatVersion": "aws_v1", "MaxResults": 100,
             "NextToken": "page2"})
        stub.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": [
            _price_item("m5.large", "us-east-1", "0.1010000000"),
            _price_item("m5.large", "us-east-1", "0.9990000000", tenancy="Dedicated")]},
            {"ServiceCode": "AmazonEC2", "Filters": ANY, "FormatVersion": "aws_v1", "MaxResults": 100})
        path, changes = refresh(regions=["us-east-1", "eu-west-1"], client=client,
                                instance_types=["c5.xlarge", "m5.large"], now=_epoch("2026-11-28 12:00:00"))
    assert path == tmp_path / "catalog-2026-11-28.json"
    assert {(c["instance_type"], c["region"], c["new"]) for c in changes} == {
        ("c5.xlarge", "eu-west-1", 0.202), ("m5.large", "us-east-1", 0.101)}  # c5 in us-east-1 is unchanged
    catalog = load_catalog()  # prefers the dated file, keeps shipped prices it does not name
    assert catalog.price("m5.large", "us-east-1") == 0.101 and catalog.price("c5.xlarge", "eu-west-1") == 0.202
    assert catalog.price("m5.large", "eu-west-1") > 0 and catalog.as_of == "2026-11-28"
    path.write_text("{broken")  # a damaged refresh never stops planning: the shipped catalog again
    assert load_catalog().price("m5.large", "us-east-1") == 0.096


def test_pod_patch_validated_before_anything_exists():
    from recc import manifests as M

    spec = resolve("small-cluster-small-workers", pod_patch={
        "metadata": {"annotations": {"team": "quant"}},
        "spec": {"priorityClassName": "research", "tolerations": [{"key": "spot", "operator": "Exists"}],
                 "containers": [{"env": [{"name": "OMP_NUM_THREADS", "value": "1"}]},
                                {"name": "worker", "resources": {"limits": {"ephemeral-storage": "20Gi"}}}]}})
    names = M.Names("arathe", "c1")
    worker = M.worker_deployment(spec, names)["spec"]["template"]
    sched = M.scheduler_deployment(spec, names)["spec"]["template"]
    assert worker["metadata"]["annotations"] == {"team": "quant"} and worker["spec"]["priorityClassName"] == "research"
    assert [t["key"] for t in worker["spec"]["tolerations"]] == [M.CAPACITY_KEY, "spot"]  # RECC's placement stays
    (wc,), (sc,) = worker["spec"]["containers"], sched["spec"]["containers"]
    assert {"name": "OMP_NUM_THREADS", "value": "1"} in wc["env"] and {"name": "OMP_NUM_THREADS", "value": "1"} in sc["env"]
    assert wc["resources"]["limits"]["ephemeral-storage"] == "20Gi" and "ephemeral-storage" not in sc["resources"]["limits"]
    assert any(e["name"] == "POD_NAME" for e in wc["env"])  # merged by name, nothing of RECC's lost
    for bad, words in [({"spec": {"priorityClass": "x"}}, "did you mean 'priorityClassName'"),
                       ({"metdata": {}}, "did you mean 'metadata'"),
                       ({"spec": {"tolerations": {"key": "x"}}}, "spec.tolerations must be a list"),
                       ({"spec": {"serviceAccountName": "admin"}}, "cannot be set"),
                       ({"spec": {"nodeSelector": {M.CAPACITY_KEY: "other"}}}, "cannot be set"),
                       ({"spec": {"containers": [{"name": "sidecar"}]}}, "needs a name and an image"),
                       ({"metadata": {"labels": {"a": 1}}}, "must be a string")]:
        with pytest.raises(SpecError) as err:
            resolve("small-cluster-small-workers", pod_patch=bad)
        assert words in str(err.value), str(err.value)


def test_lease_decision():
    assert lease_decision(1000.0, 60, 900.0, now=1059.0, grace=900) is None
    d = lease_decision(1000.0, 60, 900.0, now=1200.0, grace=900)
    assert d.action == "harvest" and d.reason.startswith("heartbeat Lease expired 2m 20s ago")
    assert lease_decision(None, None, 1000.0, now=1100.0, grace=900).action == "keep"
    assert "no heartbeat Lease 16m 40s after" in lease_decision(None, None, 1000.0, now=2000.0, grace=900).reason


def test_pod_datastore_env():
    from recc.datastore import pod_datastore_env

    cfg = {"datastores": {"read": ["LOCAL", "S3"], "LOCAL": {"adhoc": "/mnt/nfs/x", "adhoc@eks": "s3://b/pods"},
                          "S3": "s3://b/shared", "FP_LOCAL": "/mnt/nfs/fp"}}
    env = pod_datastore_env("adhoc", cfg)
    assert env == {"RECC_CONTEXT": "adhoc@eks", "RECC_DATASTORE_LOCAL": "s3://b/pods",
                   "RECC_DATASTORE_S3": "s3://b/shared", "RECC_READ_DATASTORES": "LOCAL,S3"}
