"""``recc login``, ``logout``, ``whoami`` and ``env`` (docs/credentials.md).

Secrets are read from a prompt (no echo) or from standard input, never from the command
line (argv is visible to every user of the machine in ``ps``). They are verified with STS
GetCallerIdentity before anything is stored, then go to the keyring only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import sys
import time
from typing import Any, Callable

from recc.errors import RECCError, SpecError


def _tell_daemon() -> dict[str, Any] | None:
    """A running daemon forgets its sessions and re-reads the login; none running is fine."""
    from recc.daemon_client import DaemonClient

    client = DaemonClient()
    if not client.is_alive():
        return None
    return client.reload_credentials()


def _read_keys(args: argparse.Namespace) -> Any:
    from recc.login import KeyPair

    if sys.stdin.isatty():
        akid = input("AWS access key ID: ").strip()
        secret = getpass.getpass("AWS secret access key: ").strip()
        token = getpass.getpass("AWS session token (Enter for none): ").strip() or None
    else:
        # one value a line: access key id, secret access key, optional session token
        lines = [line.strip() for line in sys.stdin.read().splitlines() if line.strip()]
        if len(lines) not in (2, 3):
            raise SpecError("expected 2 or 3 lines on standard input: access key id, secret access key "
                            "and optionally a session token", hint="or run `recc login` in a terminal to be asked")
        akid, secret, token = lines[0], lines[1], (lines[2] if len(lines) == 3 else None)
    keys = KeyPair(akid, secret, token)
    keys.check()
    return keys


def cmd_login(args: argparse.Namespace) -> int:
    from recc import secretstore
    from recc.login import (KEYRING_NAME, Login, base_session, caller_identity, default_region, save_login,
                            sso_profile)

    region = args.region or default_region()
    if args.sso_session:
        login = Login("sso", region, profile=sso_profile(args.sso_session, args.profile),
                      sso_session=args.sso_session, role_arn=args.role_arn)
        keys = None
    elif args.profile:
        login = Login("profile", region, profile=args.profile, role_arn=args.role_arn)
        keys = None
    else:
        secretstore.backend()  # fail before asking for secrets we could not keep
        login = Login("keys", region, role_arn=args.role_arn)
        keys = _read_keys(args)
    session = base_session(login, keys)
    identity = caller_identity(session, login)
    if login.role_arn:
        _check_role(session, login)
    if keys is not None:
        parts = secretstore.store(KEYRING_NAME, keys.to_json())
        where = f"the OS keyring ({secretstore.backend_name()}" + (f", {parts} entries)" if parts > 1 else ")")
    else:
        try:  # switching to a profile: no stale keys left behind in the keyring
            secretstore.delete(KEYRING_NAME)
        except secretstore.KeyringUnavailable:
            pass
        where = f"nothing secret stored: RECC uses the AWS profile {login.profile!r}"
    path = save_login(login)
    daemon = _tell_daemon()
    print(f"logged in as {identity['arn']} (account {identity['account']})")
    print(f"  credentials: {where}; settings: {path}")
    if login.role_arn:
        print(f"  the daemon assumes {login.role_arn} on top")
    if daemon is None:
        print("  the daemon will use them when it starts")
    return 0


def _check_role(session: Any, login: Any) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    from recc.login import explain_aws_error

    try:
        session.client("sts").assume_role(RoleArn=login.role_arn, RoleSessionName="recc-login-check",
                                          DurationSeconds=900)
    except (ClientError, BotoCoreError) as exc:
        err = explain_aws_error(exc, login)
        raise RECCError(f"could not assume {login.role_arn}: {err.message}",
                        hint="check the role's trust policy, or log in without --role-arn") from None


def cmd_logout(args: argparse.Namespace) -> int:
    from recc import secretstore
    from recc.login import KEYRING_NAME, load_login, remove_login

    try:
        login = load_login()
    except RECCError:
        login = None
    removed = []
    if login is None or login.source == "keys":
        try:
            if secretstore.delete(KEYRING_NAME):
                removed.append("the AWS keys in the OS keyring")
        except secretstore.KeyringUnavailable:
            if login is not None:
                raise
    if remove_login():
        removed.append("the login settings")
    _tell_daemon()
    print(("logged out: removed " + " and ".join(removed)) if removed else "not logged in: nothing to remove")
    if login is not None and login.source == "sso":
        print("  (your SSO session itself is untouched: `aws sso logout` ends it)")
    return 0


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    left = epoch - time.time()
    stamp = dt.datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return f"{stamp} (in {left / 60:.0f} min)" if left > 0 else f"{stamp} (expired)"


def cmd_whoami(args: argparse.Namespace) -> int:
    from recc.daemon_client import DaemonClient

    status = DaemonClient.connect(start=True, quiet=args.json).credentials(check=True)
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
        return 0 if status.get("state") == "ok" else 1
    if status.get("state") != "ok":
        print(f"recc: {status.get('message') or 'no AWS credentials'}", file=sys.stderr)
        if status.get("hint"):
            print(f"  hint: {status['hint']}", file=sys.stderr)
        return 1
    who = status["identity"]
    source = {"keys": "access keys in the OS keyring", "profile": "AWS profile", "sso": "AWS SSO",
              "chain": "the standard AWS chain (no recc login)"}.get(status["source"], status["source"])
    login = status.get("login") or {}
    print(f"{who['arn']}")
    print(f"  account {who['account']}, via {source}"
          + (f" {login.get('profile')!r}" if login.get("profile") else ""))
    print(f"  session expires {_when(status.get('expires_at'))}; renewed from {_when(status.get('refresh_at'))}")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    from recc.awscreds import endpoint_env, shell_lines
    from recc.daemon_client import DaemonClient

    info = DaemonClient.connect(start=True, quiet=True).health()
    env = endpoint_env(info)
    if not env:
        raise RECCError("this daemon serves no AWS credentials endpoint", hint="upgrade RECC and restart the daemon")
    print(shell_lines(env, args.shell))
    return 0


def add_commands(command: Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]
                 ) -> None:
    """Register the commands with ``recc``'s parser (``command(name, fn, help)``)."""
    p = command("login", cmd_login, "store AWS credentials for the daemon (keys go to the OS keyring only)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--sso-session", metavar="NAME", help="use an [sso-session] from ~/.aws/config")
    p.add_argument("--profile", metavar="NAME",
                   help="use this AWS profile (with --sso-session: the profile that names the account and role)")
    p.add_argument("--region", help="AWS region for STS (default: AWS_REGION, else us-east-1)")
    p.add_argument("--role-arn", help="a role the daemon assumes with these credentials")

    command("logout", cmd_logout, "remove the stored AWS credentials and make the daemon forget its sessions")

    p = command("whoami", cmd_whoami, "the AWS identity the daemon uses and when its session expires")
    p.add_argument("--json", action="store_true")

    p = command("env", cmd_env, "print the variables that give a shell's AWS tools the daemon's credentials")
    p.add_argument("--shell", choices=["posix", "powershell"],
                   help="output form (default: powershell on Windows, else posix)")
