"""EKS operations against moto and the fake Kubernetes API: the orphan sweep, exact costs from
instance times, and `recc kubeconfig` read by the official Kubernetes client."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from kubernetes import client as k8s, config as k8s_config

from recc import manifests as M
from tests.eks_env import boto, create_lease
from tests.opsenv import NOTHING, USER, context_settings, kube, leftovers, recc, setup_aws, use_aws, write_config
from tests.servers import moto_and_kube


@pytest.fixture(scope="module", autouse=True)
def servers():
    with moto_and_kube("research-eks", "us-east-1") as (moto_url, fake, url):
        yield {"moto_url": moto_url, "fake": fake, "url": url, **setup_aws(moto_url)}


@pytest.fixture
def env(servers, monkeypatch, tmp_path):
    use_aws(monkeypatch, servers["moto_url"], tmp_path)
    write_config(tmp_path / "config", "test", context_settings(servers["url"], servers))
    return servers


def _tags(user: str, cluster: str) -> dict[str, str]:
    return {"recc:managed": "true", "recc:user": user, "recc:namespace": M.namespace_name(user, cluster),
            "recc:job": "adhoc", "recc:cluster": cluster}


def _group(moto_url: str, user: str, cluster: str, itype: str, desired: int) -> str:
    """A group (and its launch template) as the provider makes them, made behind the daemon's back."""
    ec2 = boto(moto_url, "ec2")
    asg = boto(moto_url, "autoscaling")
    name = f"recc-{user}-{itype.replace('.', '-')}-{cluster}"
    tags = _tags(user, cluster)
    tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
    ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={
        "ImageId": "ami-12c6146b", "InstanceType": itype,
        "TagSpecifications": [{"ResourceType": "instance", "Tags": tag_list}]},
        TagSpecifications=[{"ResourceType": "launch-template", "Tags": tag_list}])
    asg.create_auto_scaling_group(
        AutoScalingGroupName=name, LaunchTemplate={"LaunchTemplateName": name, "Version": "$Latest"}, MinSize=0,
        MaxSize=3, DesiredCapacity=desired, AvailabilityZones=["us-east-1a"],
        Tags=[{"Key": k, "Value": v, "PropagateAtLaunch": True, "ResourceId": name,
               "ResourceType": "auto-scaling-group"} for k, v in tags.items()])
    return name


def _namespace(url: str, user: str, cluster: str, lease_ttl: int | None = None) -> str:
    names = M.Names(user, cluster)
    with kube(url) as c:
        k8s.CoreV1Api(c).create_namespace(M.namespace(names))
    if lease_ttl is not None:
        create_lease(url, names, f"reccd/{user}", lease_ttl)
    return names.namespace


