"""Templates: the built-ins, overrides, and the user's templates.yaml."""

from __future__ import annotations

import platformdirs
import pytest

from recc.errors import SpecError, TemplateNotFound
from recc.templates import BUILTIN_NAMES, list_templates, resolve, user_templates_path

GiB = 2**30


@pytest.fixture
def config(tmp_path, monkeypatch):
    """A private config folder; returns a function that writes templates.yaml into it."""
    monkeypatch.setenv("RECC_CONFIG_DIR", str(tmp_path))

    def write(text: str):
        path = tmp_path / "templates.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


def test_builtins(config):
    templates = list_templates()
    assert set(BUILTIN_NAMES) <= set(templates)
    local = templates["local"]
    assert (local.provider, local.n_workers, local.worker_threads, local.worker_memory) == ("local", 2, 1, 2 * GiB)
    small = templates["small-cluster-small-workers"]
    assert (small.provider, small.instance_type, small.n_workers, small.worker_cpu, small.worker_memory) == (
        "eks", "m5.xlarge", 4, 1.0, 3 * GiB)
    large = templates["large-cluster-large-workers"]
    assert (large.instance_type, large.n_workers, large.worker_cpu, large.worker_memory, large.worker_threads) == (
        "r5.4xlarge", 50, 2.0, 15 * GiB, 2)
    gpu = templates["gpu-workers"]
    assert (gpu.instance_type, gpu.n_workers, gpu.worker_gpu, gpu.resources, gpu.worker_cpu, gpu.worker_memory) == (
        "g4dn.xlarge", 4, 1, {"GPU": 1.0}, 3.0, 12 * GiB)
    for name, spec in templates.items():
        assert spec.template == name


def test_resolve_applies_overrides_and_ignores_none(config):
    spec = resolve("large-cluster-large-workers", n_workers=300, worker_memory="30GiB", region=None)
    assert (spec.template, spec.n_workers, spec.worker_memory, spec.region) == (
        "large-cluster-large-workers", 300, 30 * GiB, "us-east-1")
    assert spec.instance_type == "r5.4xlarge"


def test_resolve_rejects_unknown_or_invalid_overrides(config):
    with pytest.raises(SpecError, match="n_wrokers"):
        resolve("local", n_wrokers=4)
    with pytest.raises(SpecError, match="worker_memory"):
        resolve("local", worker_memory="lots")


def test_unknown_template_lists_the_known_ones(config):
    config("mine: {base: local}\n")
    with pytest.raises(TemplateNotFound) as err:
        resolve("large-cluster-large-wokers")
    text = str(err.value)
    assert "large-cluster-large-wokers" in err.value.message
    for name in (*BUILTIN_NAMES, "mine"):
        assert name in text
    assert "did you mean 'large-cluster-large-workers'" in err.value.hint
    assert err.value.code == "unknown-template"


def test_builtins_cannot_be_changed_through_a_returned_spec(config):
    list_templates()["gpu-workers"].resources["GPU"] = 99  # type: ignore[index]
    assert resolve("gpu-workers").resources == {"GPU": 1.0}


def test_user_file_extends_and_overrides(config):
    config("""
big-memory:
  base: large-cluster-large-workers
  n_workers: 100
  worker_memory: 30GiB
  tags: {team: rates}
small-cluster-small-workers:        # replaces the built-in, keeps what it does not set
  instance_type: m5.2xlarge
bigger-memory:                      # a user template can build on another
  base: big-memory
  region: eu-west-1
plain:                              # no base: ClusterSpec defaults
  n_workers: 3
copy-of-local:
  base: local
""")
    templates = list_templates()
    big = templates["big-memory"]
    assert (big.template, big.provider, big.instance_type, big.n_workers, big.worker_memory, big.worker_threads) == (
        "big-memory", "eks", "r5.4xlarge", 100, 30 * GiB, 2)
    assert big.tags == {"team": "rates"}
    small = templates["small-cluster-small-workers"]
    assert (small.instance_type, small.n_workers, small.worker_memory) == ("m5.2xlarge", 4, 3 * GiB)
    bigger = templates["bigger-memory"]
    assert (bigger.region, bigger.n_workers, bigger.template) == ("eu-west-1", 100, "bigger-memory")
    assert (templates["plain"].provider, templates["plain"].n_workers) == ("local", 3)
    assert templates["copy-of-local"].template == "copy-of-local"
    spec = resolve("big-memory", n_workers=7)
    assert (spec.template, spec.n_workers, spec.worker_memory) == ("big-memory", 7, 30 * GiB)


def test_empty_or_missing_file_means_builtins_only(config):
    assert set(list_templates()) == set(BUILTIN_NAMES)
    config("# nothing yet\n")
    assert set(list_templates()) == set(BUILTIN_NAMES)


@pytest.mark.parametrize("text, expected", [
    ("mine: [unclosed\n", "not valid YAML at line"),
    ("- local\n- gpu-workers\n", "must map template names"),
    ("mine: 4\n", "template 'mine' must be a mapping"),
    ("mine: {n_wrokers: 4}\n", "unknown setting(s): n_wrokers"),
    ("mine: {template: local}\n", "unknown setting(s): template"),
    ("mine: {worker_memory: lots}\n", "template 'mine': worker_memory 'lots' is not a size"),
    ("mine: {provider: gke}\n", "template 'mine': unknown provider"),
    ("mine: {base: nosuch}\n", "unknown base 'nosuch'"),
    ("a: {base: b}\nb: {base: a}\n", "cycle"),
    ("mine: {base: [local]}\n", "not a template name"),
    ("1: {n_workers: 2}\n", "not a non-empty string"),
])
def test_malformed_user_file_names_the_file_and_the_problem(config, text, expected):
    path = config(text)
    with pytest.raises(SpecError) as err:
        resolve("local")
    assert not isinstance(err.value, TemplateNotFound)
    assert str(path) in err.value.message
    assert expected in err.value.message


def test_config_dir_defaults_to_platformdirs(monkeypatch):
    monkeypatch.delenv("RECC_CONFIG_DIR", raising=False)
    assert str(user_templates_path().parent) == platformdirs.user_config_dir("recc")
