"""No secret reaches a log, the state database (and its WAL), the event stream, `recc ls --json`
or the environment of any process, through a full create / use / delete.

The login uses unique random values (access key id, secret, session token) and a role the
daemon assumes, so the short-lived session the daemon hands out (moto's AssumeRole makes
random ones) is scanned for too. Run on the local provider and on the EKS path (moto and the
fake Kubernetes API, tests/eks_env.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, Callable

import boto3
import psutil
import pytest

from tests.authenv import auth_env, random_keys, recc
from recc import manifests as M
from tests.eks_env import USER, EksWorld, eks_world, write_contexts
from tests.harness import Daemon

pytestmark = pytest.mark.slow

FETCH = """
import json, urllib.request, os
token = open(os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"]).read()
req = urllib.request.Request(os.environ["AWS_CONTAINER_CREDENTIALS_FULL_URI"], headers={"Authorization": token})
print(urllib.request.urlopen(req, timeout=30).read().decode())
"""

USE = """
import sys
from recc import RSHClient
with RSHClient(sys.argv[1]) as client:
    assert client.submit(sum, [1, 2, 3]).result() == 6
print("used")
"""


@pytest.fixture(scope="module")
def world():
    with eks_world() as w:
        yield w


def _role(moto_url: str) -> str:
    iam = boto3.client("iam", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"},
                                                     "Action": "sts:AssumeRole"}]}
    return iam.create_role(RoleName=f"researcher-{uuid.uuid4().hex[:8]}",
                           AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]


def _environs() -> dict[int, bytes]:
    """The environment of every process this test session started (they carry its marker)."""
    mark = f"RECC_TEST_SESSION={os.environ['RECC_TEST_SESSION']}".encode()
    found = {}
    for proc in psutil.process_iter(["pid"]):
        try:
            data = Path(f"/proc/{proc.pid}/environ").read_bytes()
        except OSError:
            continue
        if mark in data and proc.pid != os.getpid():
            found[proc.pid] = data
    return found


def _files(dirs: dict[str, str]) -> dict[str, bytes]:
    out = {}
    for key in ("RECC_LOG_DIR", "RECC_DATA_DIR", "RECC_RUNTIME_DIR", "RECC_CONFIG_DIR"):
        for path in Path(dirs[key]).rglob("*"):
            if path.is_file() and not path.is_socket():
                try:
                    out[str(path)] = path.read_bytes()
                except OSError:
                    pass
    return out


def _leaks(secrets: dict[str, str], where: dict[str, bytes]) -> list[str]:
    return [f"{what} in {place}" for place, data in where.items() for what, value in secrets.items()
            if value.encode() in data]


def full_cycle(dirs: dict[str, str], env: dict[str, str], template: str, extra_up: list[str],
               cluster_pids: Callable[[Daemon, str], set[int]]) -> None:
    """Log in, make a cluster, use it, delete it, scanning everything for the secrets.

    ``cluster_pids(daemon, name)``: the cluster's own processes (the daemon's children on ``local``,
    the fake kubelet's pod processes on ``eks``); their environments are scanned too."""
    akid, secret, token = random_keys()
    role = _role(env["AWS_ENDPOINT_URL"])
    secrets = {"access key id": akid, "secret access key": secret, "session token": token}
    login = recc(env, "login", "--role-arn", role, stdin=f"{akid}\n{secret}\n{token}\n")
    assert login.returncode == 0, login.stderr
    d = Daemon(dirs)
    d.env = dict(env)
    d.start()
    events: list[dict[str, Any]] = []
    stream = d.client().events()
    reader = threading.Thread(target=lambda: events.extend(stream), daemon=True)
    reader.start()
    scanned: dict[str, bytes] = {}
    name = f"scan-{uuid.uuid4().hex[:6]}"
    try:
        assert recc(env, "whoami").returncode == 0
        shell = dict(line.removeprefix("export ").split("=", 1) for line in recc(env, "env").stdout.splitlines()
                     if line.startswith("export "))
        fetched = subprocess.run([sys.executable, "-c", FETCH], env={**env, **shell}, capture_output=True, text=True,
                                 timeout=60)
        assert fetched.returncode == 0, fetched.stderr
        issued = json.loads(fetched.stdout)
        assert issued["AccessKeyId"] != akid
        secrets.update({"issued key id": issued["AccessKeyId"], "issued secret": issued["SecretAccessKey"],
                        "issued token": issued["Token"]})

        up = recc(env, "up", template, "--name", name, "--json", *extra_up, timeout=300)
        assert up.returncode == 0, up.stderr + d.log
        scanned["recc up output"] = (up.stdout + up.stderr).encode()
        used = subprocess.run([sys.executable, "-c", USE, name], env=env, capture_output=True, text=True, timeout=300)
        assert used.returncode == 0 and "used" in used.stdout, used.stderr
        ls = recc(env, "ls", "--json")
        scanned["recc ls --json"] = ls.stdout.encode()
        assert name in ls.stdout
        environs = _environs()
        daemon_tree = {d.proc.pid, *(p.pid for p in psutil.Process(d.proc.pid).children(recursive=True))}
        assert daemon_tree <= set(environs) | {p for p in daemon_tree if not psutil.pid_exists(p)}
        pods = cluster_pids(d, name)
        assert len(pods) >= 2, pods  # a scheduler and a worker at least, each looked at below
        for pid in pods - set(environs):
            environs[pid] = Path(f"/proc/{pid}/environ").read_bytes()
        scanned.update({f"/proc/{pid}/environ": data for pid, data in environs.items()})
        scanned.update(_files(dirs))  # while running: the WAL is there now
        down = recc(env, "down", name, timeout=300)
        assert down.returncode == 0, down.stderr
    finally:
        stream.close()
        reader.join(10)
        d.stop()
        if d.proc and d.proc.stdout:
            scanned["daemon stdout"] = d.proc.stdout.read()
            d.proc.stdout.close()
    scanned["event stream"] = json.dumps(events).encode()
    assert any(e.get("cluster") == name for e in events)  # the stream did carry this cluster's life
    scanned.update(_files(dirs))
    assert any(p.endswith("state.db") for p in scanned) and any(p.endswith(".log") for p in scanned)
    leaks = _leaks(secrets, scanned)
    assert not leaks, leaks


def test_no_secret_leaks_on_the_local_provider(recc_dirs):
    from tests.servers import moto_server

    with moto_server() as moto_url:
        # RECC_LOCAL_SPARES=0: warm spare interpreters started during shutdown outlive the daemon (reported)
        env = auth_env(recc_dirs, moto_url, RECC_LOCAL_SPARES="0")
        full_cycle(recc_dirs, env, "local", ["--workers", "1"],
                   lambda d, _: {p.pid for p in psutil.Process(d.proc.pid).children(recursive=True)})


def test_no_secret_leaks_on_the_eks_path(world: EksWorld, recc_dirs):
    env = auth_env(recc_dirs, world.moto_url, RECC_HEARTBEAT_INTERVAL="1")
    write_contexts(recc_dirs, {"adhoc": world.context()})
    def pods(_: Daemon, name: str) -> set[int]:
        ns = M.namespace_name(USER, name)
        return {rt.proc.pid for rt in world.fake.kubelet.runtimes.values()
                if rt.namespace == ns and rt.proc is not None and rt.proc.returncode is None}

    full_cycle(recc_dirs, env, "small-cluster-small-workers", ["--workers", "1"], pods)
