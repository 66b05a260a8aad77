"""`read_df` / `write_df` and partitioned data over four datastores: two folders and two S3 prefixes (moto)."""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
import pytest

import recc.pandasextensions.io as pdx
from recc.datastore import DatastoreError, UnknownDatastore
from tests.test_datastore import _s3_server_first, aws, s3_server, stores  # noqa: F401 - fixtures

FRAME = pd.DataFrame(np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]]), columns=["a", "b", "c"])


def test_the_issue_example(stores, capsys) -> None:
    from recc.datastore import get_read_datastore_names, get_write_datastore_names

    assert get_read_datastore_names() == ["LOCAL", "FP_LOCAL", "S3", "FP_S3"]
    assert get_write_datastore_names() == ["LOCAL"]
    df = pd.DataFrame(np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]]), columns=["a", "b", "c"])
    pdx.write_df(df, "demo/example.csv")
    got = pdx.read_df("demo/example.csv")
    assert capsys.readouterr().out == "Loading from LOCAL\n"
    pd.testing.assert_frame_equal(got, df)
    pdx.write_df(df, "demo/example.csv", datastores="S3")
    got = pdx.read_df("demo/example.csv", datastores="S3")
    assert capsys.readouterr().out == "Loading from S3\n"
    pd.testing.assert_frame_equal(got, df)


def test_falls_through_to_the_last_store(stores, capsys) -> None:
    pdx.write_df(FRAME, "demo/deep.parquet", datastores="FP_S3")
    pd.testing.assert_frame_equal(pdx.read_df("demo/deep.parquet"), FRAME)
    assert capsys.readouterr().out == "Loading from FP_S3\n"


def test_the_first_store_that_has_it_wins(stores, capsys) -> None:
    pdx.write_df(FRAME, "demo/both.parquet", datastores=["FP_LOCAL"])
    pdx.write_df(FRAME * 10, "demo/both.parquet", datastores="S3,FP_S3")
    pd.testing.assert_frame_equal(pdx.read_df("demo/both.parquet"), FRAME)
    assert capsys.readouterr().out == "Loading from FP_LOCAL\n"
    pd.testing.assert_frame_equal(pdx.read_df("demo/both.parquet", datastores=["FP_S3", "FP_LOCAL"]), FRAME * 10)


def test_missing_everywhere_names_every_place_tried(stores) -> None:
    with pytest.raises(FileNotFoundError) as err:
        pdx.read_df("demo/nowhere.csv")
    text = str(err.value)
    for name in ("LOCAL", "FP_LOCAL", "S3", "FP_S3"):
        assert f"{name} (" in text
    assert f"{stores['FP_S3']}/demo/nowhere.csv" in text and os.path.join(stores["LOCAL"], "demo") in text


def test_unknown_datastore_lists_the_configured_ones(stores) -> None:
    for call in (lambda: pdx.read_df("demo/x.csv", datastores="NOPE"),
                 lambda: pdx.write_df(FRAME, "demo/x.csv", datastores=["LOCAL", "NOPE"])):
        with pytest.raises(UnknownDatastore) as err:
            call()
        assert "'NOPE'" in str(err.value) and "LOCAL, FP_LOCAL, S3, FP_S3" in str(err.value)
    assert not os.path.exists(os.path.join(stores["LOCAL"], "demo", "x.csv"))  # nothing written before the check


