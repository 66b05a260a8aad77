"""The in-cluster reaper, run as its CronJob runs it (`recc harvest --provider eks`), against moto and
the fake Kubernetes API: a cluster whose daemon froze is removed completely, a busy one is kept, an
idle one is removed with its reason recorded."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from kubernetes import client as k8s

from recc import manifests as M
from recc.templates import resolve
from reccd.contexts import Context
from reccd.providers.eks import EksProvider
from reccd.tls import client_security, make_cluster_tls
from reccd.tunnel import Tunnel
from tests.eks_env import create_lease, read_lease
from tests.opsenv import NOTHING, ROOT, USER, context_settings, kube, leftovers, recc, setup_aws, use_aws, write_config
from tests.servers import moto_and_kube

# The busy cluster's idle_timeout (seconds): short, so that it had been idle longer than that when the reaper
# first judges it (its running task is what keeps it), and so that the test waits little for it to go idle after.
BUSY_IDLE = 3
# The frozen cluster's Lease TTL (seconds): the renewer renews it every 0.2 s until it is frozen.
FROZEN_TTL = 2

# A stand-in for the daemon's heartbeat: renews the Lease every 0.2 s until it is frozen (SIGSTOP).
RENEWER = r"""
import sys, time
from datetime import datetime, timezone
import boto3
from kubernetes import client as k8s
from tests.fakekube import make_token
url, ns, ttl = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = k8s.Configuration(host=url)
cfg.api_key = {"authorization": "Bearer " + make_token("research-eks", boto3.Session(region_name="us-east-1",
               aws_access_key_id="testing", aws_secret_access_key="testing"))}
api = k8s.CoordinationV1Api(k8s.ApiClient(cfg))
first = True
while True:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    api.patch_namespaced_lease("recc-heartbeat", ns, {"spec": {"renewTime": now, "leaseDurationSeconds": ttl}})
    if first:
        print("renewing", flush=True)
        first = False
    time.sleep(0.2)
