"""What `recc login` configured, and the AWS session it stands for (no secrets here).

The non-secret half of a login lives in ``login.yaml`` in the user's config folder (a file
of its own, so rewriting it never disturbs comments in ``config.yaml``)::

    source: keys            # keys (in the keyring) | profile | sso
    region: us-east-1
    profile: research       # source profile / sso: the AWS profile to use
    sso_session: corp       # source sso: the [sso-session] the profile uses
    role_arn: arn:aws:iam::111122223333:role/researcher   # optional: assume it on top

The secret half (access key id, secret access key, optional session token) is one JSON
value in the keyring under ``aws`` (`recc.secretstore`). Both the ``recc`` command (to
verify a login) and the daemon (to use it) build sessions from here.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from recc.config import read_yaml_mapping
from recc.errors import RECCError, SpecError
from recc.paths import config_dir, write_private_file

LOGIN_FILE = "login.yaml"
KEYRING_NAME = "aws"
SOURCES = ("keys", "profile", "sso")


class NeedsReauthentication(RECCError):
    """The stored credentials no longer work (expired, revoked, SSO token gone): a person must log in again."""

    code = "needs-reauthentication"
    http_status = 401


@dataclass(frozen=True)
class Login:
    source: str
    region: str = "us-east-1"
    profile: str | None = None
    sso_session: str | None = None
    role_arn: str | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise SpecError(f"{login_path()}: source must be one of {', '.join(SOURCES)}, got {self.source!r}",
                            hint="run `recc login` again")
        if self.source in ("profile", "sso") and not self.profile:
            raise SpecError(f"{login_path()}: source {self.source} needs a profile", hint="run `recc login` again")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def fix(self) -> str:
        """What a person runs to log in again."""
        if self.source == "sso":
            return f"run `aws sso login --sso-session {self.sso_session}` (then nothing else: RECC picks it up)"
        if self.source == "profile":
            return f"refresh the AWS profile {self.profile!r} (e.g. `aws configure --profile {self.profile}`), " \
                   f"or run `recc login` with new keys"
        return "run `recc login` with a valid access key pair"


def login_path() -> Path:
    return config_dir() / LOGIN_FILE


def load_login() -> Login | None:
    """The configured login, or None (then the daemon uses the standard AWS chain)."""
    data = read_yaml_mapping(login_path(), hint="run `recc login` again", shape="must be a mapping",
                             example="source: profile")
    if not data:
        return None
    known = {"source", "region", "profile", "sso_session", "role_arn"}
    return Login(**{k: v for k, v in data.items() if k in known})


def save_login(login: Login) -> Path:
    path = login_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private_file(path, "# written by `recc login`; no secrets here (they are in the OS keyring)\n"
                       + yaml.safe_dump(login.to_dict(), sort_keys=False))
    return path


def remove_login() -> bool:
    try:
        login_path().unlink()
        return True
    except FileNotFoundError:
        return False


@dataclass(frozen=True)
class KeyPair:
    """The secret half of a ``keys`` login. Its repr never shows the secret."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:
        return f"KeyPair(access_key_id={self.access_key_id[:4]}..., secret=***)"

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v})

    @classmethod
    def from_json(cls, text: str) -> "KeyPair":
        try:
            data = json.loads(text)
            return cls(data["access_key_id"], data["secret_access_key"], data.get("session_token"))
        except (ValueError, KeyError, TypeError):
            raise NeedsReauthentication("the AWS keys in the keyring are not in RECC's format",
                                        hint="run `recc login` again") from None

    def check(self) -> None:
        """Shape checks that never echo the values."""
        if not (16 <= len(self.access_key_id) <= 128 and self.access_key_id.isalnum()):
            raise SpecError("that does not look like an AWS access key id (16-128 letters and digits)",
                            hint="it starts with AKIA (long-lived) or ASIA (temporary)")
        if not self.secret_access_key or any(c.isspace() for c in self.secret_access_key):
            raise SpecError("the secret access key is empty or contains spaces")
        if self.session_token is not None and any(c.isspace() for c in self.session_token):
            raise SpecError("the session token contains spaces")


