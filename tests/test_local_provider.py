"""The provider contract, run against the local provider with real Dask processes.

``ProviderContract`` is the reusable part: a provider's test class subclasses it and
supplies ``make_provider`` (and, if it needs to, ``make_spec``, ``create_steps`` and
``assert_nothing_left``). Everything else is checked the same way for every provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import psutil
import pytest
from distributed import Client
from distributed.comm import connect

from recc.errors import ProviderError
from recc.harvest import IdleFacts
from recc.spec import ClusterSpec
from reccd import procs
from reccd.providers import Checkpoint, Provider
from reccd.providers.local import LocalProvider
from reccd.tls import client_security, make_cluster_tls


def contains(later: Any, earlier: Any) -> bool:
    """``later`` has everything ``earlier`` has (dicts may have grown)."""
    if isinstance(earlier, dict):
        return isinstance(later, dict) and all(k in later and contains(later[k], v) for k, v in earlier.items())
    return later == earlier


class FailsAtStep:
    """Consume ``create`` only up to step ``n`` (0 = not at all), as a daemon that crashed right
    after journaling step ``n`` would have; ``last`` is what the journal would hold."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen: list[Checkpoint] = []

    @property
    def last(self) -> Checkpoint | None:
        return self.seen[-1] if self.seen else None

    async def run(self, provider: Provider, name: str, spec: ClusterSpec, tls) -> None:
        steps = provider.create(name, spec, tls)
        try:
            while len(self.seen) < self.n:
                self.seen.append(await steps.__anext__())
        finally:
            await steps.aclose()