"""


@pytest.fixture(scope="module", autouse=True)
def servers():
    with moto_and_kube("research-eks", "us-east-1") as (moto_url, fake, url):
        yield {"moto_url": moto_url, "fake": fake, "url": url, **setup_aws(moto_url)}


def test_print_cronjob_objects(servers, monkeypatch, tmp_path):
    use_aws(monkeypatch, servers["moto_url"], tmp_path)
    write_config(tmp_path / "config", "test", context_settings(servers["url"], servers, profile="research"))
    out = recc("harvest", "--print-cronjob", "--context", "test", "--image", "example/recc:1",
               "--role-arn", "arn:aws:iam::123456789012:role/recc-reaper").stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert [d["kind"] for d in docs] == ["Namespace", "ServiceAccount", "ConfigMap", "CronJob"]
    assert {d["metadata"].get("namespace", d["metadata"]["name"]) for d in docs} == {"recc-system"}
    sa = docs[1]
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == "arn:aws:iam::123456789012:role/recc-reaper"
    settings = yaml.safe_load(docs[2]["data"]["config.yaml"])["contexts"]["test"]
    assert settings["eks_cluster"] == "research-eks" and "profile" not in settings
    assert "kubernetes_api_url" not in settings  # in the cluster: DescribeCluster's endpoint
    job = docs[3]["spec"]
    pod = job["jobTemplate"]["spec"]["template"]["spec"]
    assert job["concurrencyPolicy"] == "Forbid" and pod["serviceAccountName"] == "recc-reaper"
    assert pod["containers"][0]["command"] == ["recc", "harvest", "--provider", "eks", "--context", "test", "--json"]
    # without a role: a Pod Identity association, said how
    out = recc("harvest", "--print-cronjob", "--context", "test", "--image", "example/recc:1").stdout
    assert "create-pod-identity-association" in out and "eks.amazonaws.com/role-arn" not in out
    # no image: a clear error, not a broken manifest
    done = recc("harvest", "--print-cronjob", "--context", "test", check=False)
    assert done.returncode == 1 and "--image" in done.stderr


@pytest.mark.slow
def test_reaper_removes_frozen_and_idle_keeps_busy(servers, monkeypatch, tmp_path):
    use_aws(monkeypatch, servers["moto_url"], tmp_path)
    url = servers["url"]
    settings = context_settings(url, servers)
    ctx = Context.from_dict("test", settings)
    # The reaper's own objects, as `kubectl apply` of --print-cronjob would make them (the fake has no CronJobs).
    write_config(tmp_path / "config", "test", settings)
    docs = [d for d in yaml.safe_load_all(recc("harvest", "--print-cronjob", "--context", "test",
                                                  "--image", "example/recc:1").stdout) if d]
    with kube(url) as c:
        core = k8s.CoreV1Api(c)
        core.create_namespace(docs[0])
        core.create_namespaced_config_map("recc-system", docs[2])
    # The pod's config.yaml is the ConfigMap's; here it also names the fake API server.
    reaper_settings = yaml.safe_load(docs[2]["data"]["config.yaml"])["contexts"]["test"]
    write_config(tmp_path / "config", "test", {**reaper_settings, "kubernetes_api_url": url})

    frozen_spec = resolve("small-cluster-small-workers", n_workers=1, instance_type="t3.xlarge",
                          worker_memory="1GiB", scheduler_cpu=0.5, scheduler_memory="1GiB")
    busy_spec = resolve("small-cluster-small-workers", n_workers=1, instance_type="t3.xlarge", worker_memory="1GiB",
                        scheduler_cpu=0.5, scheduler_memory="1GiB", idle_timeout=BUSY_IDLE, no_client_timeout=None,
                        heartbeat_ttl=600)
    frozen_ns, busy_ns = M.namespace_name(USER, "frozen"), M.namespace_name(USER, "busy")
    provider = EksProvider(tmp_path / "work", ctx, user=USER, poll=0.25)
    tls = make_cluster_tls("busy")
    renewer = None

    async def make(name, spec, upto):
        last = None
        steps = provider.create(name, spec, make_cluster_tls(name) if name != "busy" else tls)
        async for cp in steps:
            last = cp
            if upto in cp:
                break
        await steps.aclose()
        return last

    def reap():
        return {r["namespace"]: r for r in json.loads(
            recc("harvest", "--provider", "eks", "--context", "test", "--json").stdout)}

    async def busy_while(last, fn):
        """Run ``fn`` (in a thread) while a client's task runs on the cluster, then cancel the task."""
        endpoints = provider.endpoints("busy", last)

        async def resolve_():
            return endpoints.scheduler

        tunnel = Tunnel(resolve_)
        port = await tunnel.start()
        try:
            from distributed import Client

            async with Client(f"tls://127.0.0.1:{port}", security=client_security(tls), asynchronous=True,
                              direct_to_workers=False, timeout=60) as c:
                task = c.submit(time.sleep, 3600, pure=False)
                while not any((await c.processing()).values()):
                    await asyncio.sleep(0.2)
                try:
                    return await asyncio.to_thread(fn)
                finally:
                    await c.cancel(task)
        finally:
            await tunnel.close()

    try:
        _, busy = asyncio.run(closing(provider, make("frozen", frozen_spec, "service"), make("busy", busy_spec, "ready")))
        # The frozen cluster's "daemon": renews a short Lease, then is frozen.
        create_lease(url, M.Names(USER, "frozen"), "reccd/arathe", FROZEN_TTL)
        renewer = subprocess.Popen([sys.executable, "-c", RENEWER, url, frozen_ns, str(FROZEN_TTL)], cwd=ROOT,
                                   stdout=subprocess.PIPE, text=True)
        assert renewer.stdout.readline().strip() == "renewing"
        os.kill(renewer.pid, signal.SIGSTOP)
        # every renewTime it wrote is from before this moment, so its Lease has expired FROZEN_TTL s after it
        frozen_expired = time.monotonic() + FROZEN_TTL + 0.2

        def reap_once_expired():
            time.sleep(max(0.0, frozen_expired - time.monotonic()))
            return reap()

        # The busy cluster: its daemon heartbeats (a fresh Lease) and a client's task is running (the client
        # connects while the frozen Lease expires).
        asyncio.run(closing(provider, provider.heartbeat("busy", busy, ttl=600)))
        results = asyncio.run(closing(provider, busy_while(busy, reap_once_expired)))[0]
        assert results[frozen_ns]["deleted"] and "heartbeat Lease expired" in results[frozen_ns]["reason"]
        assert results[busy_ns]["action"] == "keep" and not results[busy_ns]["deleted"], results[busy_ns]
        assert leftovers(servers["moto_url"], url, frozen_ns) == NOTHING
        assert leftovers(servers["moto_url"], url, busy_ns)["namespaces"] == [busy_ns]

        # Idle past idle_timeout, its daemon still heartbeating: removed, and the reason is on record.
        # Wait until the scheduler itself says it has been idle longer than that (its daemon's heartbeats
        # bring its idle facts), rather than for a fixed time after the task was cancelled.
        deadline = time.monotonic() + 120
        while True:
            facts = asyncio.run(closing(provider, provider.heartbeat("busy", busy, ttl=600)))[0]
            idle = facts.observed_at - facts.last_activity
            if idle > BUSY_IDLE + 1:
                break
            assert time.monotonic() < deadline, f"the busy cluster never went idle ({facts})"
            time.sleep(max(0.1, min(1.0, BUSY_IDLE + 1 - idle)))
        results = reap()
        assert results[busy_ns]["deleted"], results[busy_ns]
        assert "no task activity" in results[busy_ns]["reason"], results[busy_ns]
        assert f"idle_timeout {BUSY_IDLE}s" in results[busy_ns]["reason"], results[busy_ns]
        assert leftovers(servers["moto_url"], url, busy_ns) == NOTHING
        with kube(url) as c:
            events = k8s.CoreV1Api(c).list_namespaced_event("recc-system").items
        recorded = {e.involved_object.name: (e.reason, e.message) for e in events}
        assert recorded[busy_ns][0] == "Harvested" and "no task activity" in recorded[busy_ns][1]
        assert "heartbeat Lease expired" in recorded[frozen_ns][1]
    finally:
        if renewer is not None:
            renewer.kill()
            renewer.wait()

        async def cleanup():
            for name in ("frozen", "busy"):
                await provider.delete(name, None)
            await provider.close()

        asyncio.run(cleanup())
        with kube(url) as c:
            k8s.CoreV1Api(c).delete_namespace("recc-system")


