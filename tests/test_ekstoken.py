"""reccd.ekstoken: EKS tokens as aws eks get-token makes them, checked by the fake's verifier."""

from __future__ import annotations

import base64
import json
import uuid
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from reccd.ekstoken import TokenCache, assume_provisioner, make_token
from tests.fakekube.auth import TokenVerifier
from tests.fakekube.clock import Clock
from tests.fakekube.errors import ApiError
from tests.servers import moto_server

AWS = dict(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(scope="module", autouse=True)
def moto_url():
    with moto_server() as url:
        yield url


def decode(token: str) -> str:
    body = token[len("k8s-aws-v1."):]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()


def test_token_shape_ignores_endpoint_override(monkeypatch, moto_url):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    token, expires = make_token(boto3.Session(**AWS), "research-eks", now=lambda: 1000.0)
    assert token.startswith("k8s-aws-v1.") and "=" not in token
    assert expires == 1000.0 + 14 * 60
    url = urlsplit(decode(token))
    assert url.scheme == "https" and url.hostname == "sts.us-east-1.amazonaws.com" and url.path == "/"
    q = {k.lower(): v[0] for k, v in parse_qs(url.query).items()}
    assert q["action"] == "GetCallerIdentity" and q["x-amz-expires"] == "60"
    assert "x-k8s-aws-id" in q["x-amz-signedheaders"].split(";")


def test_fake_accepts_for_its_cluster_only():
    ok = TokenVerifier("research-eks", Clock(), known_secrets={"testing": "testing"})
    token, _ = make_token(boto3.Session(**AWS), "research-eks")
    assert ok.verify(token) == "testing"
    other, _ = make_token(boto3.Session(**AWS), "another-eks")
    with pytest.raises(ApiError):
        ok.verify(other)
    late = TokenVerifier("research-eks", Clock(offset_seconds=16 * 60), known_secrets={"testing": "testing"})
    with pytest.raises(ApiError):
        late.verify(token)


def test_cache_refreshes_after_14_minutes():
    now = [10_000.0]
    cache = TokenCache(lambda: boto3.Session(**AWS), "research-eks", now=lambda: now[0])
    first = cache.get()
    assert cache.get() == first and cache.made == 1
    now[0] += 13 * 60
    cache.get()
    assert cache.made == 1
    now[0] += 61
    cache.get()
    assert cache.made == 2
    cache.invalidate()
    assert cache.bearer().startswith("Bearer k8s-aws-v1.") and cache.made == 3


def test_assume_provisioner_with_user_tag(moto_url):
    base = boto3.Session(**AWS)
    iam = base.client("iam", endpoint_url=moto_url)
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"},
                                                     "Action": ["sts:AssumeRole", "sts:TagSession"]}]}
    role = iam.create_role(RoleName=f"recc-provisioner-{uuid.uuid4().hex[:8]}", AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    session = assume_provisioner(base, role["Arn"], "arathe", endpoint_url=moto_url)
    ident = session.client("sts", endpoint_url=moto_url).get_caller_identity()
    assert f":assumed-role/{role['RoleName']}/recc-arathe" in ident["Arn"]
    creds = session.get_credentials().get_frozen_credentials()
    assert creds.access_key != "testing" and creds.token
    token, _ = make_token(session, "research-eks")
    assert TokenVerifier("research-eks", Clock()).verify(token) == creds.access_key