class ProviderContract:
    """What every provider must do. Subclasses set ``create_steps`` and implement ``make_provider``."""

    create_steps: ClassVar[int]

    def make_provider(self, tmp_path: Path) -> Provider:
        raise NotImplementedError

    def make_spec(self, n_workers: int) -> ClusterSpec:
        return ClusterSpec(n_workers=n_workers, worker_memory="1GiB")

    async def assert_nothing_left(self, provider: Provider, name: str, seen: list[Checkpoint]) -> None:
        assert name not in await provider.list_owned()
        if seen:
            [st] = await provider.status([name], [seen[-1]])
            assert not st.alive and st.workers_ready == 0

    def pytest_generate_tests(self, metafunc):
        if "step" in metafunc.fixturenames:
            # losing a step's checkpoint needs a step: that test starts at 1
            first = 1 if metafunc.function.__name__ == "test_delete_from_the_previous_checkpoint" else 0
            metafunc.parametrize("step", range(first, self.create_steps + 1))

    @pytest.fixture
    def provider(self, tmp_path):
        return self.make_provider(tmp_path)

    @contextlib.asynccontextmanager
    async def cluster(self, provider: Provider, name: str, n_workers: int, tls=None):
        """Create a cluster; always delete it from the last checkpoint seen."""
        tls = tls or make_cluster_tls(name)
        seen: list[Checkpoint] = []
        try:
            async for cp in provider.create(name, self.make_spec(n_workers), tls):
                seen.append(cp)
            yield seen, tls
        finally:
            await provider.delete(name, seen[-1] if seen else None)

    def address(self, provider: Provider, name: str, last: Checkpoint) -> str:
        ep = provider.endpoints(name, last).scheduler
        return f"tls://{ep.host}:{ep.port}"

    async def scheduler_workers(self, client: Client) -> int:
        return len((await client.scheduler.identity())["workers"])

    # ------------------------------------------------------------------ tests

    @pytest.mark.slow
    async def test_create_compute_observe_scale_delete(self, provider):
        """One two-worker cluster for what used to be two tests (create, compute, observe, delete; and scale
        up and down): every check of both, one cluster start (and, with spares, one pool) instead of two."""
        t0 = time.monotonic()
        async with self.cluster(provider, "c1", 2) as (seen, tls):
            elapsed = time.monotonic() - t0
            assert len(seen) == self.create_steps
            for earlier, later in zip(seen, seen[1:]):
                assert contains(later, earlier) and later != earlier
            for cp in seen:
                assert json.loads(json.dumps(cp)) == cp  # journalable
            last = seen[-1]
            async with Client(self.address(provider, "c1", last), security=client_security(tls),
                              asynchronous=True, timeout=20) as client:
                assert await client.submit(sum, range(10)) == 45
                assert await self.scheduler_workers(client) == 2
            [st] = await provider.status(["c1"], [last])
            assert (st.alive, st.workers_ready, st.workers_desired, st.nodes) == (True, 2, 2, 1)
            assert "c1" in await provider.list_owned()
            logs = await provider.logs("c1", last)
            assert any("Scheduler at" in line for line in logs["scheduler"])
            tail = await provider.logs("c1", last, tail=3)
            assert set(tail) == {"scheduler", "worker-0", "worker-1"}
            assert len(tail["scheduler"]) == 3
            print(f"create with 2 workers took {elapsed:.1f} s")

            # scale up and down, seen by the scheduler
            async with Client(self.address(provider, "c1", seen[-1]), security=client_security(tls),
                              asynchronous=True, timeout=20) as client:
                last = await provider.scale("c1", 3, seen[-1])
                seen.append(last)
                assert await self.scheduler_workers(client) == 3
                last = await provider.scale("c1", 1, last)
                seen.append(last)
                assert await self.scheduler_workers(client) == 1
                assert await client.submit(sum, range(4)) == 6
                [st] = await provider.status(["c1"], [last])
                assert (st.workers_ready, st.workers_desired) == (1, 1)
                assert await provider.scale("c1", 1, last) == last  # converged: nothing to do

            # the nanny forks its worker (no second import of distributed): the worker is the cluster's by its
            # mark and shows the nanny's command line, not multiprocessing's spawn
            nanny = psutil.Process(last["workers"][0]["pid"])
            [worker] = nanny.children()
            assert procs.mark_of(worker) == procs.mark_of(nanny) == provider._mark("c1", "worker-0")
            assert worker.cmdline() == nanny.cmdline()
            # and it does not keep the nanny's signal handlers, which would swallow a delete's SIGTERM
            worker.terminate()
            assert psutil.wait_procs([worker], timeout=5)[1] == [], "the forked worker ignored SIGTERM"
        await self.assert_nothing_left(provider, "c1", seen)
        await provider.delete("c1", seen[-1])  # idempotent
        await provider.delete("c1", None)
        assert await provider.logs("c1", seen[-1]) == {}

    @pytest.mark.slow
    async def test_heartbeat_returns_idle_facts_and_refuses_plaintext_and_foreign_certificates(self, provider):
        """One scheduler-only cluster for what used to be two tests (its heartbeat's idle facts, first, as on a
        fresh cluster; then who may connect): one cluster start (and, with spares, one pool) instead of two."""
        async with self.cluster(provider, "c2", 0) as (seen, tls):
            facts = await provider.heartbeat("c2", seen[-1], 60.0)
            assert isinstance(facts, IdleFacts) and (facts.clients, facts.last_client_left) == (0, None)
            assert facts.started_at <= facts.last_activity <= facts.observed_at

            address = self.address(provider, "c2", seen[-1])
            comm = await connect(address, timeout=10, **client_security(tls).get_connection_args("client"))
            await comm.close()  # the control: our own certificate is accepted
            with pytest.raises(OSError):
                await connect(address.replace("tls://", "tcp://"), timeout=1.5)
            foreign = client_security(make_cluster_tls("c2"))  # same name, another CA
            with pytest.raises(OSError):
                await connect(address, timeout=1.5, **foreign.get_connection_args("client"))
            no_cert = ssl.create_default_context(cadata=tls.ca_cert)  # trusts the CA, shows no certificate
            no_cert.check_hostname = False
            with pytest.raises(OSError):
                comm = await connect(address, timeout=1.5, ssl_context=no_cert)
                await comm.read()  # TLS 1.3: the server's refusal may arrive after the handshake

    @pytest.mark.slow
    async def test_fails_at_step(self, provider, step):
        """Stopped after step n, delete gets step n's checkpoint and leaves nothing behind."""
        failing = FailsAtStep(step)
        try:
            await failing.run(provider, "c4", self.make_spec(1), make_cluster_tls("c4"))
        finally:
            await provider.delete("c4", failing.last)
        assert len(failing.seen) == step
        await self.assert_nothing_left(provider, "c4", failing.seen)

    @pytest.mark.slow
    async def test_delete_from_the_previous_checkpoint(self, provider, step):
        """Step n happened but its checkpoint was never journaled: delete gets step n-1's."""
        failing = FailsAtStep(step)
        try:
            await failing.run(provider, "c5", self.make_spec(1), make_cluster_tls("c5"))
        finally:
            await provider.delete("c5", failing.seen[-2] if len(failing.seen) > 1 else None)
        await self.assert_nothing_left(provider, "c5", failing.seen)

    @pytest.mark.slow
    @pytest.mark.parametrize("after, delay", [(0, 0.0), (2, 0.2), (4, 0.3)])
    async def test_delete_after_a_step_is_cancelled_midway(self, provider, after, delay):
        """A step interrupted half-way (its side effect may exist, its checkpoint does not)."""
        seen: list[Checkpoint] = []
        steps = provider.create("c6", self.make_spec(2), make_cluster_tls("c6"))
        try:
            while len(seen) < after:
                seen.append(await steps.__anext__())
            task = asyncio.ensure_future(steps.__anext__())
            await asyncio.sleep(delay)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                seen.append(await task)
        finally:
            await steps.aclose()
            await provider.delete("c6", seen[-1] if seen else None)
        await self.assert_nothing_left(provider, "c6", seen)

    async def test_delete_of_nothing(self, provider):
        await provider.delete("never-made", None)
        await provider.delete("never-made", {})
        [st] = await provider.status(["never-made"], [{}])
        assert (st.name, st.alive, st.workers_ready, st.workers_desired) == ("never-made", False, 0, 0)
        assert "never-made" not in await provider.list_owned()


