"""reccd.contexts: EKS contexts from config.yaml, RECC_CONTEXT and RECC_JOB_ID."""

from __future__ import annotations

import pytest
import yaml

from recc.errors import SpecError
from reccd.contexts import Context, current_context_name, load_context

CONFIG = {
    "job_context": "prod",
    "contexts": {
        "adhoc": {"region": "eu-west-1", "eks_cluster": "research-eks", "profile": "research",
                  "provisioner_role_arn": "arn:aws:iam::1:role/recc-provisioner",
                  "subnets": ["subnet-a", "subnet-b"], "launch_template_id": "lt-1", "max_nodes": 7,
                  "route": "auto", "kubernetes_api_url": "http://127.0.0.1:1",
                  "data_access_role_arn": "arn:aws:iam::1:role/data", "timeouts": {"capacity": 60}},
        "prod": {"eks_cluster": "prod-eks", "route": "loadbalancer", "max-nodes": 100},
    },
}


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.setenv("RECC_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("RECC_CONTEXT", raising=False)
    monkeypatch.delenv("RECC_JOB_ID", raising=False)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    return tmp_path


def test_default_is_adhoc(config):
    ctx = load_context()
    assert ctx.name == "adhoc" and ctx.region == "eu-west-1" and ctx.eks_cluster == "research-eks"
    assert ctx.subnets == ("subnet-a", "subnet-b") and ctx.max_nodes == 7 and ctx.route == "auto"
    assert ctx.capacity_timeout == 60.0 and ctx.has_launch_template
    assert ctx.kubernetes_api_url == "http://127.0.0.1:1"


def test_job_context_and_env(config, monkeypatch):
    monkeypatch.setenv("RECC_JOB_ID", "j1")
    ctx = load_context()
    assert ctx.name == "prod" and ctx.route == "loadbalancer" and ctx.max_nodes == 100
    monkeypatch.setenv("RECC_CONTEXT", "adhoc")
    assert load_context().name == "adhoc"
    assert current_context_name({}, {"RECC_JOB_ID": "x"}) == "production"
    assert current_context_name({}, {}) == "adhoc"


def test_unknown_context_and_settings(config):
    with pytest.raises(SpecError, match="not configured"):
        load_context("nope")
    with pytest.raises(SpecError, match="unknown setting"):
        load_context("x", settings={"contexts": {"x": {"regionn": "a"}}})
    with pytest.raises(SpecError, match="route"):
        load_context("x", settings={"contexts": {"x": {"route": "vpn"}}})
    with pytest.raises(SpecError, match="max_nodes"):
        Context(max_nodes=-1)


def test_require_and_manifest_options(config):
    ctx = load_context()
    ctx.require("eks_cluster", "region")
    with pytest.raises(SpecError, match="efs_server"):
        ctx.require("efs_server")
    opts = ctx.manifest_options()
    assert opts.route == "auto" and opts.data_access_role_arn == "arn:aws:iam::1:role/data"


def test_docs_list_every_setting():
    from pathlib import Path
    import dataclasses

    text = (Path(__file__).parent.parent / "docs" / "eks.md").read_text()
    for f in dataclasses.fields(Context):
        if f.name not in ("name", "extra"):
            assert f"`{f.name}`" in text, f.name
    assert "aws:ResourceTag/recc:user" in text and "${aws:PrincipalTag/recc:user}" in text
    assert "aws:RequestTag/recc:user" in text
