"""Start and stop real daemons in private temporary folders."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from recc.daemon_client import DaemonClient

ENV_KEYS = ("RECC_RUNTIME_DIR", "RECC_DATA_DIR", "RECC_LOG_DIR", "RECC_CONFIG_DIR")


def make_dirs() -> dict[str, str]:
    # /tmp, not pytest's deep tmp_path: the socket path must stay under 104 bytes.
    base = Path(tempfile.mkdtemp(prefix="recc-t"))
    return {
        "RECC_RUNTIME_DIR": str(base / "run"),
        "RECC_DATA_DIR": str(base / "data"),
        "RECC_LOG_DIR": str(base / "log"),
        "RECC_CONFIG_DIR": str(base / "config"),
        "_base": str(base),
    }


class Daemon:
    """A `reccd` subprocess with its own folders."""

    def __init__(self, dirs: dict[str, str]) -> None:
        self.dirs = dirs
        self.env = {**os.environ, **{k: v for k, v in dirs.items() if not k.startswith("_")}}
        self.env.pop("RECC_DAEMON", None)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return Path(self.dirs["RECC_RUNTIME_DIR"]) / "reccd.sock"

    @property
    def log(self) -> str:
        try:
            return (Path(self.dirs["RECC_LOG_DIR"]) / "reccd.log").read_text()
        except OSError:
            return ""

    def client(self) -> DaemonClient:
        if self.env.get("RECC_TRANSPORT") == "tcp":
            return DaemonClient()  # discovered from the runtime folder's info file, like any client
        return DaemonClient(str(self.socket))

    def start(self, wait: bool = True) -> "Daemon":
        self.proc = subprocess.Popen([sys.executable, "-m", "reccd"], env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            # a hang detector, not a speed check: a restart reconciles first, which on two loaded cores
            # (EKS fault chains: five daemons importing boto3 and talking to moto at once) took over 30 s
            deadline = time.monotonic() + 120
            # up = answering and its info file written (that happens after reconcile at start)
            while not (self.client().is_alive() and self._info_pid() == self.proc.pid):
                if self.proc.poll() is not None:
                    out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                    raise RuntimeError(f"reccd exited with {self.proc.returncode}: {out}\n{self.log}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"reccd did not start:\n{self.log}")
                time.sleep(0.05)
        return self

    def _info_pid(self) -> int | None:
        try:
            return json.loads((self.socket.parent / "reccd.json").read_text())["pid"]
        except (OSError, ValueError, KeyError):
            return None

    def stop(self, timeout: float = 60) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            if self.proc and self.proc.stdout:
                self.proc.stdout.close()
            shutil.rmtree(self.dirs["_base"], ignore_errors=True)