class TestLocalProvider(ProviderContract):
    create_steps = 5

    def make_provider(self, tmp_path: Path) -> LocalProvider:
        return LocalProvider(tmp_path / "clusters")

    async def assert_nothing_left(self, provider, name, seen):
        await super().assert_nothing_left(provider, name, seen)
        pids = set()
        for cp in seen:
            pids.update(r["pid"] for r in [cp.get("scheduler"), *cp.get("workers", [])] if r)
        assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        mark = str(provider.workdir / name)
        assert procs.find_marked(lambda m: procs.selects(mark, m)) == []
        assert not (provider.workdir / name).exists()

    @pytest.mark.slow
    async def test_checkpoint_shapes_and_modes(self, provider):
        async with self.cluster(provider, "c7", 1) as (seen, tls):
            assert seen[0] == {"dir": str(provider.workdir / "c7"), "tls": True, "launch": seen[0]["launch"]}
            assert set(seen[1]["scheduler"]) == {"pid", "pgid", "create_time"}
            [w] = seen[2]["workers"]  # workers start beside the scheduler (they read its scheduler file)
            assert "address" not in seen[2]["scheduler"]
            assert {"address", "port", "dashboard_port"} <= set(seen[3]["scheduler"])
            assert (w["id"], w["name"]) == (0, "c7-w0") and w["pgid"] == w["pid"]
            assert seen[4]["ready"] is True
            assert os.getpgid(seen[1]["scheduler"]["pid"]) == seen[1]["scheduler"]["pid"]  # own session
            assert os.getsid(w["pid"]) == w["pid"]
            folder = provider.workdir / "c7"
            assert stat.S_IMODE(provider.workdir.stat().st_mode) == 0o700
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700
            for f in ("scheduler-key.pem", "worker-key.pem", "scheduler.log", "worker-0.log"):
                assert stat.S_IMODE((folder / f).stat().st_mode) == 0o600, f
            ep = provider.endpoints("c7", seen[-1])
            assert ep.scheduler.host == "127.0.0.1" and ep.dashboard.port == seen[-1]["scheduler"]["dashboard_port"]
            # The nanny's worker process is in the nanny's process group, so killpg reaches it.
            kids = psutil.Process(w["pid"]).children(recursive=True)
            assert kids and all(os.getpgid(k.pid) == w["pid"] for k in kids)

    @pytest.mark.slow
    async def test_start_timeout_names_the_log(self, tmp_path):
        provider = LocalProvider(tmp_path / "clusters", start_timeout=0.01)
        seen: list[Checkpoint] = []
        try:
            with pytest.raises(ProviderError, match="scheduler.log"):
                async for cp in provider.create("c8", self.make_spec(1), make_cluster_tls("c8")):
                    seen.append(cp)
        finally:
            await provider.delete("c8", seen[-1] if seen else None)
        assert len(seen) == 3  # the scheduler's and the workers' pids were journaled before the wait
        await self.assert_nothing_left(provider, "c8", seen)

    async def test_delete_spares_a_reused_pid(self, provider):
        """A checkpoint pid that now belongs to someone else's process is never signalled."""
        stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        try:
            record = {"pid": stranger.pid, "pgid": stranger.pid,
                      "create_time": psutil.Process(stranger.pid).create_time()}
            await provider.delete("c9", {"dir": str(provider.workdir / "c9"), "scheduler": record,
                                         "workers": [{"id": 0, **record}]})
            [st] = await provider.status(["c9"], [{"scheduler": record}])
            assert stranger.poll() is None and not st.alive
        finally:
            stranger.send_signal(signal.SIGKILL)
            stranger.wait()

    @pytest.mark.slow
    async def test_worker_that_dies_is_reported_with_its_log(self, provider):
        async with self.cluster(provider, "c10", 0) as (seen, tls):
            broken = {**seen[-1], "launch": {**seen[-1]["launch"], "memory_limit": "not-a-size"}}
            with pytest.raises(ProviderError, match=r"c10-w0 exited .*worker-0\.log") as failed:
                await provider.scale("c10", 1, broken)
            assert "Last lines" in failed.value.message
