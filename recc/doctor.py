"""``recc doctor``: one line per check, OK / WARN / FAIL, each with the fix.

Checks only look: doctor never starts the daemon, never writes a file and never changes
the keyring, so it is safe to run when things are broken (which is when people run it).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import stat
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable
from urllib.parse import urlparse

from recc.errors import RECCError

OK, WARN, FAIL = "OK", "WARN", "FAIL"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str | None = None


def check_python() -> Check:
    v = sys.version_info
    if v >= (3, 11):
        return Check("python", OK, f"Python {v.major}.{v.minor}.{v.micro} at {sys.executable}")
    return Check("python", FAIL, f"Python {v.major}.{v.minor} is too old", "RECC needs Python 3.11 or newer")


def check_runtime() -> Check:
    from recc.paths import check_private_dir, runtime_dir

    path = runtime_dir()
    if not path.exists():
        return Check("runtime folder", WARN, f"{path} does not exist yet", "it is made (0700) when the daemon starts")
    try:
        check_private_dir(path)
    except RECCError as exc:
        return Check("runtime folder", FAIL, exc.message, exc.hint)
    return Check("runtime folder", OK, f"{path} is yours and private (0700)")


def check_daemon() -> tuple[Check, dict[str, Any] | None]:
    from recc.daemon_client import DaemonClient

    client = DaemonClient()
    try:
        info = client.health(timeout=5.0)
    except RECCError:
        return Check("daemon", WARN, f"no daemon answers at {client.address}",
                     "the library starts it on demand; or `recc daemon start` / `recc daemon install`"), None
    return Check("daemon", OK, f"reccd {info.get('version')} (pid {info.get('pid')}) at {client.address}"), info


def check_socket(info: dict[str, Any] | None) -> Check:
    from recc.daemon_client import use_tcp
    from recc.paths import runtime_dir, socket_path

    if use_tcp():
        token = runtime_dir() / "reccd.token"
        return _private_file("daemon token", token, info is not None)
    return _private_file("daemon socket", socket_path(), info is not None)


def _private_file(name: str, path: Any, expected: bool) -> Check:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return Check(name, WARN if not expected else FAIL, f"{path} does not exist",
                     None if not expected else "restart the daemon: `recc daemon stop; recc daemon start`")
    mode = stat.S_IMODE(st.st_mode)
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return Check(name, FAIL, f"{path} belongs to uid {st.st_uid}", "remove it; another user may be interfering")
    if mode & 0o077:
        return Check(name, FAIL, f"{path} is open to others (mode {mode:04o})", f"chmod 600 {path}")
    return Check(name, OK, f"{path} (mode {mode:04o})")


def check_keyring(login: Any) -> Check:
    from recc import secretstore

    try:
        name = secretstore.backend_name()
    except RECCError as exc:
        # only a problem when the login keeps its keys there
        status = FAIL if (login is not None and login.source == "keys") else WARN
        return Check("keyring", status, exc.message, exc.hint)
    return Check("keyring", OK, f"{name}")


def check_login() -> tuple[Check, Any]:
    from recc.login import load_login, login_path

    try:
        login = load_login()
    except RECCError as exc:
        return Check("login", FAIL, exc.message, exc.hint), None
    if login is None:
        return Check("login", WARN, "no `recc login`: the standard AWS chain is used",
                     "for AWS clusters run `recc login` (keys, --profile or --sso-session)"), None
    what = {"keys": "access keys in the keyring", "profile": f"AWS profile {login.profile!r}",
            "sso": f"AWS SSO session {login.sso_session!r} (profile {login.profile!r})"}[login.source]
    return Check("login", OK, f"{what}, region {login.region} ({login_path()})"), login


def check_credentials(info: dict[str, Any] | None, login: Any) -> Check:
    """Valid credentials and their expiry: from the running daemon, else a direct STS call."""
    if info is not None:
        from recc.daemon_client import DaemonClient

        try:
            status = DaemonClient().credentials(check=True)
        except RECCError as exc:
            return Check("AWS credentials", FAIL, exc.message, exc.hint)
        if status.get("state") != "ok":
            return Check("AWS credentials", FAIL, status.get("message") or status.get("state", "?"),
                         status.get("hint"))
        left = (status["expires_at"] - time.time()) / 60 if status.get("expires_at") else None
        return Check("AWS credentials", OK, f"{status['identity']['arn']}; daemon session expires in "
                     + (f"{left:.0f} min (renewed early)" if left is not None else "?"))
    from recc.login import base_session, caller_identity

    try:
        who = caller_identity(base_session(login), login)
    except RECCError as exc:
        status = FAIL if login is not None else WARN
        return Check("AWS credentials", status, exc.message, exc.hint)
    return Check("AWS credentials", OK, f"{who['arn']} (checked directly: the daemon is not running)")


def check_config() -> tuple[list[Check], list[Any]]:
    """Every configured context parses; returns the checks and the contexts' settings."""
    from recc.config import load_user_config

    try:
        cfg = load_user_config()
    except RECCError as exc:
        return [Check("config", FAIL, exc.message, exc.hint)], []
    contexts = cfg.get("contexts") or {}
    if not isinstance(contexts, dict):
        return [Check("config", FAIL, "contexts must map context names to settings", "see docs/eks.md")], []
    if not contexts:
        return [Check("config", OK, "no EKS contexts configured (local clusters only)")], []
    checks, good = [], []
    # the context rules live with the daemon (reccd.contexts); recc never imports reccd, so the
    # checks here are the ones a person most often gets wrong
    for name, settings in sorted(contexts.items(), key=lambda kv: str(kv[0])):
        if not isinstance(settings, dict):
            checks.append(Check(f"context {name}", FAIL, "must be a mapping of settings", "see docs/eks.md"))
            continue
        cluster = settings.get("eks_cluster") or settings.get("eks-cluster")
        if not cluster:
            checks.append(Check(f"context {name}", FAIL, "has no eks_cluster", "see docs/eks.md"))
            continue
        checks.append(Check(f"context {name}", OK, f"EKS cluster {cluster} in {settings.get('region', 'us-east-1')}"))
        good.append((name, settings))
    return checks, good


