"""The HTTP layer: authentication, discovery, and the REST routes of every kind.

Paths are parsed by hand (one catch-all route per prefix) because Kubernetes paths are
ambiguous for a router: ``/api/v1/namespaces/x/pods`` is a namespaced collection while
``/api/v1/namespaces/x/status`` is a subresource of a namespace.
"""

from __future__ import annotations

import base64
import json
import logging
from collections import Counter
from typing import Any, Awaitable, Callable

import yaml
from aiohttp import web

from tests.fakekube import kinds as K
from tests.fakekube.auth import TokenVerifier
from tests.fakekube.errors import ApiError
from tests.fakekube.patch import apply as apply_patch
from tests.fakekube.store import Store
from tests.fakekube.watch import serve_watch

log = logging.getLogger("fakekube.api")
UNAUTHENTICATED = ("/healthz", "/livez", "/readyz", "/fakekube/")
SubHandler = Callable[[web.Request, K.Kind, str, str], Awaitable[web.StreamResponse]]


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")


def error_response(err: ApiError) -> web.Response:
    return json_response(err.status(), err.code)


class Api:
    def __init__(self, store: Store, verifier: TokenVerifier):
        self.store = store
        self.verifier = verifier
        self.subresources: dict[tuple[str, str], SubHandler] = {}
        self.calls: Counter = Counter()

    def install(self, app: web.Application) -> None:
        app.middlewares.append(self._middleware)
        async def ok(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        async def version(request: web.Request) -> web.Response:
            return json_response(K.VERSION_INFO)

        async def apis(request: web.Request) -> web.Response:
            return json_response(K.api_group_list())

        for path in ("/healthz", "/livez", "/readyz"):
            app.router.add_get(path, ok)
        # The generated client asks for "/version/", "/api/", "/apis/" (trailing slash).
        for slash in ("", "/"):
            app.router.add_get("/version" + slash, version)
            app.router.add_get("/api" + slash, self._api)
            app.router.add_get("/apis" + slash, apis)
        app.router.add_route("*", "/api/{tail:.+}", self._dispatch)
        app.router.add_route("*", "/apis/{tail:.+}", self._dispatch)

    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        try:
            if not request.path.startswith(UNAUTHENTICATED):
                self.verifier.check_header(request.headers.get("Authorization"))
                self.calls[f"{request.method} {_path_shape(request.path)}"] += 1
            return await handler(request)
        except ApiError as err:
            if err.code >= 500 or err.code == 401:
                log.info("%s %s -> %s %s", request.method, request.path_qs, err.code, err.message)
            return error_response(err)
        except web.HTTPException:
            raise
        except Exception as exc:  # a bug in the fake: say so in a Status, keep serving
            log.exception("internal error on %s %s", request.method, request.path_qs)
            return error_response(ApiError(500, "InternalError", f"fakekube internal error: {exc!r}"))

    async def _api(self, request: web.Request) -> web.Response:
        return json_response(K.api_versions(request.host))

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        else:
            if len(parts) == 2:
                body = K.api_group(parts[1])
                if body is None:
                    raise ApiError(404, "NotFound", "the server could not find the requested resource")
                return json_response(body)
            group, version, rest = parts[1], parts[2], parts[3:]
        if not rest:
            body = K.resource_list(group, version)
            if body is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return json_response(body)
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and (group, version, rest[2]) in K.BY_PATH \
                and K.BY_PATH[(group, version, rest[2])].namespaced:
            namespace, rest = rest[1], rest[2:]
        kind = K.BY_PATH.get((group, version, rest[0]))
        if kind is None or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not kind.namespaced and namespace is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if len(rest) == 1:
            return await self._collection(request, kind, namespace)
        if kind.namespaced and namespace is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1]
        if len(rest) == 2:
            return await self._item(request, kind, namespace, name)
        return await self._subresource(request, kind, namespace, name, rest[2])

    # ---- collections ------------------------------------------------------------------
    async def _collection(self, request: web.Request, kind: K.Kind, namespace: str | None) -> web.StreamResponse:
        q = request.query
        if request.method == "GET":
            if q.get("watch") in ("true", "1"):
                return await serve_watch(request, self.store, kind, namespace)
            items = self.store.list(kind, namespace, q.get("labelSelector"), q.get("fieldSelector"))
            body = self.store.list_body(kind, items)
            return json_response(_paginate(body, q.get("limit"), q.get("continue")))
        if kind.namespaced and namespace is None and request.method != "GET":
            raise ApiError.method_not_allowed()
        if request.method == "POST":
            obj = self.store.create(kind, namespace, await _body(request), dry_run=_dry(request))
            return json_response(obj, 201)
        if request.method == "DELETE":
            items = self.store.list(kind, namespace, q.get("labelSelector"), q.get("fieldSelector"))
            grace = await _grace(request)
            for item in items:
                self.store.delete(kind, item["metadata"].get("namespace"), item["metadata"]["name"], grace=grace,
                                  dry_run=_dry(request))
            return json_response(self.store.list_body(kind, items))
        raise ApiError.method_not_allowed()

    async def _item(self, request: web.Request, kind: K.Kind, namespace: str | None, name: str) -> web.Response:
        m = request.method
        if m == "GET":
            return json_response(self.store.get(kind, namespace, name))
        if m == "PUT":
            return json_response(self.store.replace(kind, namespace, name, await _body(request),
                                                    dry_run=_dry(request)))
        if m == "PATCH":
            return json_response(self.store.patch(kind, namespace, name, await _body(request),
                                                  request.content_type, dry_run=_dry(request)))
        if m == "DELETE":
            return json_response(self.store.delete(kind, namespace, name, grace=await _grace(request),
                                                   dry_run=_dry(request)))
        raise ApiError.method_not_allowed()

    async def _subresource(self, request: web.Request, kind: K.Kind, namespace: str | None, name: str,
                           sub: str) -> web.StreamResponse:
        handler = self.subresources.get((kind.key, sub))
        if handler is not None:
            return await handler(request, kind, namespace or "", name)
        if sub not in kind.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        m = request.method
        if sub == "scale":
            return await self._scale(request, kind, namespace, name)
        if m == "GET":
            return json_response(self.store.get(kind, namespace, name))
        if m == "PUT":
            return json_response(self.store.replace(kind, namespace, name, await _body(request), subresource=sub))
        if m == "PATCH":
            return json_response(self.store.patch(kind, namespace, name, await _body(request), request.content_type,
                                                  subresource=sub))
        raise ApiError.method_not_allowed()

    async def _scale(self, request: web.Request, kind: K.Kind, namespace: str | None, name: str) -> web.Response:
        obj = self.store.get(kind, namespace, name)
        scale = scale_of(obj)
        if request.method == "GET":
            return json_response(scale)
        body = await _body(request)
        if request.method == "PATCH":
            body = apply_patch(scale, body, request.content_type)
        elif request.method != "PUT":
            raise ApiError.method_not_allowed()
        replicas = (body.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise ApiError.invalid("spec.replicas: Invalid value: must be greater than or equal to 0",
                                   "Scale", name, "autoscaling")
        rv = (body.get("metadata") or {}).get("resourceVersion")
        if rv and rv != obj["metadata"]["resourceVersion"]:
            raise ApiError.conflict(kind.plural, name, kind.group)
        obj["spec"]["replicas"] = replicas
        obj["metadata"].pop("resourceVersion", None)
        return json_response(scale_of(self.store.replace(kind, namespace, name, obj)))


def scale_of(obj: dict) -> dict:
    meta = obj["metadata"]
    selector = (obj.get("spec") or {}).get("selector") or {}
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                         if k in meta},
            "spec": {"replicas": obj["spec"].get("replicas", 1)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0), "selector": ",".join(terms)}}


