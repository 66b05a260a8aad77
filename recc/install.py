"""``recc daemon install`` / ``uninstall``: start the daemon with the desktop session (docs/install.md).

- **Linux**: a systemd user unit from ``installer/linux/reccd.service.in`` in
  ``$XDG_CONFIG_HOME/systemd/user/reccd.service``, enabled for ``default.target``. systemd
  stops user units at logout with SIGTERM, which makes the daemon delete its ad hoc
  clusters. Without systemd (no ``systemctl``, or no user manager, as in most containers
  and WSL1) nothing is installed and the library keeps starting the daemon on demand.
- **Windows**: the per-user Run key starts the *base* interpreter's ``pythonw.exe`` (not the
  venv's ``pythonw.exe``, a launcher that does not pass the end-session message on, so the
  daemon would be killed at logout without cleaning up) with a small launcher script that
  puts the venv's packages on the path. A Run key has no run-time limit (a scheduled task
  has 72 hours by default). ``installer/windows/install.ps1`` calls this same code.

``--dry-run`` prints what would be written and run, on any platform, for either target.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

from recc.errors import RECCError

UNIT_NAME = "reccd.service"
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
RUN_VALUE = "RECC daemon"
LAUNCHER_NAME = "reccd-logon.pyw"
INSTALLER_DIR = Path(__file__).resolve().parents[1] / "installer"


# -- Linux ------------------------------------------------------------------------------------

def unit_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user" / UNIT_NAME


def systemd_quote(arg: str) -> str:
    """One ExecStart word: ``%`` and ``$`` are specifiers / variables to systemd, spaces split words."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if any(c.isspace() or c in "\"'\\;" for c in arg):
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return arg


def unit_text(python: str | None = None) -> str:
    """The unit, from the template: ExecStart runs this environment's python (the venv's, not the base)."""
    template = INSTALLER_DIR / "linux" / "reccd.service.in"
    try:
        text = template.read_text(encoding="utf-8")
    except OSError:
        raise RECCError(f"the unit template {template} is missing",
                        hint="install RECC from its source folder (pip install -e), see docs/install.md") from None
    import getpass

    exec_start = " ".join(systemd_quote(a) for a in (python or sys.executable, "-m", "reccd"))
    return text.replace("{exec_start}", exec_start).replace("{user}", getpass.getuser())


