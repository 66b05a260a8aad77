"""EKS bearer tokens and the provisioner session (docs/eks.md, facts.md section 2).

`make_token` does what ``aws eks get-token`` does: presign an STS ``GetCallerIdentity`` GET
for ``https://sts.<region>.amazonaws.com`` (always the real regional endpoint, even when
``AWS_ENDPOINT_URL`` points at a test server: EKS checks the URL against real STS) with the
signed header ``x-k8s-aws-id: <cluster>``, then ``k8s-aws-v1.`` + unpadded base64url.
`TokenCache` makes a new one 14 minutes after the last (tokens live 15).
`assume_provisioner` assumes the context's provisioner role with the session tag ``recc:user``.
"""

from __future__ import annotations

import base64
import threading
import time
from typing import Any, Callable

from recc.errors import ProviderError

TOKEN_PREFIX = "k8s-aws-v1."
CLUSTER_HEADER = "x-k8s-aws-id"
PRESIGN_EXPIRES = 60  # what the AWS CLI asks; STS gives every presigned URL 15 minutes anyway
TOKEN_LIFETIME = 15 * 60
REFRESH_AFTER = 14 * 60
USER_TAG = "recc:user"


def make_token(session: Any, cluster_name: str, *, region: str | None = None,
               now: Callable[[], float] = time.time) -> tuple[str, float]:
    """``(token, expires_at)`` for ``cluster_name`` from a boto3 session; ``expires_at`` is epoch
    seconds 14 minutes from now (when a client should make a new one)."""
    import boto3
    import botocore.session

    if isinstance(session, botocore.session.Session):
        session = boto3.Session(botocore_session=session)
    region = region or session.region_name or "us-east-1"
    made = now()
    sts = session.client("sts", region_name=region, endpoint_url=f"https://sts.{region}.amazonaws.com")

    def add_cluster_header(request: Any, **_: Any) -> None:
        request.headers[CLUSTER_HEADER] = cluster_name

    sts.meta.events.register("before-sign.sts.GetCallerIdentity", add_cluster_header)
    url = sts.generate_presigned_url("get_caller_identity", Params={}, ExpiresIn=PRESIGN_EXPIRES, HttpMethod="GET")
    token = TOKEN_PREFIX + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")
    return token, made + REFRESH_AFTER


class TokenCache:
    """One token at a time per cluster, remade 14 minutes after it was made (or on `invalidate`)."""

    def __init__(self, session_factory: Callable[[], Any], cluster_name: str, *, region: str | None = None,
                 now: Callable[[], float] = time.time) -> None:
        self._session_factory = session_factory
        self.cluster_name, self.region, self._now = cluster_name, region, now
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()
        self.made = 0  # tokens made so far

    def get(self) -> str:
        with self._lock:
            if self._token is None or self._now() >= self._expires:
                self._token, self._expires = make_token(self._session_factory(), self.cluster_name,
                                                        region=self.region, now=self._now)
                self.made += 1
            return self._token

    def invalidate(self) -> None:
        """Forget the token (the API server said 401): the next `get` makes a new one."""
        with self._lock:
            self._token, self._expires = None, 0.0

    def bearer(self) -> str:
        return "Bearer " + self.get()


def assume_provisioner(base: Any, role_arn: str, user: str, *, region: str | None = None,
                       duration: int = 3600, endpoint_url: str | None = None) -> Any:
    """A boto3 session for ``role_arn`` assumed with session tag ``recc:user=<user>`` (transitive).

    The credentials refresh themselves before they expire (botocore RefreshableCredentials)."""
    import boto3
    import botocore.session
    from botocore.credentials import RefreshableCredentials
    from botocore.exceptions import BotoCoreError, ClientError

    region = region or base.region_name or "us-east-1"
    sts = base.client("sts", region_name=region, **({"endpoint_url": endpoint_url} if endpoint_url else {}))
    session_name = "recc-" + "".join(c if c.isalnum() or c in "+=,.@-" else "-" for c in user)[:58]

    def fetch() -> dict[str, Any]:
        try:
            resp = sts.assume_role(RoleArn=role_arn, RoleSessionName=session_name, DurationSeconds=duration,
                                   Tags=[{"Key": USER_TAG, "Value": user}], TransitiveTagKeys=[USER_TAG])
        except (ClientError, BotoCoreError) as e:
            raise ProviderError(f"could not assume the provisioner role {role_arn}: {e}",
                                hint="check your AWS login (aws sso login) and that you may assume that role "
                                     "with the recc:user session tag") from e
        c = resp["Credentials"]
        return {"access_key": c["AccessKeyId"], "secret_key": c["SecretAccessKey"], "token": c["SessionToken"],
                "expiry_time": c["Expiration"].isoformat()}

    creds = RefreshableCredentials.create_from_metadata(metadata=fetch(), refresh_using=fetch,
                                                         method="sts-assume-role")
    core = botocore.session.Session()
    core._credentials = creds  # the documented-in-practice way to give a session refreshable credentials
    core.set_config_variable("region", region)
    return boto3.Session(botocore_session=core, region_name=region)
