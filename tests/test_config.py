"""The user config: config.yaml in the config folder, merged over Dask config under `recc.`."""

from __future__ import annotations

from pathlib import Path

import dask.config
import platformdirs
import pytest

from recc.config import config_path, load_user_config
from recc.costs import load_budgets
from recc.errors import SpecError


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RECC_CONFIG_DIR", str(tmp_path))
    return tmp_path


def test_path_follows_env_and_platformdirs(config_dir, monkeypatch):
    assert config_path() == config_dir / "config.yaml"
    monkeypatch.delenv("RECC_CONFIG_DIR")
    assert config_path() == Path(platformdirs.user_config_dir("recc", appauthor=False)) / "config.yaml"


def test_missing_or_empty_file_is_empty(config_dir):
    with dask.config.set({"recc": {}}):
        assert load_user_config() == {}
        (config_dir / "config.yaml").write_text("# nothing yet\n", encoding="utf-8")
        assert load_user_config() == {}


def test_file_merged_over_dask_config(config_dir):
    (config_dir / "config.yaml").write_text(
        "budgets:\n"
        "  user: {monthly: 500}\n"
        "  jobs:\n"
        "    nightly_risk: {monthly: 100}\n"
        "max_cost_per_hour: 20\n",
        encoding="utf-8",
    )
    from_dask = {"budgets": {"user": {"monthly": 50, "thresholds": [90]},
                             "jobs": {"nightly-risk": {"monthly": 300}}},
                 "max_cost_per_hour": 5, "cluster": "big"}
    with dask.config.set({"recc": from_dask}):
        merged = load_user_config()
        assert merged == {
            # The file wins key by key; what only Dask config sets survives.
            "budgets": {"user": {"monthly": 500, "thresholds": [90]},
                        # Two distinct job names, not folded into one as dask.config.merge would.
                        "jobs": {"nightly-risk": {"monthly": 300}, "nightly_risk": {"monthly": 100}}},
            "max_cost_per_hour": 20,
            "cluster": "big",
        }
        merged["budgets"]["user"]["thresholds"].append(1)  # the caller's copy, not Dask's
        assert dask.config.get("recc.budgets.user.thresholds") == [90]
        assert [b.name for b in load_budgets(merged)] == ["user", "nightly-risk", "nightly_risk"]


@pytest.mark.parametrize("content, problem", [
    (b"budgets: {user: [}\n", "is not valid YAML at line 1"),
    (b"- just\n- a list\n", "must be a mapping of settings"),
    (b"\xff\xfe\x00bad", "cannot read"),
])
def test_bad_file_names_the_file(config_dir, content, problem):
    path = config_dir / "config.yaml"
    path.write_bytes(content)
    with pytest.raises(SpecError) as info:
        load_user_config()
    assert str(path) in info.value.message
    assert problem in info.value.message


def test_bad_dask_config(config_dir):
    with dask.config.set({"recc": "oops"}):
        with pytest.raises(SpecError, match="Dask config 'recc' must be a mapping"):
            load_user_config()
