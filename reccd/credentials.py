"""The daemon's AWS credentials: long-lived ones from the keyring (or a profile / SSO / the
standard chain), short-lived STS sessions in memory only.

`DaemonCredentials.current()` hands out a short-lived session, made on first use and again
`REFRESH_BEFORE` seconds before it expires:

- ``keys`` login: GetSessionToken with the keyring's long-lived pair (or, when the pair is
  itself temporary, i.e. has a session token, the pair as is), or AssumeRole of the login's
  ``role_arn``;
- ``profile`` / ``sso`` login, or no login (the standard chain): what botocore resolves for
  that profile (SSO role credentials, assumed roles, ...), with GetSessionToken on top when
  that turns out to be a long-lived key, or AssumeRole of ``role_arn``.

The daemon never prompts. When AWS refuses the credentials (expired, revoked, SSO token
gone) it publishes one ``credentials.reauth`` event with the fix, raises
`NeedsReauthentication` to every caller, and does not call AWS again for a back-off that
doubles from `BACKOFF_MIN` to `BACKOFF_MAX`; ``recc login`` (``POST /v1/credentials/reload``)
ends it at once.

Everything here runs in threads (boto3 is blocking); one lock keeps one refresh at a time.
"""

from __future__ import annotations

import datetime as dt
import getpass
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from recc.errors import RECCError
from recc.login import Login, NeedsReauthentication, base_session, explain_aws_error, load_login
from recc.secretstore import KeyringUnavailable

log = logging.getLogger("reccd.credentials")

DURATION = int(os.environ.get("RECC_STS_DURATION", "3600"))  # seconds a session lasts (STS minimum 900)
REFRESH_BEFORE = 20 * 60  # botocore clients refresh 15 min before expiry: be fresher than that
BACKOFF_MIN = float(os.environ.get("RECC_CREDENTIALS_BACKOFF", "30"))
BACKOFF_MAX = 15 * 60
ENDPOINT_ENV = ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN")


@dataclass(frozen=True)
class Issued:
    """One short-lived session. Its repr never shows the secret."""

    access_key: str
    secret_key: str
    token: str | None
    expires_at: float  # epoch seconds

    def __repr__(self) -> str:
        return f"Issued(expires_at={self.expires_at})"

    def expiration_iso(self) -> str:
        return dt.datetime.fromtimestamp(self.expires_at, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def detach_own_endpoint(runtime: Path) -> None:
    """Drop our own container-credentials variables from this process's environment.

    A library that set them and then started the daemon on demand hands them down; the
    daemon asking itself for credentials would wait on itself.
    """
    token_file = os.environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "")
    if token_file and Path(token_file).parent == runtime:
        for key in ENDPOINT_ENV:
            os.environ.pop(key, None)


def _epoch(value: Any) -> float:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


