"""Datastore settings, contexts, shipping to workers, and sync, against moto in server mode on 127.0.0.1.

The moto server is session-scoped and requested by a module-scoped autouse fixture, so it is
listening before the first test's leak-check snapshot and is stopped after the last one.
(`tests/test_pandas_io.py` imports these fixtures, which gives that module its own server.)
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recc import datastore as ds
from tests.servers import moto_server

FOUR = ["LOCAL", "FP_LOCAL", "S3", "FP_S3"]
MIB = 2**20


@pytest.fixture(scope="session")
def s3_server():
    with moto_server() as url:
        yield url


@pytest.fixture(scope="module", autouse=True)
def _s3_server_first(s3_server):
    """Start the server before any test of the module takes its leak-check snapshot."""
    yield


def _clean_settings(monkeypatch, base: Path) -> None:
    for key in list(os.environ):
        if key.startswith(("RECC_DATASTORE_", "AWS_")) or key in (
                "RECC_READ_DATASTORES", "RECC_WRITE_DATASTORES", "RECC_CONTEXT", "RECC_JOB_ID"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("RECC_CONFIG_DIR", str(base / "config"))
    monkeypatch.setenv("RECC_DATA_DIR", str(base / "data"))
    ds.apply_datastore_config(None)
    ds.log_reads_to(None)


@pytest.fixture
def aws(monkeypatch, s3_server, tmp_path):
    """Fake credentials and the moto endpoint for this test (s3fs finds it through AWS_ENDPOINT_URL)."""
    _clean_settings(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    yield s3_server
    ds.apply_datastore_config(None)
    ds.log_reads_to(None)


def make_bucket() -> str:
    import boto3

    name = f"recc-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def stores(aws, monkeypatch, tmp_path):
    """All four datastores configured by environment only: two folders and two prefixes of a fresh bucket."""
    bucket = make_bucket()
    roots = {"LOCAL": str(tmp_path / "local"), "FP_LOCAL": str(tmp_path / "fp_local"),
             "S3": f"s3://{bucket}/s3", "FP_S3": f"s3://{bucket}/fp-s3"}
    for name, root in roots.items():
        monkeypatch.setenv(f"RECC_DATASTORE_{name}", root)
    return {"bucket": bucket, **roots}


def write_config(tmp_path: Path, text: str) -> None:
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "config" / "config.yaml").write_text(text)


# --- settings -----------------------------------------------------------------------------------

def test_four_stores_from_the_environment(stores) -> None:
    assert ds.get_read_datastore_names() == FOUR
    assert ds.get_write_datastore_names() == ["LOCAL"]
    assert ds.get_datastore("s3").url("a/b.csv") == f"{stores['S3']}/a/b.csv"


def test_defaults_when_nothing_is_set(monkeypatch, tmp_path) -> None:
    _clean_settings(monkeypatch, tmp_path)
    assert ds.get_read_datastore_names() == ["LOCAL"]
    assert ds.get_write_datastore_names() == ["LOCAL"]
    assert ds.get_datastore("LOCAL").root == str(tmp_path / "data" / "datastore")


def test_config_file_roots_by_context_and_env_override(monkeypatch, tmp_path) -> None:
    _clean_settings(monkeypatch, tmp_path)
    write_config(tmp_path, """