def test_no_rights_a_file_as_root_and_a_missing_bucket(stores, monkeypatch, tmp_path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the root folder should be")  # root can write anywhere, not into a file
    monkeypatch.setenv("RECC_DATASTORE_LOCAL", str(blocker))
    with pytest.raises(DatastoreError, match=r"cannot write demo/x.csv in datastore LOCAL .*a file stands"):
        pdx.write_df(FRAME, "demo/x.csv")
    monkeypatch.setenv("RECC_DATASTORE_S3", "s3://recc-no-such-bucket/x")
    with pytest.raises(DatastoreError, match=r"datastore S3 \(s3://recc-no-such-bucket/x/demo/x.csv\).*bucket does not exist"):
        pdx.write_df(FRAME, "demo/x.csv", datastores="S3")
    with pytest.raises(FileNotFoundError, match=r"S3 \(s3://recc-no-such-bucket/x/demo/x.csv\) \(bucket does not exist\)"):
        pdx.read_df("demo/x.csv")


def test_a_failed_write_leaves_nothing(stores) -> None:
    with pytest.raises(ValueError):
        pdx.write_df(FRAME, "demo/bad.parquet", engine="no-such-engine")
    folder = os.path.join(stores["LOCAL"], "demo")
    assert not os.path.exists(folder) or os.listdir(folder) == []
    with pytest.raises(ValueError):
        pdx.write_df(FRAME, "demo/bad.parquet", datastores="S3", engine="no-such-engine")
    with pytest.raises(FileNotFoundError):
        pdx.read_df("demo/bad.parquet", datastores="S3", quiet=True)


@pytest.mark.parametrize("store", ["LOCAL", "S3"])
def test_formats_round_trip(stores, store) -> None:
    df = pd.DataFrame({"i": [1, 2, 3], "f": [0.5, 1.5, np.nan], "s": ["x", "y", "z"]})
    for name in ("t.csv", "t.csv.gz", "t.parquet", "t.feather", "t.jsonl"):
        pdx.write_df(df, f"fmt/{name}", datastores=store)
        pd.testing.assert_frame_equal(pdx.read_df(f"fmt/{name}", datastores=store, quiet=True), df, check_dtype=False)
    with pytest.raises(ValueError, match="extension"):
        pdx.write_df(df, "fmt/t.xlsx", datastores=store)
    pdx.write_df(df, "fmt/t.pkl", datastores=store)
    with pytest.raises(DatastoreError, match="allow_pickle"):
        pdx.read_df("fmt/t.pkl", datastores=store)
    pd.testing.assert_frame_equal(pdx.read_df("fmt/t.pkl", datastores=store, quiet=True, allow_pickle=True), df)
    assert pdx.read_df("fmt/t.csv", datastores=store, quiet=True, usecols=["s"]).columns.tolist() == ["s"]


def test_quiet_and_the_logger_silence_the_report(stores, capsys) -> None:
    pdx.write_df(FRAME, "demo/q.csv")
    pdx.read_df("demo/q.csv", quiet=True)
    logger = logging.getLogger("recc.io")
    logger.setLevel(logging.WARNING)
    try:
        pdx.read_df("demo/q.csv")
    finally:
        logger.setLevel(logging.NOTSET)
    assert capsys.readouterr().out == ""


def test_date_partitions_across_stores(stores, capsys) -> None:
    days = pd.date_range("2026-01-05", "2026-01-09")  # Monday .. Friday
    for i, day in enumerate(days):
        frame = pd.DataFrame({"day": [day.strftime("%Y-%m-%d")] * 2, "v": [i, i]})
        pdx.write_df(frame, f"panel/{day:%Y-%m-%d}.parquet", datastores="LOCAL" if i < 2 else "S3")
    pdx.write_df(pd.DataFrame({"day": ["shadow"], "v": [-1]}), "panel/2026-01-05.parquet", datastores="FP_S3")
    pdx.write_df(FRAME, "panel/notes.csv")

    parts = pdx.list_partitions("panel/{date:%Y-%m-%d}.parquet", "2026-01-01", "2026-01-08")
    assert [(p.path, p.datastore) for p in parts] == [
        ("panel/2026-01-05.parquet", "LOCAL"), ("panel/2026-01-06.parquet", "LOCAL"),
        ("panel/2026-01-07.parquet", "S3"), ("panel/2026-01-08.parquet", "S3")]
    assert [p.path for p in pdx.list_partitions("panel/*.parquet")][-1] == "panel/2026-01-09.parquet"

    one = pdx.read_partition("panel/{date:%Y-%m-%d}.parquet", "2026-01-07")
    assert one["v"].tolist() == [2, 2]
    capsys.readouterr()

    ddf = pdx.read_partitions("panel/{date:%Y-%m-%d}.parquet", "2026-01-05", "2026-01-09", freq="B")
    assert capsys.readouterr().out == "Loading 5 partitions from LOCAL (2), S3 (3)\n"
    assert ddf.npartitions == 5 and list(ddf.columns) == ["day", "v"]
    assert ddf.compute(scheduler="sync")["v"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert capsys.readouterr().out == ""  # the tasks themselves are quiet on the client

    tasks = pdx.read_partitions("panel/*.parquet", as_="delayed", quiet=True, columns=["v"])
    assert len(tasks) == 5 and tasks[4].compute(scheduler="sync")["v"].tolist() == [4, 4]
    with pytest.raises(FileNotFoundError, match="no partitions"):
        pdx.read_partitions("panel/{date:%Y-%m-%d}.parquet", "2025-01-01", "2025-01-03")