class DaemonCredentials:
    """Short-lived AWS sessions for the daemon and the user's processes."""

    def __init__(self, publish: Callable[..., Any] | None = None, *, duration: int = DURATION,
                 now: Callable[[], float] = time.time) -> None:
        self._publish = publish or (lambda *a, **k: None)
        self.duration, self._now = duration, now
        self._lock = threading.Lock()
        self.login: Login | None = None
        self.login_error: RECCError | None = None
        self.identity: dict[str, str] | None = None
        self._issued: Issued | None = None
        self._failure: RECCError | None = None
        self._retry_at = 0.0
        self._backoff = BACKOFF_MIN
        self._announced = False
        self.refreshes = 0
        self.reload()

    # -- configuration ---------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read the login (after `recc login` / `logout`) and forget every session held."""
        with self._lock:
            try:
                self.login, self.login_error = load_login(), None
            except RECCError as exc:
                self.login, self.login_error = None, exc
            self._forget_locked()
        self._publish("credentials.changed", source=self.source)

    def forget(self) -> None:
        """Drop the short-lived sessions (logout, shutdown)."""
        with self._lock:
            self._forget_locked()

    def _forget_locked(self) -> None:
        self._issued = None
        self.identity = None
        self._failure = None
        self._retry_at = 0.0
        self._backoff = BACKOFF_MIN
        self._announced = False

    @property
    def source(self) -> str:
        return self.login.source if self.login else "chain"

    @property
    def configured(self) -> bool:
        """Did the user run `recc login` (else the standard AWS chain applies)?"""
        return self.login is not None

    # -- sessions ---------------------------------------------------------------------------

    def current(self) -> Issued:
        """A session valid for at least `REFRESH_BEFORE` seconds (or the reason there is none)."""
        with self._lock:
            now = self._now()
            if self._issued and self._issued.expires_at - now > REFRESH_BEFORE:
                return self._issued
            if self.login_error is not None:
                raise self.login_error
            if self._failure is not None and now < self._retry_at:
                raise self._failure  # backing off: no AWS call, no new event
            try:
                issued, identity = self._issue()
            except RECCError as exc:
                if self._issued and self._issued.expires_at - now > 60:
                    log.warning("refreshing the AWS session failed (%s); the current one lasts %.0f s more",
                                exc.message, self._issued.expires_at - now)
                    self._retry_at = now + self._backoff
                    return self._issued
                self._fail(exc, now)
                raise
            self._issued, self.identity = issued, identity
            self._failure, self._retry_at, self._backoff, self._announced = None, 0.0, BACKOFF_MIN, False
            self.refreshes += 1
            log.info("new AWS session for %s (source %s), expires %s", identity.get("arn"), self.source,
                     issued.expiration_iso())
            return issued

    def _fail(self, exc: RECCError, now: float) -> None:
        self._issued = None
        self._failure = exc
        self._retry_at = now + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)
        reauth = isinstance(exc, (NeedsReauthentication, KeyringUnavailable))
        if reauth and not self._announced:
            self._announced = True  # one message per episode: the TUI and notebooks show it once
            self._publish("credentials.reauth", message=exc.message, hint=exc.hint, source=self.source)
        log.warning("AWS credentials unavailable: %s (next try in %.0f s)", exc.message, self._retry_at - now)

    def _issue(self) -> tuple[Issued, dict[str, str]]:
        """Make a new short-lived session from the login (blocking AWS calls)."""
        from botocore.exceptions import BotoCoreError, ClientError

        login = self.login
        try:
            base = base_session(login)
            sts = base.client("sts")
            if login and login.role_arn:
                user = "".join(c if c.isalnum() or c in "+=,.@-" else "-" for c in getpass.getuser())[:50]
                c = sts.assume_role(RoleArn=login.role_arn, RoleSessionName=f"recc-{user}",
                                    DurationSeconds=self.duration)["Credentials"]
                issued = Issued(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"], _epoch(c["Expiration"]))
            else:
                issued = self._from_base(base, sts)
            identity = _identity(issued, base.region_name)
        except (ClientError, BotoCoreError, OSError) as exc:  # OSError: a credentials file the chain names is gone
            raise explain_aws_error(exc, login) from None
        return issued, identity

    def _from_base(self, base: Any, sts: Any) -> Issued:
        creds = base.get_credentials()
        if creds is None:
            raise explain_aws_error(_no_credentials(), self.login)
        frozen = creds.get_frozen_credentials()
        if frozen.token:  # already temporary (SSO role, assumed role, pasted session): hand out as is
            expiry = getattr(creds, "_expiry_time", None)
            expires_at = expiry.timestamp() if expiry else self._now() + self.duration
            return Issued(frozen.access_key, frozen.secret_key, frozen.token, expires_at)
        c = sts.get_session_token(DurationSeconds=self.duration)["Credentials"]
        return Issued(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"], _epoch(c["Expiration"]))

    def session(self, region: str | None = None, fallback_profile: str | None = None) -> Any:
        """A boto3 session whose every request signs with the login's `current()` session, so a new
        login or a logout applies at once; without a login, with ``fallback_profile`` (or the chain)."""
        import boto3
        import botocore.session

        core = botocore.session.Session()
        core._credentials = _LiveCredentials(self, fallback_profile)  # noqa: SLF001 - as ekstoken does
        region = region or (self.login.region if self.login else None) or os.environ.get("AWS_REGION") \
            or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        core.set_config_variable("region", region)
        return boto3.Session(botocore_session=core, region_name=region)

    def eks_provider_args(self, asked: dict[str, Any]) -> dict[str, Any]:
        """`reccd.providers.PROVIDER_ARGS` hook: the eks provider's ``session_factory`` for its context."""
        context = asked.get("context")

        def factory() -> Any:
            from reccd.contexts import load_context

            ctx = load_context(context if isinstance(context, str) else None)
            return self.session(region=ctx.region, fallback_profile=ctx.profile)

        return {"session_factory": factory}

    # -- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What `recc whoami` shows; never a secret."""
        with self._lock:
            issued, failure = self._issued, self._failure or self.login_error
            out: dict[str, Any] = {"source": self.source, "login": self.login.to_dict() if self.login else None,
                                   "identity": self.identity, "expires_at": issued.expires_at if issued else None,
                                   "refresh_at": issued.expires_at - REFRESH_BEFORE if issued else None}
            if failure is not None:
                out.update(state="needs-reauthentication" if isinstance(
                    failure, (NeedsReauthentication, KeyringUnavailable)) else "error",
                    message=failure.message, hint=failure.hint,
                    retry_at=self._retry_at or None)
            else:
                out["state"] = "ok" if issued else "not-checked"
            return out

    def check(self) -> dict[str, Any]:
        """Make sure there is a session (AWS call if needed), then the status; errors land in the status."""
        try:
            self.current()
        except RECCError:
            pass
        return self.status()


from botocore.credentials import Credentials as _BotoCredentials  # noqa: E402 - botocore comes with boto3


class _LiveCredentials(_BotoCredentials):
    """botocore credentials that ask the daemon's `current()` on every signature (or, with no
    login, a profile's own credentials, which botocore refreshes itself).

    A subclass so botocore's other uses (deferred properties for endpoint rules) keep working;
    the base ``__init__`` is not called: the values are properties, never stored here."""

    method = "recc-daemon"

    def __init__(self, source: DaemonCredentials, fallback_profile: str | None) -> None:  # noqa: D107
        self._source = source
        self._profile = fallback_profile
        self._fallback: Any = None

    def get_frozen_credentials(self) -> Any:
        from botocore.credentials import ReadOnlyCredentials

        if not self._source.configured:
            if self._fallback is None:
                import boto3

                self._fallback = boto3.Session(profile_name=self._profile).get_credentials()
                if self._fallback is None:
                    raise explain_aws_error(_no_credentials(), None)
            return self._fallback.get_frozen_credentials()
        issued = self._source.current()
        return ReadOnlyCredentials(issued.access_key, issued.secret_key, issued.token)

    @property
    def access_key(self) -> str:
        return self.get_frozen_credentials().access_key

    @property
    def secret_key(self) -> str:
        return self.get_frozen_credentials().secret_key

    @property
    def token(self) -> str | None:
        return self.get_frozen_credentials().token

    @property
    def account_id(self) -> str | None:
        return (self._source.identity or {}).get("account") if self._source.configured else None


def _identity(issued: Issued, region: str | None) -> dict[str, str]:
    import boto3

    sts = boto3.Session(aws_access_key_id=issued.access_key, aws_secret_access_key=issued.secret_key,
                        aws_session_token=issued.token, region_name=region or "us-east-1").client("sts")
    who = sts.get_caller_identity()
    return {"arn": who["Arn"], "account": who["Account"], "user_id": who["UserId"]}


def _no_credentials() -> BaseException:
    from botocore.exceptions import NoCredentialsError

    return NoCredentialsError()
