"""The `recc` command as a person uses it: plans, templates, and errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
import sys

import pytest


def recc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "recc.cli", *args], capture_output=True, text=True, timeout=60)


def test_plan_json_for_a_large_cluster(recc_dirs) -> None:
    out = recc("plan", "large-cluster-large-workers", "--workers", "300", "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["nodes"] == 43 and plan["workers_per_node"] == 7
    assert plan["cost_per_hour"] == pytest.approx(43 * 1.008, abs=0.01)


def test_plan_text_shows_nodes_and_dollars(recc_dirs) -> None:
    out = recc("plan", "small-cluster-small-workers", "--workers", "10", "--instance-type", "m5.2xlarge")
    assert out.returncode == 0, out.stderr
    assert "m5.2xlarge" in out.stdout and "$" in out.stdout and "/h" in out.stdout


def test_templates_are_listed(recc_dirs) -> None:
    out = recc("templates", "--json")
    assert out.returncode == 0
    assert {"local", "small-cluster-small-workers", "large-cluster-large-workers", "gpu-workers"} <= set(
        json.loads(out.stdout))


@pytest.mark.parametrize("args, words", [
    (["plan", "no-such-template"], ["no-such-template", "large-cluster-large-workers"]),
    (["plan", "small-cluster-small-workers", "--workers", "-2"], ["n_workers"]),
    (["plan", "small-cluster-small-workers", "--worker-memory", "500GiB"], ["m5.xlarge"]),
    (["plan", "small-cluster-small-workers", "--worker-cpu", "64"], ["m5.xlarge"]),
    (["plan", "small-cluster-small-workers", "--instance-type", "m5.huge"], ["m5.huge"]),
    (["plan", "small-cluster-small-workers", "--worker-gpu", "1"], ["GPU"]),
    (["plan", "small-cluster-small-workers", "--worker-memory", "lots"], ["worker_memory"]),
    (["plan", "small-cluster-small-workers", "--region", "mars-north-1"], ["mars-north-1"]),
    (["scale", "ghost", "-1"], ["0 or more"]),
])
def test_impossible_specs_fail_with_one_line_and_no_traceback(recc_dirs, args, words) -> None:
    out = recc(*args)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    first = out.stderr.splitlines()[0]
    assert first.startswith("recc: ")
    for word in words:
        assert word.lower() in out.stderr.lower(), out.stderr


def test_down_all_needs_confirmation_when_not_interactive(daemon) -> None:
    out = subprocess.run([sys.executable, "-m", "recc.cli", "up", "local", "--workers", "1", "--name", "keep"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    refused = subprocess.run([sys.executable, "-m", "recc.cli", "down", "--all"], capture_output=True, text=True,
                             timeout=60, stdin=subprocess.DEVNULL)
    assert refused.returncode != 0 and "--yes" in refused.stderr
    assert [c["name"] for c in daemon.client().list_clusters()] == ["keep"]
    done = recc("down", "--all", "--yes")
    assert done.returncode == 0 and "deleted keep" in done.stdout
    assert daemon.client().list_clusters() == []


def test_daemon_status_reports_absence(recc_dirs) -> None:
    out = recc("daemon", "status", "--json")
    assert out.returncode == 1 and json.loads(out.stdout)["running"] is False


def test_up_dry_run_shows_kubernetes_yaml_and_creates_nothing(recc_dirs) -> None:
    import yaml

    out = recc("up", "large-cluster-large-workers", "--workers", "300", "--name", "big", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "43 x r5.4xlarge" in out.stdout
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    kinds = [d["kind"] for d in docs]
    for kind in ("Namespace", "ResourceQuota", "NetworkPolicy", "ServiceAccount", "Role", "RoleBinding", "Secret",
                 "Deployment", "Service"):
        assert kind in kinds, kinds
    workers = [d for d in docs if d["kind"] == "Deployment" and d["spec"]["replicas"] == 300]
    assert workers, "the worker Deployment should have one replica per worker"
    assert "PRIVATE KEY-----\nMI" not in out.stdout  # placeholders, never key material
    assert not (Path(recc_dirs["RECC_RUNTIME_DIR"]) / "reccd.sock").exists()  # no daemon was needed


def test_up_pod_patch_is_checked_before_anything_is_made(recc_dirs, tmp_path) -> None:
    import yaml

    bad = tmp_path / "bad.yaml"
    bad.write_text("spec:\n  hostNetwork: true\n")
    out = recc("up", "small-cluster-small-workers", "--workers", "1", "--pod-patch", str(bad))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("recc: ") and "hostNetwork" in out.stderr, out.stderr
    assert not (Path(recc_dirs["RECC_RUNTIME_DIR"]) / "reccd.sock").exists()  # refused before any daemon
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed\n")
    out = recc("up", "small-cluster-small-workers", "--pod-patch", str(broken))
    assert out.returncode == 1 and "not valid YAML" in out.stderr, out.stderr

    good = tmp_path / "good.yaml"
    good.write_text("metadata:\n  annotations: {team: quant}\nspec:\n  priorityClassName: research-high\n")
    out = recc("up", "small-cluster-small-workers", "--workers", "2", "--name", "p", "--pod-patch", str(good),
               "--dry-run")
    assert out.returncode == 0, out.stderr
    pods = [d["spec"]["template"] for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "Deployment"]
    assert len(pods) == 2  # the scheduler's and the workers'
    assert all(p["spec"]["priorityClassName"] == "research-high" for p in pods)
    assert all(p["metadata"]["annotations"]["team"] == "quant" for p in pods)


def test_up_context_reaches_the_daemon(daemon) -> None:
    out = recc("up", "small-cluster-small-workers", "--workers", "1", "--context", "nope", "--name", "ctx")
    assert out.returncode == 1 and "context 'nope' is not configured" in out.stderr, out.stderr
    assert daemon.client().list_clusters(include_gone=True) == []  # refused before anything existed
