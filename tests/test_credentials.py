"""`recc login / whoami / env / logout`, the daemon's sessions and its container-credentials endpoint.

Real `recc` and `reccd` processes against moto (server mode); the keyring is keyrings.alt's
file backend chosen explicitly (tests/authenv.py).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.authenv import auth_env, random_keys, recc
from tests.harness import Daemon
from tests.servers import moto_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def moto_url():
    with moto_server() as url:
        yield url


def _keyring_text(env: dict[str, str]) -> str:
    """Everything under the recc service in the test keyring, read through keyring itself."""
    code = ("import keyring; from recc import secretstore; "
            "print(secretstore.load('aws') or '', keyring.get_password('recc', 'aws') or '')")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60, check=True).stdout


def _start(dirs: dict[str, str], env: dict[str, str]) -> Daemon:
    d = Daemon(dirs)
    d.env = dict(env)
    return d.start()


CHILD = """
import boto3, json
sts = boto3.client("sts")
who = sts.get_caller_identity()
s3 = boto3.client("s3")
s3.create_bucket(Bucket="recc-endpoint-test")
creds = boto3.Session().get_credentials()
print(json.dumps({"arn": who["Arn"], "buckets": [b["Name"] for b in s3.list_buckets()["Buckets"]],
                  "method": creds.method, "key": creds.get_frozen_credentials().access_key}))
"""


def test_login_whoami_env_and_a_child_process_gets_credentials_from_the_daemon(recc_dirs, moto_url):
    env = auth_env(recc_dirs, moto_url)
    akid, secret, _ = random_keys()
    out = recc(env, "login", stdin=f"{akid}\n{secret}\n")
    assert out.returncode == 0, out.stderr
    assert "logged in as arn:aws:" in out.stdout
    login_yaml = Path(recc_dirs["RECC_CONFIG_DIR"], "login.yaml").read_text()
    assert "source: keys" in login_yaml and secret not in login_yaml and akid not in login_yaml
    assert secret in _keyring_text(env)  # the (explicitly chosen) keyring has it, and nothing else does

    d = _start(recc_dirs, env)
    try:
        who = recc(env, "whoami", "--json")
        assert who.returncode == 0, who.stderr
        status = json.loads(who.stdout)
        assert status["state"] == "ok" and status["source"] == "keys"
        assert status["identity"]["arn"].startswith("arn:aws:")
        assert status["expires_at"] > status["refresh_at"]
        assert secret not in who.stdout and akid not in who.stdout

        printed = recc(env, "env")
        assert printed.returncode == 0, printed.stderr
        lines = dict(line.removeprefix("export ").split("=", 1) for line in printed.stdout.splitlines()
                     if line.startswith("export "))
        uri, token_file = lines["AWS_CONTAINER_CREDENTIALS_FULL_URI"], lines["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"]
        assert uri.startswith("http://127.0.0.1:")
        assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
        assert not Path(token_file).read_text().endswith("\n")  # botocore refuses a header with a newline
        ps = recc(env, "env", "--shell", "powershell").stdout
        assert f"$env:AWS_CONTAINER_CREDENTIALS_FULL_URI = '{uri}'" in ps

        # a child with nothing but those two variables (and moto's address) gets working credentials
        child_env = {"PATH": os.environ["PATH"], "AWS_ENDPOINT_URL": moto_url, "AWS_DEFAULT_REGION": "us-east-1",
                     "AWS_CONFIG_FILE": env["AWS_CONFIG_FILE"], "AWS_SHARED_CREDENTIALS_FILE": env["AWS_CONFIG_FILE"],
                     "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONTAINER_CREDENTIALS_FULL_URI": uri,
                     "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": token_file,
                     "RECC_TEST_SESSION": os.environ["RECC_TEST_SESSION"]}
        child = subprocess.run([sys.executable, "-c", CHILD], env=child_env, capture_output=True, text=True,
                               timeout=60)
        assert child.returncode == 0, child.stderr
        got = json.loads(child.stdout)
        assert got["arn"].startswith("arn:aws:") and "recc-endpoint-test" in got["buckets"]
        assert got["method"] == "container-role"
        assert got["key"] != akid  # a short-lived session, never the long-lived key

        # the endpoint wants the token
        for header in ({}, {"Authorization": "wrong"}):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(urllib.request.Request(uri, headers=header), timeout=10)
            assert refused.value.code == 401

        out = recc(env, "logout")
        assert out.returncode == 0 and "removed" in out.stdout
        assert secret not in _keyring_text(env)
        assert not Path(recc_dirs["RECC_CONFIG_DIR"], "login.yaml").exists()
        after = recc(env, "whoami")
        assert after.returncode == 1
        assert "recc login" in after.stderr  # no credentials anywhere now: the fix is named
    finally:
        d.cleanup()


def test_login_refuses_keys_aws_rejects_and_never_echoes_them(recc_dirs, moto_url):
    env = auth_env(recc_dirs, moto_url)
    _, secret, _ = random_keys()
    out = recc(env, "login", stdin=f"not-a-key\n{secret}\n")
    assert out.returncode == 1 and "access key id" in out.stderr
    assert secret not in out.stderr + out.stdout
    assert not Path(recc_dirs["RECC_CONFIG_DIR"], "login.yaml").exists()


def test_login_without_a_keyring_is_a_clear_error_and_stores_nothing(recc_dirs, moto_url):
    env = auth_env(recc_dirs, moto_url, PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring")
    akid, secret, _ = random_keys()
    out = recc(env, "login", stdin=f"{akid}\n{secret}\n")
    assert out.returncode == 1
    assert "no usable OS keyring" in out.stderr
    for way_out in ("--profile", "--sso-session", "instance role", "PYTHON_KEYRING_BACKEND"):
        assert way_out in out.stderr
    assert secret not in out.stderr
    assert not Path(recc_dirs["RECC_CONFIG_DIR"], "login.yaml").exists()


def test_long_session_token_is_split_across_keyring_entries_and_used(recc_dirs, moto_url):
    env = auth_env(recc_dirs, moto_url)
    akid, secret, token = random_keys()
    out = recc(env, "login", stdin=f"{akid}\n{secret}\n{token}\n")
    assert out.returncode == 0, out.stderr
    assert "2 entries" in out.stdout  # over Windows Credential Manager's 2,560 bytes: split
    d = _start(recc_dirs, env)
    try:
        status = json.loads(recc(env, "whoami", "--json").stdout)
        assert status["state"] == "ok"
    finally:
        d.cleanup()


SSO_CONFIG = """\
[profile research]
sso_session = corp
sso_account_id = 111122223333
sso_role_name = Researcher
region = us-east-1

