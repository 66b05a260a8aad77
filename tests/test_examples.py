"""The three examples at their small size: serial == local RSHClient == RECC local-provider cluster."""

from __future__ import annotations

import pytest

from examples import by_date, combined, dataframe

pytestmark = pytest.mark.slow

WORKLOADS = (by_date, dataframe, combined)


@pytest.fixture
def datastore(tmp_path, monkeypatch):
    # no PYTHONPATH: RSHClient(source_paths=...) must bring `examples` to the scheduler and the workers
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.setenv("RECC_DATASTORE_LOCAL", str(tmp_path / "local"))
    monkeypatch.delenv("RECC_READ_DATASTORES", raising=False)
    monkeypatch.delenv("RECC_WRITE_DATASTORES", raising=False)
    return tmp_path / "local"


def test_examples_agree_serial_local_and_recc(datastore, daemon, monkeypatch, capsys):
    from examples._common import ROOT
    from recc import RSHClient

    serial = {w.NAME: w.serial("small") for w in WORKLOADS}
    with RSHClient(n_workers=2, processes=False, source_paths=[ROOT]) as client:
        local = {w.NAME: w.run(client, "small") for w in WORKLOADS}
    assert local == serial

    monkeypatch.setenv("RECC_CLUSTER", "local")
    with RSHClient(n_workers=2, source_paths=[ROOT]) as client:
        from recc import RECCCluster

        assert isinstance(client.cluster, RECCCluster)
        remote = {w.NAME: w.run(client, "small") for w in WORKLOADS}
    assert remote == serial


def test_example_main_prints_a_results_row_with_cost(datastore, daemon, monkeypatch, capsys):
    monkeypatch.setenv("RECC_CLUSTER", "local")
    assert combined.main(["--size", "small"]) == 0
    out = capsys.readouterr().out
    header, _, row = out.strip().splitlines()[-3:]
    assert "est. cost" in header and "speedup" in header
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == ["combined", "small", "recc:local"]
    assert cells[-1].startswith("$")