async def closing(provider, *steps):
    """Run ``steps`` together, then close the provider's tunnels and client (they belong to this loop)."""
    try:
        return await asyncio.gather(*steps)
    finally:
        await provider.close()


def _wait_status(client, names, status="running", timeout=240.0):
    deadline = time.monotonic() + timeout
    while True:
        seen = {n: client.get_cluster(n)["status"] for n in names}
        if set(seen.values()) == {status}:
            return
        assert "failed" not in seen.values() and time.monotonic() < deadline, seen
        time.sleep(0.5)


# The extended cluster's idle_timeout (seconds); its clock runs from its scheduler's start.
EXTENDED_IDLE = 10
# How long past its idle deadline (or past when it is asked, if later) the extension keeps it (seconds): the first
# reaper pass starts a second after that deadline (and 4 s after the daemon is frozen) and must have judged the
# cluster before the extension passes, even when its subprocess is slow (it took 4-6 s to judge on an idle machine,
# up to ~12 s on a loaded 2-core one). A robustness margin, not a speed check.
EXTENSION_PAST_IDLE = 30


@pytest.mark.slow
def test_reaper_through_a_frozen_daemon_and_an_extension(servers, recc_dirs):
    """A real daemon makes two clusters in context ``lab`` (not the default), is frozen with SIGSTOP, and
    the reaper runs as the CronJob would but without ``--context``: the cluster with a short Lease is
    removed completely; the idle one the user extended is kept until the extension passes."""
    from tests.eks_env import EMPTY, USER as ME, EksWorld, eks_daemon, leftovers as world_leftovers

    world = EksWorld(servers["moto_url"], servers["fake"], servers["url"], servers["role_arn"],
                     servers["template"])
    d = eks_daemon(world, recc_dirs, contexts={"lab": world.context()})  # no "adhoc": the default is absent
    client = d.client()
    small = {"template": "small-cluster-small-workers", "provider": "eks", "n_workers": 1, "context": "lab",
             "instance_type": "t3.xlarge", "worker_memory": "1GiB", "scheduler_cpu": 0.5,
             "scheduler_memory": "1GiB"}
    gone_ns, kept_ns = M.namespace_name(ME, "laptop-shut"), M.namespace_name(ME, "extended")
    stopped = False

    def reaper():
        done = subprocess.run([sys.executable, "-m", "recc.cli", "harvest", "--provider", "eks", "--json"],
                              env=d.env, capture_output=True, text=True, timeout=240, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        return {r["namespace"]: r for r in json.loads(done.stdout)}

    try:
        client.create_cluster(dict(small, heartbeat_ttl=3), "laptop-shut")
        made = time.time()  # before the extended cluster's scheduler starts, so before its idle clock does
        client.create_cluster(dict(small, heartbeat_ttl=600, idle_timeout=EXTENDED_IDLE, no_client_timeout=None,
                                   harvest_warning=1), "extended")
        # The user extends it at once, so that the daemon does not harvest it however long its making takes on a
        # loaded machine; up to a time that is surely before the extension below (extensions only push it later).
        client.extend("extended", (made + EXTENDED_IDLE + EXTENSION_PAST_IDLE - 1 - time.time()) / 60)
        _wait_status(client, ["laptop-shut", "extended"])
        deadline = time.monotonic() + 20
        while not (client.get_cluster("extended").get("harvest") or {}).get("deadline"):
            assert time.monotonic() < deadline, "the daemon never judged the cluster's idleness"
            time.sleep(0.2)
        idle = client.get_cluster("extended")["idle"]  # the scheduler's idle facts, in the daemon's clock
        idle_deadline = idle["last_activity"] + EXTENDED_IDLE
        asked = time.time()
        # keep it until EXTENSION_PAST_IDLE s past the idle deadline (fractional minutes): past the first reaper
        # pass even when the heartbeat, the sleep and that pass's start take long on a loaded machine
        minutes = (max(idle_deadline, asked) + EXTENSION_PAST_IDLE - asked) / 60
        client.extend("extended", minutes)
        deadline = time.monotonic() + 20  # the next heartbeat carries the extension to the Lease

        def extension_on_lease():
            value = (read_lease(servers["url"], kept_ns).metadata.annotations or {}).get(M.EXTENDED_ANNOTATION)
            # the daemon's own clock is read after `asked`; the first extension ends well before this one
            return float(value) if value is not None and float(value) > asked + minutes * 60 - 0.01 else None

        while extension_on_lease() is None:
            assert time.monotonic() < deadline, "the extension never reached the Lease"
            time.sleep(0.2)
        extended_until = extension_on_lease()
        assert asked + minutes * 60 - 1 < extended_until < time.time() + minutes * 60 + 1
        assert extended_until > idle_deadline + 2
        os.kill(d.proc.pid, signal.SIGSTOP)  # the laptop's lid closes
        stopped = True
        time.sleep(max(4.0, idle_deadline + 1 - time.time()))  # past the short Lease and the idle deadline

        results = reaper()
        assert results[gone_ns]["deleted"] and "heartbeat Lease expired" in results[gone_ns]["reason"], results
        assert results[gone_ns]["context"] == "lab"
        assert world_leftovers(world, gone_ns) == EMPTY
        assert results[kept_ns]["action"] == "keep" and not results[kept_ns]["deleted"], results[kept_ns]
        assert "extended" in results[kept_ns]["reason"], results[kept_ns]
        # it was judged past its idle deadline (so the extension is what kept it) and before the extension passed
        judged_at = extended_until - results[kept_ns]["seconds_left"]
        assert idle_deadline < judged_at < extended_until, (idle_deadline, judged_at, extended_until)
        assert world.namespaces(kept_ns) == [kept_ns]

        time.sleep(max(0.0, extended_until - time.time() + 0.5))
        results = reaper()
        assert results[kept_ns]["deleted"], results[kept_ns]
        assert "extended" in results[kept_ns]["reason"], results[kept_ns]
        assert world_leftovers(world, kept_ns) == EMPTY
    finally:
        if stopped:
            os.kill(d.proc.pid, signal.SIGCONT)
        print(d.log)  # shown when the test fails
        d.cleanup()
    assert world_leftovers(world) == EMPTY