def load_keys() -> KeyPair | None:
    from recc.secretstore import load

    text = load(KEYRING_NAME)
    return KeyPair.from_json(text) if text else None


def default_region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def sso_profile(sso_session: str, profile: str | None = None) -> str:
    """The AWS profile that uses ``[sso-session NAME]`` (the one named, or the only one)."""
    import botocore.session

    profiles = botocore.session.Session().full_config.get("profiles", {})
    using = sorted(n for n, p in profiles.items() if p.get("sso_session") == sso_session)
    if profile:
        if profile not in using:
            raise SpecError(f"AWS profile {profile!r} does not use sso-session {sso_session!r}",
                            hint=f"profiles that do: {', '.join(using) or 'none'}")
        return profile
    if not using:
        raise SpecError(f"no AWS profile uses sso-session {sso_session!r}",
                        hint="add one with `aws configure sso` (it names an account and a role)")
    if len(using) > 1:
        raise SpecError(f"several AWS profiles use sso-session {sso_session!r}: {', '.join(using)}",
                        hint="name one with --profile")
    return using[0]


def base_session(login: Login | None, keys: KeyPair | None = None) -> Any:
    """A boto3 session for the login's own credentials (before any AssumeRole / GetSessionToken)."""
    import boto3

    if login is None:
        return boto3.Session(region_name=default_region())
    if login.source == "keys":
        keys = keys or load_keys()
        if keys is None:
            raise NeedsReauthentication("no AWS keys are in the keyring", hint="run `recc login`")
        return boto3.Session(aws_access_key_id=keys.access_key_id, aws_secret_access_key=keys.secret_access_key,
                             aws_session_token=keys.session_token, region_name=login.region)
    return boto3.Session(profile_name=login.profile, region_name=login.region)


AUTH_ERRORS = {"InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException",
               "UnrecognizedClientException", "AccessDenied", "AccessDeniedException", "InvalidAccessKeyId",
               "UnauthorizedException", "AuthFailure"}


def explain_aws_error(exc: BaseException, login: Login | None) -> RECCError:
    """A person's error for a failed AWS call: re-authentication (with the fix) or unreachable; never secrets."""
    from botocore.exceptions import (ClientError, EndpointConnectionError, NoCredentialsError, ProfileNotFound,
                                     SSOError, TokenRetrievalError)

    fix = login.fix() if login else "run `recc login`, or configure the standard AWS chain (AWS_PROFILE, ...)"
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "error")
        if code in AUTH_ERRORS:
            return NeedsReauthentication(f"AWS refused the credentials ({code})", hint=fix)
        return RECCError(f"AWS STS answered {code}", hint="try again; see `recc doctor`")
    if isinstance(exc, (NoCredentialsError, SSOError, TokenRetrievalError)):
        return NeedsReauthentication(f"no valid AWS credentials ({type(exc).__name__})", hint=fix)
    if isinstance(exc, ProfileNotFound):
        return NeedsReauthentication(f"the AWS profile {login.profile if login else ''!s} does not exist",
                                     hint="check ~/.aws/config, then `recc login --profile NAME`")
    if isinstance(exc, EndpointConnectionError):
        return RECCError("AWS STS is not reachable from here", hint="check the network / proxy; see `recc doctor`")
    if isinstance(exc, OSError) and exc.filename:
        # botocore reads files the environment names (e.g. AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, left by an
        # earlier `recc env` whose daemon has gone) and lets the OSError through
        return RECCError(f"the AWS credentials of this environment could not be read: {exc.strerror}: "
                         f"{exc.filename}", hint="unset the AWS_* variable that names it (AWS_CONTAINER_* from "
                         f"an old `recc env`?), or {fix}")
    return RECCError(f"the AWS call failed ({type(exc).__name__})", hint="see `recc doctor`")


def caller_identity(session: Any, login: Login | None = None) -> dict[str, str]:
    """STS GetCallerIdentity: ``{"arn", "account", "user_id"}``; a person's error otherwise."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        who = session.client("sts").get_caller_identity()
    except (ClientError, BotoCoreError) as exc:
        raise explain_aws_error(exc, login) from None
    return {"arn": who["Arn"], "account": who["Account"], "user_id": who["UserId"]}
