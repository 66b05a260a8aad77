"""`recc daemon install / uninstall` (systemd user unit; Windows Run key as a dry run) and `recc doctor`.

The real user's systemd is never touched: ``XDG_CONFIG_HOME`` is a temporary folder, and
``systemctl`` is either absent from ``PATH`` or a recording stand-in script (a fake of an
external tool, not of RECC's code).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.authenv import recc

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path, recc_dirs: dict[str, str], path: str) -> dict[str, str]:
    env = {**os.environ, **{k: v for k, v in recc_dirs.items() if not k.startswith("_")}}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "xdg"), PATH=path)
    return env


def _no_systemctl_path(tmp_path: Path) -> str:
    """A PATH with this python but without systemctl."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    return str(bin_dir)


def test_dry_run_prints_a_unit_that_systemd_accepts(tmp_path, recc_dirs):
    env = _env(tmp_path, recc_dirs, _no_systemctl_path(tmp_path))
    out = recc(env, "daemon", "install", "--dry-run")
    assert out.returncode == 0, out.stderr
    unit_file = tmp_path / "xdg" / "systemd" / "user" / "reccd.service"
    assert f"# would write {unit_file}:" in out.stdout
    assert not unit_file.exists()  # a dry run writes nothing
    unit = out.stdout.split(":\n", 1)[1].split("# would run")[0]
    assert f"ExecStart={sys.executable} -m reccd" in unit
    for line in ("Restart=on-failure", "KillMode=mixed", "KillSignal=SIGTERM", "WantedBy=default.target"):
        assert line in unit.splitlines()
    verify = shutil.which("systemd-analyze")
    if verify is None:
        print("systemd-analyze is not installed here: the unit's syntax check was skipped")
        return
    (tmp_path / "reccd.service").write_text(unit)
    checked = subprocess.run([verify, "verify", str(tmp_path / "reccd.service")], capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stderr


def test_without_systemd_install_says_so_and_writes_nothing(tmp_path, recc_dirs):
    env = _env(tmp_path, recc_dirs, _no_systemctl_path(tmp_path))
    out = subprocess.run([sys.executable, "-m", "recc.cli", "daemon", "install"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "systemd is not available here (no systemctl)" in out.stdout
    assert "starts the daemon on demand" in out.stdout
    assert not (tmp_path / "xdg" / "systemd").exists()


def test_install_and_uninstall_with_systemd(tmp_path, recc_dirs):
    bin_dir = Path(_no_systemctl_path(tmp_path))
    calls = tmp_path / "calls.txt"
    fake = bin_dir / "systemctl"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\nexit 0\n")
    fake.chmod(0o755)
    env = _env(tmp_path, recc_dirs, str(bin_dir))
    out = recc(env, "daemon", "install")
    assert out.returncode == 0, out.stderr
    unit_file = tmp_path / "xdg" / "systemd" / "user" / "reccd.service"
    assert f"ExecStart={sys.executable} -m reccd" in unit_file.read_text()
    recorded = calls.read_text().splitlines()
    assert recorded == ["--user show-environment", "--user daemon-reload", "--user enable reccd.service",
                        "--user start reccd.service"]
    out = recc(env, "daemon", "uninstall")
    assert out.returncode == 0, out.stderr
    assert f"removed {unit_file}" in out.stdout and not unit_file.exists()
    assert "--user disable --now reccd.service" in calls.read_text()


def test_windows_registration_dry_run_uses_the_base_pythonw_and_the_run_key(tmp_path, recc_dirs):
    env = _env(tmp_path, recc_dirs, os.environ["PATH"])
    out = recc(env, "daemon", "install", "--for", "windows", "--dry-run")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert r"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\RECC daemon" in text
    command = text.split("(REG_SZ) =\n", 1)[1].splitlines()[0]
    started = command.split('"')[1]
    assert started.endswith("pythonw.exe") and "Scripts" not in started  # the base interpreter, not the launcher
    assert "reccd-logon.pyw" in command
    assert 'runpy.run_module("reccd", run_name="__main__"' in text
    out = recc(env, "daemon", "uninstall", "--for", "windows", "--dry-run")
    assert "would delete" in out.stdout and "RECC daemon" in out.stdout


def test_windows_scripts_use_a_user_venv_and_the_same_registration():
    install = (ROOT / "installer" / "windows" / "install.ps1").read_text()
    uninstall = (ROOT / "installer" / "windows" / "uninstall.ps1").read_text()
    assert "-m venv" in install and "LOCALAPPDATA" in install
    assert "recc.cli daemon install" in install  # one code path writes the registration
    assert "recc.cli daemon uninstall" in uninstall and 'Remove-ItemProperty -Path $RunKey -Name "RECC daemon"' \
        in uninstall
    assert "Remove-Item -Recurse -Force $Venv" in uninstall


@pytest.mark.slow
def test_doctor_names_each_problem_and_its_fix(tmp_path, recc_dirs):
    env = _env(tmp_path, recc_dirs, _no_systemctl_path(tmp_path) + os.pathsep + os.environ["PATH"])
    env.update(PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring", AWS_EC2_METADATA_DISABLED="true",
               AWS_ENDPOINT_URL="http://127.0.0.1:9")  # nothing listens on the discard port
    config = Path(recc_dirs["RECC_CONFIG_DIR"])
    config.mkdir(parents=True, exist_ok=True)
    (config / "login.yaml").write_text("source: keys\nregion: us-east-1\n")
    (config / "config.yaml").write_text("contexts:\n  adhoc: {region: us-east-1}\n")
    out = recc(env, "doctor", "--json")
    assert out.returncode == 1  # at least one FAIL
    checks = {c["name"]: c for c in json.loads(out.stdout)}
    assert checks["python"]["status"] == "OK"
    assert checks["daemon"]["status"] == "WARN" and "on demand" in checks["daemon"]["fix"]
    assert checks["keyring"]["status"] == "FAIL" and "--profile" in checks["keyring"]["fix"]
    assert checks["AWS credentials"]["status"] == "FAIL" and checks["AWS credentials"]["fix"]
    assert checks["context adhoc"]["status"] == "FAIL" and "eks_cluster" in checks["context adhoc"]["detail"]
    assert checks["autostart"]["status"] == "WARN"
    text = recc(env, "doctor").stdout
    assert "FAIL  keyring:" in text and "      fix: " in text