def systemd_problem() -> str | None:
    """Why a systemd user unit cannot be used here, or None if it can."""
    if shutil.which("systemctl") is None:
        return "systemd is not available here (no systemctl)"
    try:
        probe = subprocess.run(["systemctl", "--user", "show-environment"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "systemctl --user does not answer"
    if probe.returncode != 0:
        return "there is no systemd user manager for this session (systemctl --user fails)"
    return None


ON_DEMAND = ("nothing installed: the RECC library starts the daemon on demand (any RECCCluster, `recc up`, "
             "`recc daemon start`), and it runs until `recc daemon stop` or until the machine stops")


def _systemctl(*args: str) -> None:
    result = subprocess.run(["systemctl", "--user", *args], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RECCError(f"systemctl --user {' '.join(args)} failed: {result.stderr.strip()[:300]}",
                        hint="see `journalctl --user -u reccd`")


def install_linux(dry_run: bool) -> int:
    path, text = unit_path(), unit_text()
    problem = systemd_problem()
    if dry_run:
        print(f"# would write {path}:")
        print(text.rstrip())
        print("# would run: systemctl --user daemon-reload && systemctl --user enable reccd.service")
        print("# and, when no daemon is running yet: systemctl --user start reccd.service")
        if problem:
            print(f"# note: {problem}; {ON_DEMAND}")
        return 0
    if problem:
        print(f"{problem}; {ON_DEMAND}")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    _systemctl("daemon-reload")
    _systemctl("enable", UNIT_NAME)
    from recc.daemon_client import DaemonClient

    print(f"installed {path}: the RECC daemon starts with your session and stops (cleaning up) at logout")
    if DaemonClient().is_alive():
        print("  a daemon started on demand is running now; the unit takes over at your next login "
              "(or now: `recc daemon stop && systemctl --user start reccd`)")
    else:
        _systemctl("start", UNIT_NAME)
        print("  started it now: `systemctl --user status reccd`")
    return 0


def uninstall_linux(dry_run: bool) -> int:
    path = unit_path()
    problem = systemd_problem()
    if dry_run:
        print(f"# would run: systemctl --user disable --now reccd.service; remove {path}; "
              "systemctl --user daemon-reload")
        return 0
    if not problem:
        subprocess.run(["systemctl", "--user", "disable", "--now", UNIT_NAME], capture_output=True, timeout=120)
    existed = path.exists()
    path.unlink(missing_ok=True)
    if not problem:
        subprocess.run(["systemctl", "--user", "daemon-reload"], capture_output=True, timeout=60)
    print(f"removed {path}" if existed else f"no unit was installed ({path} does not exist)")
    return 0


# -- Windows ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class WindowsPlan:
    pythonw: str  # the base interpreter's pythonw.exe
    launcher: str
    launcher_text: str
    command: str  # the Run key value

    def describe(self) -> str:
        return (f"# would write {self.launcher}:\n{self.launcher_text.rstrip()}\n"
                f"# would set HKEY_CURRENT_USER\\{RUN_KEY}\\{RUN_VALUE} (REG_SZ) =\n{self.command}\n"
                "# and, when no daemon is running yet, start that command now")


def windows_plan() -> WindowsPlan:
    """What `install_windows` writes, from this (venv) interpreter."""
    base = PureWindowsPath(getattr(sys, "_base_executable", None) or sys.executable)
    pythonw = str(base.with_name("pythonw.exe"))
    prefix = PureWindowsPath(sys.prefix) if sys.platform == "win32" else Path(sys.prefix)
    launcher = str(prefix / LAUNCHER_NAME)
    venv_pythonw = str(PureWindowsPath(sys.prefix) / "Scripts" / "pythonw.exe")
    text = f'''# Written by `recc daemon install`: the per-user Run key starts this at logon with the base
# interpreter's pythonw.exe. The venv's own pythonw.exe is a launcher that does not pass the
# end-session message on, and the daemon must get it to delete its clusters at logout.
import runpy
import site
import sys

_before = list(sys.path)
site.addsitedir(r"{sysconfig.get_paths()["purelib"]}")  # this venv's packages (and .pth files), first
sys.path[:] = [p for p in sys.path if p not in _before] + _before
# the daemon's own children (schedulers, workers) need no end-session message: the venv's interpreter
sys.executable = r"{venv_pythonw}"
sys.argv = ["reccd"]
runpy.run_module("reccd", run_name="__main__", alter_sys=True)
'''
    return WindowsPlan(pythonw, launcher, text, f'"{pythonw}" "{launcher}"')


def install_windows(dry_run: bool) -> int:
    plan = windows_plan()
    if dry_run:
        print(plan.describe())
        return 0
    if sys.platform != "win32":
        raise RECCError("the Windows registration can only be written on Windows",
                        hint="see it with `recc daemon install --for windows --dry-run`")
    import winreg  # pragma: no cover - Windows only

    Path(plan.launcher).write_text(plan.launcher_text, encoding="utf-8")
    with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY, 0, winreg.KEY_SET_VALUE) as key:
        winreg.SetValueEx(key, RUN_VALUE, 0, winreg.REG_SZ, plan.command)
    from recc.daemon_client import DaemonClient

    print(f"registered {RUN_VALUE!r} in HKCU\\{RUN_KEY}: the RECC daemon starts at logon")
    if not DaemonClient().is_alive():
        subprocess.Popen([plan.pythonw, plan.launcher], close_fds=True,
                         creationflags=getattr(subprocess, "DETACHED_PROCESS", 0))
        print("  started it now")
    return 0


def uninstall_windows(dry_run: bool) -> int:
    plan = windows_plan()
    if dry_run:
        print(f"# would delete HKEY_CURRENT_USER\\{RUN_KEY}\\{RUN_VALUE} and {plan.launcher}")
        return 0
    if sys.platform != "win32":
        raise RECCError("the Windows registration can only be removed on Windows")
    import winreg  # pragma: no cover - Windows only

    try:
        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY, 0, winreg.KEY_SET_VALUE) as key:
            winreg.DeleteValue(key, RUN_VALUE)
        print(f"removed {RUN_VALUE!r} from HKCU\\{RUN_KEY}")
    except FileNotFoundError:
        print("no logon entry was installed")
    Path(plan.launcher).unlink(missing_ok=True)
    return 0


def windows_installed() -> bool:  # pragma: no cover - Windows only
    import winreg

    try:
        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY) as key:
            winreg.QueryValueEx(key, RUN_VALUE)
        return True
    except OSError:
        return False


def run(action: str, dry_run: bool, target: str | None) -> int:
    """``recc daemon install|uninstall [--dry-run] [--for linux|windows]``."""
    target = target or ("windows" if sys.platform == "win32" else "linux")
    if target == "windows":
        return install_windows(dry_run) if action == "install" else uninstall_windows(dry_run)
    return install_linux(dry_run) if action == "install" else uninstall_linux(dry_run)