job_context: nightly
datastores:
  read: [FP_LOCAL, LOCAL]
  FP_LOCAL: {adhoc: /mnt/nfs/fp, nightly: /efs/fp}
  ARCHIVE: {root: s3://archive-bucket/x, options: {default_block_size: 5242880}}
""")
    assert ds.current_context() == "adhoc"
    assert ds.get_read_datastore_names() == ["FP_LOCAL", "LOCAL"]
    assert ds.get_datastore("FP_LOCAL").root == "/mnt/nfs/fp"
    assert ds.get_datastore("ARCHIVE").options == {"default_block_size": 5242880}
    monkeypatch.setenv("RECC_JOB_ID", "risk")
    assert ds.current_context() == "nightly" and ds.get_datastore("FP_LOCAL").root == "/efs/fp"
    monkeypatch.setenv("RECC_CONTEXT", "adhoc")
    monkeypatch.setenv("RECC_DATASTORE_FP_LOCAL", str(tmp_path / "mine"))
    assert ds.get_datastore("FP_LOCAL").root == str(tmp_path / "mine")
    monkeypatch.setenv("RECC_READ_DATASTORES", "LOCAL,ARCHIVE")
    assert ds.get_read_datastore_names() == ["LOCAL", "ARCHIVE"]


def test_unknown_names_are_errors_that_list_the_configured_ones(stores, monkeypatch) -> None:
    with pytest.raises(ds.UnknownDatastore) as err:
        ds.get_datastore("NOPE")
    assert "'NOPE'" in str(err.value) and "LOCAL, FP_LOCAL, S3, FP_S3" in str(err.value)
    monkeypatch.setenv("RECC_READ_DATASTORES", "LOCAL,MISSING")
    with pytest.raises(ds.UnknownDatastore, match="MISSING"):
        ds.get_read_datastore_names()


def test_shipped_configuration_replaces_the_local_one(stores, monkeypatch, tmp_path) -> None:
    shipped = ds.datastore_config()
    for name in FOUR:  # a worker started without any of the client's variables
        monkeypatch.delenv(f"RECC_DATASTORE_{name}")
    monkeypatch.setenv("RECC_DATA_DIR", str(tmp_path / "worker-data"))
    assert ds.get_read_datastore_names() == ["LOCAL"]
    ds.apply_datastore_config(shipped)
    assert ds.get_read_datastore_names() == FOUR
    assert ds.get_datastore("LOCAL").root == stores["LOCAL"]
    # another context on the worker: object-store roots still apply, the client's folders do not
    monkeypatch.setenv("RECC_CONTEXT", "pod")
    assert [n for n in FOUR if n in ds.datastore_config()["stores"]] == FOUR
    with pytest.raises(ds.UnknownDatastore, match="context 'pod'"):
        ds.get_datastore("FP_LOCAL")
    assert ds.get_datastore("S3").root == stores["S3"]


# --- sync ---------------------------------------------------------------------------------------

def test_sync_copies_only_what_changed_and_big_files_are_multipart(aws, monkeypatch, tmp_path, capsys) -> None:
    import boto3

    bucket = make_bucket()
    write_config(tmp_path, f"""
datastores:
  LOCAL: {tmp_path / 'local'}
  BACK: {tmp_path / 'back'}
  S3: {{root: s3://{bucket}/data, options: {{default_block_size: {5 * MIB}}}}}
""")
    demo = tmp_path / "local" / "demo"
    (demo / "sub").mkdir(parents=True)
    (demo / "small.csv").write_text("a,b\n1,2\n")
    (demo / "sub" / "big.bin").write_bytes(np.random.default_rng(0).bytes(12 * MIB))

    first = ds.sync("demo", src="LOCAL", dst="S3")
    assert first.copied == ["demo/small.csv", "demo/sub/big.bin"] and first.skipped == []
    head = boto3.client("s3").head_object(Bucket=bucket, Key="data/demo/sub/big.bin")
    assert head["ETag"].strip('"').endswith("-3")  # really multipart: 5 + 5 + 2 MiB
    assert head["Metadata"][ds.SHA256_KEY] == __import__("hashlib").sha256(
        (demo / "sub" / "big.bin").read_bytes()).hexdigest()

    second = ds.sync("demo", src="LOCAL", dst="S3")
    assert second.copied == [] and second.skipped == ["demo/small.csv", "demo/sub/big.bin"]

    (demo / "small.csv").write_text("a,b\n3,4\n")  # same size, other content
    dry = ds.sync("demo", src="LOCAL", dst="S3", dry_run=True)
    assert dry.copied == ["demo/small.csv"]
    assert ds.sync("demo", src="LOCAL", dst="S3").copied == ["demo/small.csv"]
    assert ds.sync("demo", src="LOCAL", dst="S3").copied == []

    # back down to a folder: files land whole, and a rerun copies nothing
    assert ds.sync("", src="S3", dst="BACK").copied == ["demo/small.csv", "demo/sub/big.bin"]
    assert (tmp_path / "back" / "demo" / "sub" / "big.bin").read_bytes() == (demo / "sub" / "big.bin").read_bytes()
    assert ds.sync("", src="S3", dst="BACK").copied == []
    out = capsys.readouterr().out
    assert "skip  demo/small.csv  (unchanged)" in out and "would copy  demo/small.csv" in out


def test_sync_command(stores, capsys) -> None:
    from recc.pandasextensions.io import write_df

    write_df(pd.DataFrame({"a": [1]}), "demo/one.csv")
    assert ds.sync_main(["demo", "--from", "LOCAL", "--to", "S3", "--dry-run"]) == 0
    assert "would copy  demo/one.csv" in capsys.readouterr().out
    assert ds.sync_main(["demo", "--from", "LOCAL", "--to", "S3"]) == 0
    assert ds.sync_main(["demo", "--from", "LOCAL", "--to", "S3"]) == 0
    assert "copied 0 file(s)" in capsys.readouterr().out
    assert ds.sync_main(["demo", "--from", "LOCAL", "--to", "NOPE"]) == 1
    assert "unknown datastore 'NOPE'" in capsys.readouterr().err
    assert ds.sync_main(["nothing-here", "--to", "S3"]) == 1
    assert "nothing-here not found in LOCAL" in capsys.readouterr().err


# --- workers ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_task_reads_the_clients_datastores(daemon, monkeypatch, tmp_path) -> None:
    from recc import RECCCluster, RSHClient
    from recc.pandasextensions.io import write_df
    # the daemon (and so every worker) runs without any datastore variable ...
    assert not any(k.startswith("RECC_DATASTORE_") for k in daemon.env)
    # ... which are set in this process only, after the daemon started
    monkeypatch.setenv("RECC_DATASTORE_LOCAL", str(tmp_path / "client-local"))
    monkeypatch.setenv("RECC_DATASTORE_FP_LOCAL", str(tmp_path / "client-fp"))
    df = pd.DataFrame({"a": [1, 2, 3], "b": [4.0, 5.0, 6.0]})
    write_df(df, "demo/w.parquet", datastores="FP_LOCAL")

    def task():
        import os

        from recc.pandasextensions.io import read_df

        return sorted(k for k in os.environ if k.startswith("RECC_DATASTORE_")), read_df("demo/w.parquet")

    cluster = RECCCluster("local", n_workers=1, worker_memory="1GiB", quiet=True)
    try:
        with RSHClient(cluster) as client:
            # RSHClient registered DatastoreSetup itself: nothing to do here
            names, got = client.submit(task, pure=False).result(timeout=60)
            assert names == []
            pd.testing.assert_frame_equal(got, df)
            lines = [msg for worker in client.get_worker_logs().values() for _level, msg in worker]
            assert any("recc: loading demo/w.parquet from FP_LOCAL" in line for line in lines), lines
    finally:
        cluster.close()
