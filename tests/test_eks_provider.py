"""The eks provider end to end: moto (server mode) for AWS, tests/fakekube for Kubernetes, real Dask
processes as pods, the scheduler reached through a port-forward. The provider is used directly."""

from __future__ import annotations

import asyncio

import pytest

from recc.templates import resolve
from recc import manifests as M
from reccd.contexts import Context
from reccd.providers import load_provider
from reccd.providers.eks import EksProvider, group_name
from reccd.tls import client_security, make_cluster_tls
from reccd.tunnel import Tunnel
from tests import eks_env
from tests.fakekube import FakeKube
from tests.servers import moto_and_kube

CLUSTER = "research-eks"
REGION = "us-east-1"
AWS = dict(region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
USER = "arathe"


@pytest.fixture(scope="module", autouse=True)
def servers():
    with moto_and_kube(CLUSTER, REGION) as (moto_url, fake, url):
        yield setup_aws(moto_url, fake, url)


def setup_aws(moto_url: str, fake: FakeKube, url: str) -> dict:
    """The servers and the context's launch template and provisioner role, made in moto."""
    role_arn, template = eks_env.setup_aws(moto_url)
    return {"moto_url": moto_url, "fake": fake, "url": url, "role_arn": role_arn, "template": template}


@pytest.fixture
def aws_env(monkeypatch, servers):
    monkeypatch.setenv("AWS_ENDPOINT_URL", servers["moto_url"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return servers


def context(servers, **kw) -> Context:
    base = dict(name="test", region=REGION, eks_cluster=CLUSTER, kubernetes_api_url=servers["url"],
                provisioner_role_arn=servers["role_arn"], launch_template_name=servers["template"],
                availability_zones=(f"{REGION}a",), max_nodes=3, capacity_timeout=60, workers_timeout=120)
    base.update(kw)
    return Context(**base)


def leftovers(servers, namespace: str) -> dict:
    return eks_env.namespace_leftovers(servers["moto_url"], servers["url"], namespace)


def test_registered():
    provider = load_provider("eks", workdir=None, context=Context(name="x", eks_cluster=CLUSTER), user=USER)
    assert isinstance(provider, EksProvider)
    assert group_name("arathe", "c5.xlarge", "c1") == "recc-arathe-c5-xlarge-c1"


@pytest.mark.slow
def test_create_compute_delete(aws_env, tmp_path):
    servers = aws_env
    spec = resolve("small-cluster-small-workers", n_workers=2, instance_type="t3.xlarge",
                   worker_memory="1GiB", scheduler_cpu=0.5, scheduler_memory="1GiB", heartbeat_ttl=600)
    tls = make_cluster_tls("e2e")
    provider = EksProvider(tmp_path, context(servers), user=USER, poll=0.25, daemon_id="d1desktop")
    other = EksProvider(tmp_path / "other", context(servers), user=USER, poll=0.25, daemon_id="d2laptop")
    ns = M.namespace_name(USER, "e2e")

    async def main():
        seen = []
        try:
            async for cp in provider.create("e2e", spec, tls):
                seen.append(cp)
            assert [k for k in ("policy", "groups", "secret", "deployments", "service", "ready")
                    if k in seen[-1]] == ["policy", "groups", "secret", "deployments", "service", "ready"]
            group = seen[-1]["groups"][0]
            assert group["name"] == "recc-arathe-t3-xlarge-e2e" and group["desired"] == 1
            assert await provider.list_owned() == ["e2e"]  # ours, no Lease: a restart would sweep it
            assert await other.list_owned() == []  # another daemon's: never

            # the daemon's way: a localhost tunnel whose upstream is a port-forward to the scheduler
            endpoints = provider.endpoints("e2e", seen[-1])

            async def resolve_():
                return endpoints.scheduler

            tunnel = Tunnel(resolve_)
            port = await tunnel.start()
            try:
                from distributed import Client

                async with Client(f"tls://127.0.0.1:{port}", security=client_security(tls), asynchronous=True,
                                  direct_to_workers=False, timeout=60) as c:
                    await c.wait_for_workers(2, timeout=30)
                    assert await c.submit(sum, [1, 2, 3]) == 6
                    total = await c.gather(c.map(lambda x: x * 2, range(10)))
                    assert sum(total) == 90
            finally:
                await tunnel.close()

            facts = await provider.heartbeat("e2e", seen[-1], ttl=600)
            assert facts is not None
            lease = provider.k8s_sync("coord", "read_namespaced_lease", M.HEARTBEAT_LEASE, ns)
            assert lease.spec.lease_duration_seconds == 600 and lease.spec.renew_time is not None
            await provider.heartbeat("e2e", seen[-1], ttl=600)  # renews the existing lease
            assert lease.spec.holder_identity == f"reccd/{USER}/d1desktop"
            assert await provider.list_owned() == []  # a fresh Lease protects, even our own

            # an expired token is refreshed, not surfaced
            servers["fake"].expire_tokens()
            await asyncio.sleep(1.1)  # X-Amz-Date has whole seconds
            status = await provider.status(["e2e"], [seen[-1]])
            assert status[0].alive and status[0].workers_ready == 2 and status[0].nodes == 1
            logs = await provider.logs("e2e", seen[-1], tail=50)
            assert "scheduler" in logs and len(logs) == 3

            scaled = await provider.scale("e2e", 3, seen[-1])
            seen.append(scaled)
            assert scaled["spec"]["n_workers"] == 3 and scaled["groups"][0]["desired"] == 1
            assert await provider._joined(ns) == 3
            quota = provider.k8s_sync("core", "read_namespaced_resource_quota", M.QUOTA, ns)
            assert quota.spec.hard["pods"] == "4"
        finally:
            await provider.delete("e2e", seen[-1] if seen else None)
            await provider.delete("e2e", seen[-1] if seen else None)  # idempotent
            await provider.close()
            await other.close()

    asyncio.run(main())
    assert leftovers(servers, ns) == {"groups": [], "instances": [], "namespaces": [], "templates": []}


@pytest.mark.slow
def test_too_small_capacity_limit_is_a_clear_error_then_cleanup(aws_env, tmp_path):
    servers = aws_env
    # one 9 GiB worker per t3.xlarge: two workers need two nodes, the context allows one
    spec = resolve("small-cluster-small-workers", n_workers=2, instance_type="t3.xlarge",
                   worker_memory="9GiB", scheduler_cpu=0.5, scheduler_memory="1GiB")
    provider = EksProvider(tmp_path, context(servers, max_nodes=1, capacity_timeout=4, workers_timeout=6),
                           user=USER, poll=0.25)
    ns = M.namespace_name(USER, "small")

    async def main():
        last = None
        try:
            with pytest.raises(Exception) as err:
                async for cp in provider.create("small", spec, make_cluster_tls("small")):
                    last = cp
            return str(err.value)
        finally:
            await provider.delete("small", last)
            await provider.close()

    message = asyncio.run(main())
    assert "not ready" in message and "capacity: 1/2 instances" in message and "max_nodes=1" in message
    assert "Insufficient memory" in message and "workers joined" in message
    assert leftovers(servers, ns) == {"groups": [], "instances": [], "namespaces": [], "templates": []}


@pytest.mark.slow
def test_load_balancer_route(aws_env, tmp_path):
    servers = aws_env
    spec = resolve("small-cluster-small-workers", n_workers=1, instance_type="t3.xlarge",
                   worker_memory="1GiB", scheduler_cpu=0.5, scheduler_memory="1GiB")
    tls = make_cluster_tls("lb")
    provider = EksProvider(tmp_path, context(servers, route="loadbalancer"), user=USER, poll=0.25)

    async def main():
        last = None
        try:
            async for cp in provider.create("lb", spec, tls):
                last = cp
            endpoint = provider.endpoints("lb", last).scheduler
            assert endpoint.host == "127.0.0.1" and not hasattr(endpoint, "open_connection")

            async def resolve_():
                return endpoint

            tunnel = Tunnel(resolve_)
            port = await tunnel.start()
            try:
                from distributed import Client

                async with Client(f"tls://127.0.0.1:{port}", security=client_security(tls), asynchronous=True,
                                  direct_to_workers=False, timeout=60) as c:
                    await c.wait_for_workers(1, timeout=30)
                    assert await c.submit(sum, [4, 5]) == 9
            finally:
                await tunnel.close()
        finally:
            await provider.delete("lb", last)
            await provider.close()

    asyncio.run(main())
    assert leftovers(servers, M.namespace_name(USER, "lb")) == {"groups": [], "instances": [], "namespaces": [],
                                                                "templates": []}