def _paginate(body: dict, limit: str | None, cont: str | None) -> dict:
    start = 0
    if cont:
        try:
            start = int(base64.urlsafe_b64decode(cont.encode()).decode())
        except ValueError:
            raise ApiError.bad_request("invalid continue token") from None
    items = body["items"]
    if limit and limit.isdigit() and int(limit) > 0:
        end = start + int(limit)
        body["items"] = items[start:end]
        if end < len(items):
            body["metadata"]["continue"] = base64.urlsafe_b64encode(str(end).encode()).decode()
            body["metadata"]["remainingItemCount"] = len(items) - end
    elif start:
        body["items"] = items[start:]
    return body


def _path_shape(path: str) -> str:
    """``/api/v1/namespaces/x/pods/y`` -> ``/api/v1/namespaces/{ns}/pods/{name}`` (for call counts)."""
    parts = path.strip("/").split("/")
    base = 2 if parts[0] == "api" else 3
    out, rest = parts[:base], parts[base:]
    if len(rest) >= 3 and rest[0] == "namespaces":
        out += ["namespaces", "{ns}"]
        rest = rest[2:]
    if rest:
        out.append(rest[0])
    if len(rest) > 1:
        out.append("{name}")
    out += rest[2:]
    return "/" + "/".join(out)


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return {}
    try:
        if "yaml" in request.content_type:
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise ApiError.bad_request(f"the request body is not valid JSON: {exc}") from None


def _dry(request: web.Request) -> bool:
    return "All" in request.query.getall("dryRun", [])


async def _grace(request: web.Request) -> int | None:
    value = request.query.get("gracePeriodSeconds")
    if value is None and request.can_read_body:
        body = await _body(request)
        if isinstance(body, dict):
            value = body.get("gracePeriodSeconds")
    try:
        return None if value is None else int(value)
    except ValueError:
        raise ApiError.bad_request("gracePeriodSeconds must be an integer") from None