[sso-session corp]
sso_start_url = https://corp.awsapps.com/start
sso_region = us-east-1
"""


def test_expired_sso_login_is_announced_once_and_every_caller_gets_the_fix(recc_dirs, moto_url):
    env = auth_env(recc_dirs, moto_url, RECC_CREDENTIALS_BACKOFF="60")
    Path(env["AWS_CONFIG_FILE"]).parent.mkdir(parents=True)
    Path(env["AWS_CONFIG_FILE"]).write_text(SSO_CONFIG)
    # `recc login --sso-session` finds the profile, and with no SSO token says how to get one
    out = recc(env, "login", "--sso-session", "corp")
    assert out.returncode == 1
    assert "aws sso login --sso-session corp" in out.stderr
    # the state after an SSO session expired: the login is there, the token is not
    Path(recc_dirs["RECC_CONFIG_DIR"]).mkdir(parents=True, exist_ok=True)
    Path(recc_dirs["RECC_CONFIG_DIR"], "login.yaml").write_text(
        "source: sso\nprofile: research\nsso_session: corp\nregion: us-east-1\n")
    d = _start(recc_dirs, env)
    events: list[dict] = []
    stream = d.client().events()
    reader = threading.Thread(target=lambda: events.extend(stream), daemon=True)
    reader.start()
    try:
        for _ in range(3):
            who = recc(env, "whoami")
            assert who.returncode == 1
            assert "aws sso login --sso-session corp" in who.stderr
        status = json.loads(recc(env, "whoami", "--json").stdout)
        assert status["state"] == "needs-reauthentication" and status["retry_at"]
    finally:
        stream.close()
        reader.join(10)
        d.cleanup()
    reauth = [e for e in events if e["type"] == "credentials.reauth"]
    assert len(reauth) == 1, events
    assert "aws sso login --sso-session corp" in reauth[0]["data"]["hint"]


def test_library_uses_the_daemon_only_without_credentials_of_its_own(recc_dirs, moto_url):
    env = auth_env(recc_dirs, moto_url)
    akid, secret, _ = random_keys()
    assert recc(env, "login", stdin=f"{akid}\n{secret}\n").returncode == 0
    d = _start(recc_dirs, env)
    code = ("from recc.awscreds import use_daemon_credentials; import boto3, os; used = use_daemon_credentials(); "
            "print(used, boto3.client('sts').get_caller_identity()['Arn'] if used else os.environ.get("
            "'AWS_CONTAINER_CREDENTIALS_FULL_URI'))")
    try:
        plain = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert plain.returncode == 0, plain.stderr
        assert plain.stdout.startswith("True arn:aws:")
        own = subprocess.run([sys.executable, "-c", code], env=dict(env, AWS_ACCESS_KEY_ID="AKIAOWN0000000000000",
                                                                    AWS_SECRET_ACCESS_KEY="own"),
                             capture_output=True, text=True, timeout=60)
        assert own.stdout.strip() == "False None"  # explicit credentials win; nothing is set
    finally:
        d.cleanup()


def test_a_credentials_file_the_environment_names_but_is_gone_is_a_clear_error(recc_dirs, monkeypatch, tmp_path):
    """A stale `recc env` in the daemon's environment (its token file is gone) is reported with the fix, not
    raised: it was an unhandled error, a 500 on GET /v1/credentials."""
    from reccd.credentials import DaemonCredentials

    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in recc_dirs.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:9/aws-credentials")
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", str(tmp_path / "gone.token"))
    status = DaemonCredentials().check()
    assert status["state"] == "error", status
    assert "could not be read" in status["message"] and "gone.token" in status["message"], status
    assert "AWS_CONTAINER_" in status["hint"], status
