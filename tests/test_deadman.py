"""The cluster-side dead-man switch and idle facts (recc.deadman), with real Dask processes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import psutil
import pytest
from distributed import Client

from recc import deadman
from recc.errors import ProviderError
from recc.harvest import IdleFacts
from recc.spec import ClusterSpec
from reccd import procs
from reccd.providers import Checkpoint
from reccd.providers.local import LocalProvider
from reccd.tls import client_security, make_cluster_tls


# ---------------------------------------------------------------------- pure parts


@pytest.mark.parametrize("client_id, counted", [
    ("Client-3f1c-11ef", True),
    ("Client-notebook-3f1c-11ef", True),
    ("RSHClient-3f1c-11ef", True),
    ("Client-recc-daemon-3f1c-11ef", False),        # Client(name="recc-daemon")
    ("RSHClient-recc-daemon-7-3f1c-11ef", False),  # a subclass, a longer name
    ("recc-daemon", False),
    ("fire-and-forget", False),                    # the scheduler's own
    ("Client-worker-3f1c-11ef", False),             # get_client() inside a task
    ("Client-recc-daemo-3f1c", True),
])
def test_which_clients_count(client_id, counted):
    assert deadman.is_user_client(client_id, "recc-daemon") is counted


def test_settings_from_env():
    assert deadman.settings_from_env({"RECC_HEARTBEAT_TTL": "3.5"}) == (3.5, "recc-daemon")
    assert deadman.settings_from_env({"RECC_HEARTBEAT_TTL": "60", "RECC_DAEMON_CLIENT_PREFIX": "me"}) == (60.0, "me")
    for bad in ({}, {"RECC_HEARTBEAT_TTL": "soon"}, {"RECC_HEARTBEAT_TTL": "-1"}, {"RECC_HEARTBEAT_TTL": "nan"}):
        assert deadman.settings_from_env(bad)[0] == deadman.DEFAULT_TTL  # never off
    with pytest.raises(ValueError):
        deadman.DeadManSwitch(0)


# ---------------------------------------------------------------------- real clusters


@contextlib.asynccontextmanager
async def local_cluster(tmp_path: Path, name: str, *, n_workers: int, ttl: float, keep_alive: bool = False,
                        beat_while_creating: bool = False):
    """A local cluster; with ``keep_alive`` it is heartbeated (every ttl/3 s) from the moment its
    scheduler has an address, as the daemon does, so a short TTL cannot expire during create; with
    ``beat_while_creating`` only until create is done (its switch then runs out one TTL after that at most)."""
    provider = LocalProvider(tmp_path / "clusters")
    tls = make_cluster_tls(name)
    seen: list[Checkpoint] = []
    beats: list[IdleFacts] = []

    async def beat() -> None:
        while True:
            beats.append(await provider.heartbeat(name, seen[-1], ttl))
            await asyncio.sleep(ttl / 3)

    task = None
    try:
        async for cp in provider.create(name, ClusterSpec(n_workers=n_workers, worker_memory="1GiB",
                                                          heartbeat_ttl=ttl), tls):
            seen.append(cp)
            if (keep_alive or beat_while_creating) and task is None and "address" in cp.get("scheduler", {}):
                task = asyncio.ensure_future(beat())
        if beat_while_creating and task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        yield provider, seen, tls, beats
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await provider.delete(name, seen[-1] if seen else None)


def cluster_pids(provider: LocalProvider, name: str) -> set[int]:
    """Every live process carrying the cluster's mark (scheduler, nannies, worker processes)."""
    mark = str(provider.workdir / name)
    return {p.pid for p, _ in procs.find_marked(lambda m: procs.selects(mark, m))}


def alive(pids: set[int]) -> set[int]:
    live = set()
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                live.add(pid)
    return live


def address(provider: LocalProvider, name: str, last: Checkpoint) -> str:
    ep = provider.endpoints(name, last).scheduler
    return f"tls://{ep.host}:{ep.port}"


