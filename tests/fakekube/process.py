"""`FakeKubeProcess`: run ``python -m tests.fakekube`` as a subprocess (for tests whose daemon
runs in another process anyway, or that want the fake's pod processes out of their own tree)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


class FakeKubeProcess:
    """``with FakeKubeProcess(moto_endpoint=url, cluster_name="research") as fake: fake.url``."""

    def __init__(self, *, cluster_name: str = "recc-test", moto_endpoint: str | None = None,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None):
        self.args = [sys.executable, "-m", "tests.fakekube", "--port", "0", "--cluster-name", cluster_name]
        if moto_endpoint:
            self.args += ["--moto-endpoint", moto_endpoint]
        self.args += list(extra_args or [])
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None

    def start(self, timeout: float = 30) -> str:
        self.proc = subprocess.Popen(self.args, cwd=REPO_ROOT, env=self.env, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http"):
            self.stop()
            raise RuntimeError(f"fakekube did not start (exit code {self.proc.returncode})")
        self.url = line
        return line

    def control(self, path: str, body: dict | None = None) -> dict:
        """Call a ``/fakekube/...`` control endpoint (``state``, ``clock``, ``sync-nodes``)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}/fakekube/{path}", data=data, method="GET" if body is None else "POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def stop(self, timeout: float = 15) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None

    def __enter__(self) -> "FakeKubeProcess":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
