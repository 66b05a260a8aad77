"""The eks provider's connections: an AWS session (the context's provisioner role assumed with a
session tag naming the user), a Kubernetes client with a refreshed EKS bearer token, and every
call through one place that retries throttling and transient errors with jittered backoff, maps
permanent ones to `ProviderError`s with a hint, and counts calls (``bench/`` reports them)."""

from __future__ import annotations

import asyncio
import getpass
import json
import random
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from recc.errors import ProviderError, RECCError
from reccd.contexts import Context, load_context
from reccd.ekstoken import TokenCache, assume_provisioner
from reccd.faults import maybe_fail

RETRY_CODES = {429, 500, 502, 503, 504}
AWS_RETRY = ("Throttling", "ThrottlingException", "RequestLimitExceeded", "ServiceUnavailable",
             "InternalFailure", "InternalError")


class EksApis:
    """AWS and Kubernetes clients for one context and user; blocking calls, run them in threads."""

    def __init__(self, workdir: Path | str | None = None, context: Context | str | None = None, *,
                 user: str | None = None, session_factory: Callable[[], Any] | None = None) -> None:
        self.workdir = Path(workdir) if workdir is not None else None
        self._context_arg = context
        self._ctx: Context | None = context if isinstance(context, Context) else None
        self.user = user or getpass.getuser()
        self._session_factory = session_factory
        self._session: Any = None
        self._tokens: TokenCache | None = None
        self._api: Any = None
        self.calls = {"aws": 0, "k8s": 0}
        self._clients: dict[str, Any] = {}
        self.side_effects = 0
        self.pf_lock = threading.Lock()  # one port-forward opening at a time on the "pf" client

    @property
    def context(self) -> Context:
        if self._ctx is None:
            self._ctx = load_context(self._context_arg if isinstance(self._context_arg, str) else None)
        return self._ctx

    def session(self) -> Any:
        if self._session is None:
            import boto3

            ctx = self.context
            base = (self._session_factory() if self._session_factory
                    else boto3.Session(profile_name=ctx.profile, region_name=ctx.region))
            self._session = (assume_provisioner(base, ctx.provisioner_role_arn, self.user, region=ctx.region)
                             if ctx.provisioner_role_arn else base)
        return self._session

    def client(self, service: str) -> Any:
        # One client per service: making one costs tens of milliseconds (endpoint and model loading),
        # more than most calls; boto3 clients are safe to share between threads.
        made = self._clients.get(service)
        if made is None:
            made = self._clients[service] = self.session().client(service, region_name=self.context.region)
        return made

    def api(self) -> Any:
        if self._api is None:
            from kubernetes import client

            ctx = self.context
            ctx.require("eks_cluster")
            host, ca = ctx.kubernetes_api_url, ctx.kubernetes_ca_file
            if not host:
                info = self.client("eks").describe_cluster(name=ctx.eks_cluster)["cluster"]
                host = info["endpoint"]
                if not ca and info.get("certificateAuthority", {}).get("data") and self.workdir is not None:
                    import base64

                    self.workdir.mkdir(parents=True, exist_ok=True)
                    ca_path = self.workdir / f"{ctx.eks_cluster}-ca.pem"
                    ca_path.write_bytes(base64.b64decode(info["certificateAuthority"]["data"]))
                    ca = str(ca_path)
            tokens = self._tokens = TokenCache(self.session, ctx.eks_cluster, region=ctx.region)
            cfg = client.Configuration(host=host)
            cfg.verify_ssl = ctx.kubernetes_verify_ssl
            if ca:
                cfg.ssl_ca_cert = ca
            cfg.api_key = {"authorization": ""}

            def refresh(c: Any) -> None:
                c.api_key["authorization"] = tokens.bearer()

            cfg.refresh_api_key_hook = refresh
            api_client = client.ApiClient(cfg)
            # kubernetes.stream swaps ``request`` on the ApiClient it is given while it opens a
            # websocket, so port-forwards get their own client (and a lock): a concurrent call on
            # a shared one would be sent as a websocket upgrade.
            pf_client = client.ApiClient(cfg)
            self._api = {"client": api_client, "pf_client": pf_client, "pf": client.CoreV1Api(pf_client),
                         "core": client.CoreV1Api(api_client),
                         "apps": client.AppsV1Api(api_client), "rbac": client.RbacAuthorizationV1Api(api_client),
                         "net": client.NetworkingV1Api(api_client), "coord": client.CoordinationV1Api(api_client)}
        return self._api

    def k8s_sync(self, group: str, method: str, *args: Any, ok: Sequence[int] = (), as_json: bool = False,
                 **kwargs: Any) -> Any:
        """One Kubernetes call (in the calling thread): 401 makes a new token once; throttling and
        5xx retry with jittered backoff; statuses in ``ok`` return None. ``as_json`` returns the
        answer as plain JSON (camelCase keys): the client's typed models take ~5 ms per pod to
        build, which a progress round over 300 pods would pay every poll."""
        from kubernetes.client.rest import ApiException

        delay, refreshed = 0.2, False
        raw = method.startswith("delete") or as_json
        if raw:  # delete answers an object or a Status, which the typed models cannot both parse
            kwargs.setdefault("_preload_content", False)
        for attempt in range(6):
            self.calls["k8s"] += 1
            try:
                result = getattr(self.api()[group], method)(*args, **kwargs)
                if raw:
                    data = result.read()
                    result.release_conn()
                    return json.loads(data) if as_json else True
                return result
            except ApiException as e:
                if e.status in ok:
                    return None
                if e.status == 401 and not refreshed and self._tokens is not None:
                    self._tokens.invalidate()
                    refreshed = True
                    continue
                if e.status in RETRY_CODES and attempt < 5:
                    time.sleep(delay * random.uniform(0.5, 1.5))
                    delay = min(delay * 2, 5.0)
                    continue
                raise _k8s_error(e, method) from None
            except Exception as e:  # urllib3 connection errors
                if isinstance(e, RECCError) or not _transient(e):
                    raise
                if attempt < 5:
                    time.sleep(delay * random.uniform(0.5, 1.5))
                    delay = min(delay * 2, 5.0)
                    continue
                raise ProviderError(f"the Kubernetes API did not answer {method}: {e}",
                                    hint="check the context's kubernetes_api_url and your network") from e
        raise AssertionError("unreachable")

    def aws_sync(self, service: str, method: str, ok: Sequence[str] = (), **kwargs: Any) -> Any:
        from botocore.exceptions import ClientError

        delay = 0.2
        for attempt in range(6):
            self.calls["aws"] += 1
            try:
                return getattr(self.client(service), method)(**kwargs)
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code", "")
                if code in ok:
                    return None
                if code in AWS_RETRY and attempt < 5:
                    time.sleep(delay * random.uniform(0.5, 1.5))
                    delay = min(delay * 2, 5.0)
                    continue
                raise ProviderError(f"AWS {service}.{method} failed: {code}: {e.response['Error'].get('Message')}",
                                    hint="check the context (docs/eks.md) and the provisioner role's policy") from e
        raise AssertionError("unreachable")

    async def k8s(self, group: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """`k8s_sync` in a worker thread."""
        return await asyncio.to_thread(self.k8s_sync, group, method, *args, **kwargs)

    async def aws(self, service: str, method: str, **kwargs: Any) -> Any:
        """`aws_sync` in a worker thread."""
        return await asyncio.to_thread(self.aws_sync, service, method, **kwargs)

    async def apply(self, obj: dict[str, Any], update: bool = False) -> None:
        """Create ``obj``; if it exists, patch it when ``update`` (sizes converge), else leave it."""
        group, snake = _api_of(obj)
        ns = obj["metadata"].get("namespace")
        args = (ns,) if ns else ()
        made = await self.k8s(group, f"create{'_namespaced' if ns else ''}_{snake}", *args, obj, ok=(409,))
        if made is None and update:
            await self.k8s(group, f"patch{'_namespaced' if ns else ''}_{snake}", obj["metadata"]["name"], *args, obj)
        self.side_effect_done()

    def side_effect_done(self) -> None:
        """Count a side effect; ``RECC_FAULT=eks:after-side-effect=N:exit`` (tests) dies right after the Nth,
        before the step that made it is journaled."""
        self.side_effects += 1
        maybe_fail("eks", "after-side-effect", self.side_effects)

    def bearer(self) -> str:
        """A current ``Bearer k8s-aws-v1...`` header value (for calls made outside `k8s_sync`)."""
        self.api()
        assert self._tokens is not None
        return self._tokens.bearer()

    async def close_api(self) -> None:
        """Close the Kubernetes client (a later call opens a new one)."""
        if self._api is not None:
            await asyncio.to_thread(self._api["client"].close)
            await asyncio.to_thread(self._api["pf_client"].close)
            self._api = None


def _api_of(obj: dict[str, Any]) -> tuple[str, str]:
    kind = obj["kind"]
    group = {"v1": "core", "apps/v1": "apps", "networking.k8s.io/v1": "net",
             "rbac.authorization.k8s.io/v1": "rbac", "coordination.k8s.io/v1": "coord"}[obj["apiVersion"]]
    snake = "".join("_" + c.lower() if c.isupper() else c for c in kind).lstrip("_")
    return group, snake


def _transient(e: BaseException) -> bool:
    text = type(e).__name__ + str(e)
    return any(w in text for w in ("MaxRetryError", "ProtocolError", "Connection", "Timeout", "timed out"))


def _k8s_error(e: Any, method: str) -> ProviderError:
    import json

    try:
        message = json.loads(e.body).get("message") or e.reason
    except (TypeError, ValueError, AttributeError):
        message = e.reason
    hints = {401: "the EKS token was refused: check the context's eks_cluster and your AWS login",
             403: "forbidden: the provisioner role's Kubernetes group lacks this right, or a quota is exceeded",
             422: "the object was invalid; this is a bug in RECC's manifests"}
    return ProviderError(f"Kubernetes {method} failed ({e.status}): {message}",
                         hint=hints.get(e.status, "see the message; retrying may help"))