def orphans(capsys, *argv: str) -> tuple[int, str, str]:
    """``recc orphans ARGS`` (its main, in this process: a subprocess costs seconds per call)."""
    from reccd.orphans import main

    code = main(["--context", "test", "--grace", "0", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_orphans_lists_exactly_the_leftovers_with_cost_and_deletes_them(env, capsys, monkeypatch):
    moto_url, url = env["moto_url"], env["url"]
    ec2 = boto(moto_url, "ec2")
    # leftovers: a group with its instance, a loose instance, a lone launch template, a half-made namespace
    lost = _group(moto_url, USER, "lost", "c5.xlarge", 1)
    stray = ec2.run_instances(ImageId="ami-12c6146b", InstanceType="t3.xlarge", MinCount=1, MaxCount=1,
                              TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                  {"Key": k, "Value": v} for k, v in _tags(USER, "stray").items()]}]
                              )["Instances"][0]["InstanceId"]
    lone = ec2.create_launch_template(
        LaunchTemplateName="recc-arathe-m5-large-lone", LaunchTemplateData={"ImageId": "ami-12c6146b"},
        TagSpecifications=[{"ResourceType": "launch-template", "Tags": [
            {"Key": k, "Value": v} for k, v in _tags(USER, "lone").items()]}])["LaunchTemplate"]["LaunchTemplateId"]
    half = _namespace(url, USER, "half")
    # explained: a live cluster (fresh Lease) with its group; another user's leftovers (not mine)
    alive_ns = _namespace(url, USER, "alive", lease_ttl=600)
    alive_group = _group(moto_url, USER, "alive", "m5.large", 1)
    bobs = _group(moto_url, "bob", "b1", "c5.xlarge", 0)
    try:
        deadline = time.monotonic() + 30
        while True:  # moto launches the group's instance on the next describe
            found = json.loads(orphans(capsys, "--json")[1])
            if any(o["kind"] == "instance" and o["group"] == lost for o in found) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        by_kind = {(o["kind"], o["id"]): o for o in found}
        lost_instance = next(o["id"] for o in found if o["kind"] == "instance" and o["group"] == lost)
        lost_template = next(o["id"] for o in found if o["kind"] == "launch-template" and o["detail"] == lost)
        assert set(by_kind) == {("group", lost), ("instance", lost_instance), ("instance", stray),
                                ("launch-template", lost_template), ("launch-template", lone), ("namespace", half)}
        assert by_kind[("group", lost)]["per_hour"] == pytest.approx(0.17)  # 1 x c5.xlarge
        assert by_kind[("instance", lost_instance)]["per_hour"] == 0  # counted with its group
        assert by_kind[("instance", stray)]["per_hour"] == pytest.approx(0.1664)  # t3.xlarge
        table = orphans(capsys)[1]
        assert "total: $0.34/h" in table and half in table

        everyone = json.loads(orphans(capsys, "--json", "--all-users")[1])
        assert ("group", bobs) in {(o["kind"], o["id"]) for o in everyone}

        monkeypatch.setattr("sys.stdin", open("/dev/null"))  # not a terminal: no one to ask
        code, _, err = orphans(capsys, "--delete")
        assert code == 1 and "--yes" in err
        # as a person runs it (a subprocess, its own event loop and clients)
        done = json.loads(recc("orphans", "--context", "test", "--delete", "--yes", "--json", "--grace", "0").stdout)
        assert all(o["deleted"] for o in done), done
        assert json.loads(orphans(capsys, "--json")[1]) == []
        for cluster in ("lost", "stray", "lone", "half"):
            assert leftovers(moto_url, url, M.namespace_name(USER, cluster)) == NOTHING
        assert leftovers(moto_url, url, alive_ns)["groups"] == [alive_group]  # the live cluster is untouched
    finally:
        asg = boto(moto_url, "autoscaling")
        for group in (alive_group, bobs, lost):
            try:
                asg.delete_auto_scaling_group(AutoScalingGroupName=group, ForceDelete=True)
            except asg.exceptions.ClientError:
                pass
        with kube(url) as c:
            for ns in (alive_ns, half):
                try:
                    k8s.CoreV1Api(c).delete_namespace(ns)
                except k8s.ApiException:
                    pass


def test_kubeconfig_lists_pods_of_the_namespace(env, tmp_path):
    ns = _namespace(env["url"], USER, "kc")
    try:
        path = tmp_path / "kc.yaml"
        out = recc("kubeconfig", "kc", "--context", "test", "--output", str(path)).stdout
        assert str(path) in out and (path.stat().st_mode & 0o777) == 0o600
        doc = yaml.safe_load(path.read_text())
        assert doc["contexts"][0]["context"]["namespace"] == ns
        assert "eks-token" in doc["users"][0]["user"]["exec"]["args"]
        # the official client runs the exec plugin (`recc eks-token`) for its token, and lists the namespace
        with k8s_config.new_client_from_config(config_file=str(path)) as api:
            core = k8s.CoreV1Api(api)
            assert core.list_namespaced_pod(ns).items == []  # the fake answers 401 to anything but an EKS token
        token = json.loads(recc("eks-token", "--cluster-name", "research-eks", "--region", "us-east-1").stdout)
        assert token["kind"] == "ExecCredential" and token["status"]["token"].startswith("k8s-aws-v1.")
        assert token["status"]["expirationTimestamp"].endswith("Z")
    finally:
        with kube(env["url"]) as c:
            k8s.CoreV1Api(c).delete_namespace(ns)