@pytest.mark.slow
async def test_without_heartbeats_every_process_exits_after_the_ttl(tmp_path):
    ttl = 3.0
    # heartbeats while it is created (as the daemon does), none after: without them a start slower than the TTL
    # (a loaded machine) shut the scheduler down before its worker arrived, and create failed
    async with local_cluster(tmp_path, "dm1", n_workers=1, ttl=ttl, beat_while_creating=True) as (provider, seen,
                                                                                                  tls, _):
        ready = time.monotonic()  # the last heartbeat renewed the switch before the cluster was ready
        last = seen[-1]
        pids = cluster_pids(provider, "dm1")
        nanny = last["workers"][0]["pid"]
        assert {last["scheduler"]["pid"], nanny} <= pids
        assert psutil.Process(nanny).children()  # the nanny's worker process
        facts = IdleFacts.from_dict(await provider._call(last, "recc_idle_facts"))  # does not renew
        assert facts.clients == 0 and facts.started_at <= facts.observed_at

        while alive(pids) or cluster_pids(provider, "dm1"):
            assert time.monotonic() < ready + ttl + 10, f"still running: {alive(pids) | cluster_pids(provider, 'dm1')}"
            await asyncio.sleep(0.2)
        took = time.monotonic() - ready
        print(f"{len(pids)} processes gone {took:.1f} s after the cluster was ready (ttl {ttl:g} s)")

        [st] = await provider.status(["dm1"], [last])
        assert not st.alive and st.detail["worker_processes"] == 0
        logs = await provider.logs("dm1", last)
        assert any("no heartbeat from the RECC daemon" in line and "shutting the cluster down" in line
                   for line in logs["scheduler"])
        assert any("End worker" in line for line in logs["worker-0"])  # exited, not killed
        started = time.monotonic()
        with pytest.raises(ProviderError, match="scheduler process is gone"):
            await provider.heartbeat("dm1", last, ttl, timeout=5.0)
        assert time.monotonic() - started < 2.5, "a heartbeat to a dead scheduler waited out its timeout"


@pytest.mark.slow
async def test_heartbeats_keep_the_cluster_alive_and_report_idle_facts(tmp_path):
    """One cluster serves two checks: while heartbeats keep it alive for three TTLs, its idle facts are
    checked (a few seconds of checks that need a live cluster, not a cluster start of their own)."""
    ttl = 3.0
    async with local_cluster(tmp_path, "dm2", n_workers=1, ttl=ttl, keep_alive=True) as (provider, seen, tls, beats):
        pids = cluster_pids(provider, "dm2")
        ready = time.monotonic()
        await check_idle_facts(provider, "dm2", seen[-1], tls, ttl)  # a few seconds, inside the three TTLs
        await asyncio.sleep(max(0.0, ready + 3 * ttl - time.monotonic()))
        assert alive(pids) == pids
        assert len(beats) >= 8
        async with Client(address(provider, "dm2", seen[-1]), security=client_security(tls),
                          asynchronous=True, timeout=20) as client:
            assert await client.submit(sum, range(10)) == 45


async def check_idle_facts(provider: LocalProvider, name: str, last: Checkpoint, tls, ttl: float) -> None:
    """The idle facts a heartbeat returns, on a cluster no user client has connected to yet. Its heartbeats
    renew with the cluster's own ``ttl``, so they keep it alive no longer than the background beats do."""
    facts = await provider.heartbeat(name, last, ttl)
    assert (facts.clients, facts.last_client_left) == (0, None)
    assert facts.started_at <= facts.last_activity <= facts.observed_at <= time.time()

    security = client_security(tls)
    async with Client(address(provider, name, last), security=security, asynchronous=True,
                      timeout=20, name="recc-daemon") as own:
        assert own.id.startswith("Client-recc-daemon-")
        assert (await provider.heartbeat(name, last, ttl)).clients == 0  # the daemon's own

        submitted = time.time()
        async with Client(address(provider, name, last), security=security, asynchronous=True,
                          timeout=20, name="notebook") as client:
            assert await client.submit(sum, range(10)) == 45
            # A task that opens a client on its worker: that client is no user either.
            # (A lambda: cloudpickle sends it by value; the workers cannot import the tests.)
            worker_client_id = lambda: __import__("distributed").get_client().id  # noqa: E731
            assert (await client.submit(worker_client_id, pure=False)).startswith("Client-worker-")
            facts = await provider.heartbeat(name, last, ttl)
            assert facts.clients == 1 and facts.last_client_left is None
            assert submitted - 0.01 <= facts.last_activity <= facts.observed_at
            # Idle with a client connected: heartbeats and queries are no activity.
            await asyncio.sleep(1.0)  # let the released results be forgotten
            quiet = await provider.heartbeat(name, last, ttl)
            await asyncio.sleep(1.5)
            still = await provider.heartbeat(name, last, ttl)
            assert still.last_activity == quiet.last_activity >= facts.last_activity
            assert still.clients == 1
            left = time.time()

        deadline = time.monotonic() + 10
        while (facts := await provider.heartbeat(name, last, ttl)).clients:
            assert time.monotonic() < deadline, facts
            await asyncio.sleep(0.2)
        assert facts.last_client_left is not None and left - 0.01 <= facts.last_client_left <= facts.observed_at
