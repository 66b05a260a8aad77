"""EKS bearer tokens: `make_token` (as ``aws eks get-token`` builds them) and `TokenVerifier`.

The verifier applies the offline checks 1-4 of aws-iam-authenticator's ``tokenVerifier.Verify``
(facts.md section 2) against an injectable `Clock`. It cannot ask STS (check 5), so it
cannot see the value of the signed ``x-k8s-aws-id`` header in general; when it knows the
secret key of the token's access key (``known_secrets``, e.g. moto's static test keys) it
recomputes the SigV4 signature with ``x-k8s-aws-id: <this fake's cluster name>``, which
proves the token was made for this cluster.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

from tests.fakekube.clock import Clock
from tests.fakekube.errors import ApiError

TOKEN_PREFIX = "k8s-aws-v1."
MAX_TOKEN_LEN = 4096
PRESIGN_EXPIRES = 60            # what the AWS CLI puts in X-Amz-Expires
TOKEN_LIFETIME = timedelta(minutes=15)
CLUSTER_HEADER = "x-k8s-aws-id"
ALLOWED_KEYS = {"action", "version", "x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-expires",
                "x-amz-security-token", "x-amz-signature", "x-amz-signedheaders"}
# Regional, global, FIPS and dual-stack STS hosts of the commercial, China and GovCloud partitions.
_STS_HOST = re.compile(r"^sts(-fips)?(\.[a-z0-9-]+)?\.(amazonaws\.com|amazonaws\.com\.cn|api\.aws)$")


def make_token(cluster_name: str, session: Any = None, *, region: str | None = None) -> str:
    """An EKS token for ``cluster_name`` from a boto3 (or botocore) session, like ``aws eks get-token``.

    The URL is presigned for the regional STS endpoint ``https://sts.<region>.amazonaws.com``
    even when ``AWS_ENDPOINT_URL`` points at moto: presigning needs no network, and EKS
    verifies the token against real STS, so a token must never name a local endpoint.
    """
    import boto3
    import botocore.session

    if session is None:
        session = boto3.Session()
    if isinstance(session, botocore.session.Session):
        session = boto3.Session(botocore_session=session)
    region = region or session.region_name or "us-east-1"
    sts = session.client("sts", region_name=region, endpoint_url=f"https://sts.{region}.amazonaws.com")

    def add_cluster_header(request: Any, **_: Any) -> None:
        request.headers[CLUSTER_HEADER] = cluster_name

    sts.meta.events.register("before-sign.sts.GetCallerIdentity", add_cluster_header)
    url = sts.generate_presigned_url("get_caller_identity", Params={}, ExpiresIn=PRESIGN_EXPIRES,
                                     HttpMethod="GET")
    return TOKEN_PREFIX + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


class TokenVerifier:
    def __init__(self, cluster_name: str, clock: Clock, known_secrets: Mapping[str, str] | None = None):
        self.cluster_name = cluster_name
        self.clock = clock
        self.known_secrets = dict(known_secrets or {})
        self.not_before: datetime | None = None   # see expire_tokens

    def expire_tokens(self, before: datetime | None = None) -> datetime:
        """Treat every token dated before ``before`` (default: now by the clock) as expired.

        Unlike advancing the clock, tokens made afterwards are accepted again (X-Amz-Date has
        whole seconds, so make the new one at least a second later), which is what a test of
        "the client refreshes an expired token" needs.
        """
        self.not_before = before or self.clock.now()
        return self.not_before

    def check_header(self, header: str | None) -> str:
        """The ``Authorization`` header -> the access key id; `ApiError` 401 otherwise."""
        if not header or not header.startswith("Bearer "):
            raise ApiError.unauthorized("no bearer token")
        return self.verify(header[len("Bearer "):].strip())

    def verify(self, token: str) -> str:
        if len(token.encode()) > MAX_TOKEN_LEN:
            raise ApiError.unauthorized("token is too large")
        if not token.startswith(TOKEN_PREFIX):
            raise ApiError.unauthorized(f"token is missing expected {TOKEN_PREFIX!r} prefix")
        body = token[len(TOKEN_PREFIX):]
        if "=" in body or not re.fullmatch(r"[A-Za-z0-9_-]*", body):
            raise ApiError.unauthorized("token is not base64url (RawURLEncoding)")
        try:
            url = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            raise ApiError.unauthorized("token does not decode") from None
        parts = urlsplit(url)
        if parts.scheme != "https":
            raise ApiError.unauthorized(f"unexpected scheme {parts.scheme!r} in pre-signed URL")
        if not _STS_HOST.match(parts.hostname or "") or parts.port not in (None, 443):
            raise ApiError.unauthorized(f"unexpected hostname {parts.netloc!r} in pre-signed URL")
        if parts.path != "/":
            raise ApiError.unauthorized("unexpected path in pre-signed URL")
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        query: dict[str, str] = {}
        for key, value in pairs:
            low = key.lower()
            if low in query:
                raise ApiError.unauthorized(f"duplicate query parameter {key!r}")
            if low not in ALLOWED_KEYS:
                raise ApiError.unauthorized(f"non-whitelisted query parameter {key!r}")
            query[low] = value
        if query.get("action") != "GetCallerIdentity":
            raise ApiError.unauthorized("unexpected action parameter in pre-signed URL")
        signed = query.get("x-amz-signedheaders", "").lower().split(";")
        if CLUSTER_HEADER not in signed:
            raise ApiError.unauthorized(f"client did not sign the {CLUSTER_HEADER} header in the pre-signed URL")
        try:
            expires = int(query.get("x-amz-expires", ""))
        except ValueError:
            raise ApiError.unauthorized("X-Amz-Expires is not a number") from None
        if not 0 <= expires <= 900:
            raise ApiError.unauthorized(f"X-Amz-Expires parameter out of range: {expires}")
        try:
            date = datetime.strptime(query.get("x-amz-date", ""), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            raise ApiError.unauthorized("X-Amz-Date parameter is missing or malformed") from None
        if self.clock.now() > date + TOKEN_LIFETIME:
            raise ApiError.unauthorized(f"X-Amz-Date parameter is expired ({TOKEN_LIFETIME} after "
                                        f"{date:%Y-%m-%dT%H:%M:%SZ})")
        if self.not_before is not None and date <= self.not_before.replace(microsecond=0):
            raise ApiError.unauthorized(f"X-Amz-Date parameter is expired (the test expired tokens dated up "
                                        f"to {self.not_before:%Y-%m-%dT%H:%M:%SZ})")
        access_key = unquote(query.get("x-amz-credential", "")).split("/", 1)[0]
        secret = self.known_secrets.get(access_key)
        if secret is not None and not self._signature_ok(parts, secret, signed):
            raise ApiError.unauthorized(f"the token was not signed for cluster {self.cluster_name!r}")
        return access_key

    def _signature_ok(self, parts: Any, secret: str, signed: list[str]) -> bool:
        """Recompute the SigV4 query signature with this fake's cluster name in x-k8s-aws-id."""
        raw = [p.partition("=") for p in parts.query.split("&")]
        signature = next((v for k, _, v in raw if k == "X-Amz-Signature"), "")
        canonical_query = "&".join(f"{k}={v}" for k, _, v in sorted((k, s, v) for k, s, v in raw
                                                                       if k != "X-Amz-Signature"))
        values = {"host": parts.netloc, CLUSTER_HEADER: self.cluster_name}
        if any(h not in values for h in signed):
            return False
        headers = "".join(f"{h}:{values[h]}\n" for h in signed)
        q = {k.lower(): unquote(v) for k, _, v in raw}
        date, scope = q["x-amz-date"], q["x-amz-credential"].split("/", 1)[1]
        _, region, service, _ = scope.split("/")
        for payload in ("UNSIGNED-PAYLOAD", hashlib.sha256(b"").hexdigest()):
            canonical = "\n".join(["GET", "/", canonical_query, headers, ";".join(signed), payload])
            to_sign = "\n".join(["AWS4-HMAC-SHA256", date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
            key = f"AWS4{secret}".encode()
            for part in (date[:8], region, service, "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            if hmac.compare_digest(hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), signature):
                return True
        return False
