"""Environments for credential tests: moto for AWS, a keyring file chosen explicitly, no real AWS config.

The keyring is ``keyrings.alt``'s file backend selected with ``PYTHON_KEYRING_BACKEND`` (an explicit
test choice, which RECC accepts; it refuses the same backend when ``keyring`` picks it on its own),
with its file under a private ``XDG_DATA_HOME``. ``AWS_CONFIG_FILE`` / ``AWS_SHARED_CREDENTIALS_FILE``
point into the test's folder so the developer's own ``~/.aws`` never takes part.
"""

from __future__ import annotations

import os
import secrets
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

TEST_KEYRING = "keyrings.alt.file.PlaintextKeyring"
AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_ROLE_ARN",
            "AWS_WEB_IDENTITY_TOKEN_FILE")


def auth_env(dirs: dict[str, str], moto_url: str, **extra: str) -> dict[str, str]:
    """The environment for `recc` / `reccd` subprocesses: RECC folders, moto, the test keyring, no AWS keys."""
    base = Path(dirs["_base"])
    env = {k: v for k, v in os.environ.items() if k not in AWS_VARS}
    env.update({k: v for k, v in dirs.items() if not k.startswith("_")})
    env.pop("RECC_DAEMON", None)
    env.update(AWS_ENDPOINT_URL=moto_url, AWS_DEFAULT_REGION="us-east-1",
               AWS_CONFIG_FILE=str(base / "aws" / "config"), AWS_SHARED_CREDENTIALS_FILE=str(base / "aws" / "creds"),
               AWS_EC2_METADATA_DISABLED="true", PYTHON_KEYRING_BACKEND=TEST_KEYRING,
               XDG_DATA_HOME=str(base / "xdg-data"), XDG_CONFIG_HOME=str(base / "xdg-config"))
    env.update(extra)
    return env


def random_keys() -> tuple[str, str, str]:
    """A unique access key id, secret and session token (so a scan finds only these)."""
    upper = string.ascii_uppercase + string.digits
    akid = "AKIA" + "".join(secrets.choice(upper) for _ in range(16))
    secret = secrets.token_urlsafe(30)
    token = "IQoJ" + secrets.token_urlsafe(1000)  # session tokens with tags run past 1,280 characters: 2 parts
    return akid, secret, token


def recc(env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 120) -> Any:
    """Run the ``recc`` command; returns the CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "recc.cli", *args], env=env, input=stdin if stdin is not None else "",
                          capture_output=True, text=True, timeout=timeout)