def check_reachable(name: str, settings: dict[str, Any]) -> Check:
    """A TCP connection to the context's Kubernetes API (or the regional EKS API) within 3 s."""
    url = settings.get("kubernetes_api_url") or os.environ.get("AWS_ENDPOINT_URL") \
        or f"https://eks.{settings.get('region', 'us-east-1')}.amazonaws.com"
    parsed = urlparse(url)
    host, port = parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        return Check(f"EKS reachable ({name})", FAIL, f"{host}:{port}: {exc.strerror or type(exc).__name__}",
                     "check VPN / proxy; provisioning needs the EKS and Kubernetes APIs")
    return Check(f"EKS reachable ({name})", OK, f"{host}:{port} answers")


def check_autostart() -> Check:
    from recc import install

    if sys.platform == "win32":  # pragma: no cover - Windows only
        if install.windows_installed():
            return Check("autostart", OK, f"HKCU\\{install.RUN_KEY}\\{install.RUN_VALUE}")
        return Check("autostart", WARN, "not installed", "`recc daemon install` (or installer/windows/install.ps1)")
    path = install.unit_path()
    if path.exists():
        return Check("autostart", OK, f"systemd user unit {path}")
    problem = install.systemd_problem()
    if problem:
        return Check("autostart", WARN, f"{problem}", "the library starts the daemon on demand; nothing to do")
    return Check("autostart", WARN, "no systemd user unit", "`recc daemon install`")


def run_checks() -> list[Check]:
    checks = [check_python(), check_runtime()]
    daemon, info = check_daemon()
    checks += [daemon, check_socket(info)]
    login_check, login = check_login()
    checks += [login_check, check_keyring(login), check_credentials(info, login)]
    config_checks, contexts = check_config()
    checks += config_checks
    checks += [check_reachable(name, settings) for name, settings in contexts]
    checks.append(check_autostart())
    return checks


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = run_checks()
    if args.json:
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        for c in checks:
            print(f"{c.status:<4}  {c.name}: {c.detail}")
            if c.fix and c.status != OK:
                print(f"      fix: {c.fix}")
    return 1 if any(c.status == FAIL for c in checks) else 0


def add_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command("doctor", cmd_doctor, "check the installation, daemon, keyring and credentials; say how to fix")
    p.add_argument("--json", action="store_true")
