"""AWS credentials for the user's own processes, from the daemon (docs/credentials.md).

The daemon serves the AWS container-credentials endpoint (``reccd/credserver.py``). A
process that has no credentials of its own points boto3 / s3fs at it with two environment
variables; `use_daemon_credentials` does that for the current process (RSHClient and S3
datastores call it), `shell_lines` prints them for a shell (``recc env``).

"No credentials of its own" is checked with the standard chain first (environment,
shared files, profiles, SSO, credential_process), without the two network lookups (the
container endpoint itself and the EC2 instance metadata service), so an explicit
``AWS_PROFILE`` or key always wins. ``RECC_AWS_CREDENTIALS=off`` turns this off.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Mapping

from recc.paths import runtime_dir

URI_VAR = "AWS_CONTAINER_CREDENTIALS_FULL_URI"
TOKEN_FILE_VAR = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
CONTAINER_VARS = (URI_VAR, TOKEN_FILE_VAR, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                  "AWS_CONTAINER_AUTHORIZATION_TOKEN")


def standard_chain_has_credentials() -> bool:
    """Does boto3's chain find credentials here without asking a network service?"""
    import botocore.session
    from botocore.exceptions import BotoCoreError

    session = botocore.session.Session()
    resolver = session.get_component("credential_provider")
    for name in ("container", "iam-role"):  # the endpoint we would set, and EC2's IMDS (a network call)
        try:
            resolver.remove(name)
        except (KeyError, ValueError):
            pass
    try:
        return resolver.load_credentials() is not None
    except BotoCoreError:  # a broken profile still counts as configured: do not paper over it
        return True


def endpoint_env(info: Mapping[str, Any]) -> dict[str, str]:
    """The two variables for the daemon whose health/info is ``info`` ({} if it serves no endpoint)."""
    aws = info.get("aws_credentials") or info.get("endpoint") or {}
    if not aws.get("url") or not aws.get("token_file"):
        return {}
    return {URI_VAR: aws["url"], TOKEN_FILE_VAR: aws["token_file"]}


def _running_daemon_info() -> dict[str, Any] | None:
    """The info file of a running per-user daemon (without starting one)."""
    from recc.daemon_client import DaemonClient

    client = DaemonClient()
    try:
        return client.health(timeout=2.0)
    except Exception:  # noqa: BLE001 - no daemon: nothing to point at
        return None


def use_daemon_credentials(start: bool | None = None) -> bool:
    """Point this process's AWS SDKs at the daemon when nothing else gives credentials.

    Returns True if it set the variables. ``start``: start the daemon if none runs (default:
    only when `recc login` configured credentials, since then the daemon is the only way to them).
    """
    if os.environ.get("RECC_AWS_CREDENTIALS", "").lower() in ("0", "off", "no", "false"):
        return False
    if any(os.environ.get(v) for v in CONTAINER_VARS):
        return False
    if standard_chain_has_credentials():
        return False
    info = _running_daemon_info()
    if info is None:
        from recc.login import login_path

        if start is False or (start is None and not login_path().exists()):
            return False
        from recc.daemon_client import DaemonClient

        try:
            info = DaemonClient.connect(start=True, quiet=True).health()
        except Exception:  # noqa: BLE001 - credentials are a convenience here; the caller's AWS call will say
            return False
    env = endpoint_env(info)
    os.environ.update(env)
    return bool(env)


def shell_lines(env: Mapping[str, str], shell: str | None = None) -> str:
    """``export`` lines (POSIX shells) or ``$env:`` lines (PowerShell) for ``env``."""
    shell = shell or ("powershell" if sys.platform == "win32" else "posix")
    lines = []
    if shell == "powershell":
        for key, value in env.items():
            lines.append(f"$env:{key} = '{value.replace(chr(39), chr(39) * 2)}'")
        lines.append("Remove-Item Env:AWS_CONTAINER_CREDENTIALS_RELATIVE_URI -ErrorAction SilentlyContinue")
    else:
        import shlex

        for key, value in env.items():
            lines.append(f"export {key}={shlex.quote(value)}")
        lines.append("unset AWS_CONTAINER_CREDENTIALS_RELATIVE_URI  # it would win over the full URI")
    return "\n".join(lines)


def info_file_env() -> dict[str, str]:
    """The variables from the daemon's info file alone (no request): {} when no daemon wrote one."""
    try:
        return endpoint_env(json.loads((runtime_dir() / "reccd.json").read_text()))
    except (OSError, ValueError):
        return {}
