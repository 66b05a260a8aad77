"""The local provider's contract again, with warm spares (`reccd.providers.spares`) in use.

Every contract test (create, delete from any checkpoint, a crash at each step, scale) runs
with the scheduler and nannies taken from spares, and nothing may be left behind; the extra
tests check what a person sees: `ps` and the process marks name the cluster, and spares end
with the pool.
"""

from __future__ import annotations

import sys
import time

import psutil
import pytest

from reccd import procs
from reccd.providers.local import LocalProvider
from reccd.providers.spares import SPARES_DIR
from tests import test_local_provider as base

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="spares are Linux only")


def ready_spares(provider: LocalProvider, n: int, timeout: float = 60.0) -> None:
    folder = provider.workdir / SPARES_DIR
    deadline = time.monotonic() + timeout
    while len(list(folder.glob("*.ready"))) < n:
        assert time.monotonic() < deadline, "spares did not get ready"
        time.sleep(0.1)


class TestLocalProviderWithSpares(base.TestLocalProvider):
    def pytest_generate_tests(self, metafunc):
        if "step" in metafunc.fixturenames:
            # the steps where a spare becomes a cluster process (2: the scheduler, 4: the workers); the others
            # make no process, or only wait for one, exactly as without spares (tests/test_local_provider.py)
            metafunc.parametrize("step", [2, 4])

    @pytest.fixture
    def provider(self, tmp_path):
        provider = LocalProvider(tmp_path / "clusters")
        provider.keep_spares(2)
        ready_spares(provider, 3)
        yield provider
        assert provider._spares is not None
        provider._spares.close()

    @pytest.mark.slow
    async def test_claimed_spares_carry_the_cluster_mark_and_command_line(self, provider):
        spare_pids = {p.pid for p, _ in procs.find_marked(lambda m: procs.selects(str(provider.workdir / SPARES_DIR), m))}
        async with self.cluster(provider, "warm", 1) as (seen, tls):
            sched = seen[-1]["scheduler"]
            assert sched["pid"] in spare_pids  # it did come from a spare
            proc = psutil.Process(sched["pid"])
            assert procs.mark_of(proc) == f"{provider.workdir / 'warm'}{procs.SEP}scheduler"
            assert any("distributed.cli.dask_scheduler" in part for part in proc.cmdline())
            assert any(str(provider.workdir / "warm") in part for part in proc.cmdline())
            marked = procs.find_marked(lambda m: procs.selects(str(provider.workdir / "warm"), m))
            assert {sched["pid"], seen[-1]["workers"][0]["pid"]} <= {p.pid for p, _ in marked}

    @pytest.mark.slow
    async def test_unclaimed_spares_end_with_the_pool(self, provider):
        selector = str(provider.workdir / SPARES_DIR)
        assert len(procs.find_marked(lambda m: procs.selects(selector, m))) == 3
        assert await provider.list_owned() == []  # the spares are not a cluster
        await provider.close()
        assert procs.find_marked(lambda m: procs.selects(selector, m)) == []
        provider._spares = _Closed()  # the fixture's close has nothing left to do


class _Closed:
    def close(self) -> None:
        pass