def test_exact_cost_from_instance_times(env):
    moto_url = env["moto_url"]
    ec2 = boto(moto_url, "ec2")
    asg = boto(moto_url, "autoscaling")
    group = _group(moto_url, USER, "billed", "t3.xlarge", 2)
    try:
        ids = [i["InstanceId"] for i in asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])
               ["AutoScalingGroups"][0]["Instances"]]
        assert len(ids) == 2
        time.sleep(1.5)
        ec2.terminate_instances(InstanceIds=[ids[0]])
        ended_at = time.time()
        launched = {i["InstanceId"]: i["LaunchTime"].timestamp() for r in ec2.describe_instances(
            InstanceIds=ids)["Reservations"] for i in r["Instances"]}
        rows = json.loads(recc("cost", "--exact", "--context", "test", "--json").stdout)
        now = time.time()
        cost = {r["cluster"]: r["cost"] for r in rows}
        # one instance for launch..termination, one still running: instance-seconds x $0.1664/h
        expected = ((ended_at - launched[ids[0]]) + (now - launched[ids[1]])) * 0.1664 / 3600
        assert cost["billed"] == pytest.approx(expected, abs=0.1664 * 8 / 3600)  # within a few seconds' worth
        by_user = json.loads(recc("cost", "--exact", "--context", "test", "--json", "--by", "user").stdout)
        assert [r["user"] for r in by_user] == [USER]
        table = recc("cost", "--exact", "--context", "test").stdout
        assert "billed" in table and "total" in table
    finally:
        asg.delete_auto_scaling_group(AutoScalingGroupName=group, ForceDelete=True)


@pytest.mark.slow
def test_read_df_in_a_pod_reads_the_pods_datastore(env, tmp_path):
    import asyncio

    import pandas as pd

    import recc.pandasextensions.io as pdx
    from recc.templates import resolve
    from reccd.contexts import Context
    from reccd.providers.eks import EksProvider
    from reccd.tls import client_security, make_cluster_tls
    from reccd.tunnel import Tunnel

    moto_url, url = env["moto_url"], env["url"]
    boto(moto_url, "s3").create_bucket(Bucket="research-data")
    desktop = tmp_path / "nfs"
    # LOCAL is an NFS folder on the desktop and an S3 prefix for the pods of context "test"
    settings = context_settings(url, env, data_access_role_arn="arn:aws:iam::123456789012:role/recc-data")
    write_config(tmp_path / "config", "test", settings,
                 datastores={"LOCAL": {"adhoc": str(desktop), "test@eks": "s3://research-data/pods"}})
    frame = pd.DataFrame({"a": [1, 2, 3], "b": [4.5, 5.5, 6.5]})
    pdx.write_df(frame, "demo/x.csv")  # the desktop's LOCAL
    import s3fs

    s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto_url}).pipe(
        "research-data/pods/demo/x.csv", (desktop / "demo" / "x.csv").read_bytes())  # as `recc sync` would
    spec = resolve("small-cluster-small-workers", n_workers=1, instance_type="t3.xlarge", worker_memory="1GiB",
                   scheduler_cpu=0.5, scheduler_memory="1GiB")
    tls = make_cluster_tls("data")
    provider = EksProvider(tmp_path / "work", Context.from_dict("test", settings), user=USER, poll=0.25)
    ns = M.namespace_name(USER, "data")

    def in_pod():
        import os

        import recc.pandasextensions.io as io
        from recc.datastore import locate

        return (os.environ.get("RECC_CONTEXT"), locate("demo/x.csv").store.url("demo/x.csv"),
                io.read_df("demo/x.csv", quiet=True).to_dict("list"))

    async def main():
        last = None
        try:
            async for cp in provider.create("data", spec, tls):
                last = cp
            sa = await provider.k8s("core", "read_namespaced_service_account", M.SERVICE_ACCOUNT, ns)
            assert sa.metadata.annotations["eks.amazonaws.com/role-arn"] == settings["data_access_role_arn"]
            endpoints = provider.endpoints("data", last)

            async def resolve_():
                return endpoints.scheduler

            tunnel = Tunnel(resolve_)
            port = await tunnel.start()
            try:
                from distributed import Client

                async with Client(f"tls://127.0.0.1:{port}", security=client_security(tls), asynchronous=True,
                                  direct_to_workers=False, timeout=60) as c:
                    return await c.submit(in_pod, pure=False)
            finally:
                await tunnel.close()
        finally:
            await provider.delete("data", last)
            await provider.close()

    context, where, data = asyncio.run(main())
    assert context == "test@eks" and where == "s3://research-data/pods/demo/x.csv"
    assert data == pdx.read_df("demo/x.csv", quiet=True).to_dict("list") == frame.to_dict("list")
    assert leftovers(moto_url, url, ns) == NOTHING
