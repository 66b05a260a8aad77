"""The daemon's HTTP API (``/v1``) over its Unix socket.

Every answer is JSON; every error is ``{"error": {"code", "message", "hint"}}``. A bad
request never takes the daemon down: unknown exceptions become a 500 that names the
log file, with the traceback only in that log.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import socket
import struct
import time
import weakref
from typing import Any, Awaitable, Callable

from aiohttp import web

from recc.errors import BadRequest, InternalError, NotFound, RECCError
from reccd.accounting import report
from reccd.events import EventBus
from reccd.manager import ClusterManager
from reccd.openapi import OPENAPI

log = logging.getLogger("reccd.server")

# Request limits (docs/security.md). Head limits are aiohttp's parser limits, set here so they are ours:
# a longer request line or header, or more headers, gets 400 and the connection is closed.
MAX_BODY = 1 << 20  # bytes of request body; more is 413
MAX_LINE = 8190  # bytes in the request line
MAX_FIELD = 8190  # bytes in one header
MAX_HEADERS = 128  # header lines per request
# Seconds a connection may stay without a complete request head (idle keep-alive, or a slowloris
# trickling its head); the timer starts when the connection opens and is not reset by partial data.
IDLE_TIMEOUT = float(os.environ.get("RECC_HTTP_IDLE_TIMEOUT", "30"))
BODY_TIMEOUT = float(os.environ.get("RECC_HTTP_BODY_TIMEOUT", "30"))  # seconds to receive a whole body
LINGER = 2.0  # after an early answer (413, 408), seconds spent reading what the client still sends, then close
EXACT_CACHE_SECONDS = 30.0  # how long `GET /v1/costs?exact=1` reuses its answer (several AWS calls per context)
# Keyword arguments for web.AppRunner: the parser limits and the idle timeout above.
RUNNER_LIMITS: dict[str, Any] = {"max_line_size": MAX_LINE, "max_field_size": MAX_FIELD,
                                 "max_headers": MAX_HEADERS, "keepalive_timeout": IDLE_TIMEOUT,
                                 "lingering_time": LINGER}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RequestTimeout(RECCError):
    """A client that sends its request body too slowly (it holds a handler while it trickles)."""

    code = "request-timeout"
    http_status = 408


class BodyTooLarge(RECCError):
    """A request body over MAX_BODY, declared or sent."""

    code = "body-too-large"
    http_status = 413


def _too_large() -> BodyTooLarge:
    return BodyTooLarge(f"request body larger than {MAX_BODY} bytes", "send less; no API call needs a body this large")


def error_response(exc: RECCError) -> web.Response:
    return web.json_response(exc.to_json(), status=exc.http_status)


# A connection's peer does not change: its uid is read once per connection, not for every request on it.
_peer_uids: weakref.WeakKeyDictionary[Any, int | None] = weakref.WeakKeyDictionary()


def peer_uid(request: web.Request) -> int | None:
    """The connecting process's uid on a Unix socket (SO_PEERCRED), else None."""
    transport = request.transport
    if transport is None:
        return None
    try:
        return _peer_uids[transport]
    except KeyError:
        pass
    sock = transport.get_extra_info("socket")
    uid = None
    if sock is not None and sock.family == socket.AF_UNIX and hasattr(socket, "SO_PEERCRED"):
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        uid = struct.unpack("3i", creds)[1]
    _peer_uids[transport] = uid
    return uid


def _refuse(status: int, code: str, message: str, hint: str | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, "hint": hint}}, status=status)


def make_app(manager: ClusterManager, bus: EventBus, info: dict[str, Any],
             stop: Callable[[], None], log_path: str, token: str | None = None) -> web.Application:
    """The API. With ``token`` (the TCP transport) every request must carry ``Authorization: Bearer <token>``."""
    # aiohttp logs each unparseable request (garbage, oversized heads) with a traceback; the client got
    # its 400 and it is not the daemon's fault, and a hostile client must not be able to fill the log.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        uid = peer_uid(request)
        if uid is not None and uid != os.getuid():
            log.warning("refused a request from uid %s", uid)
            return _refuse(403, "forbidden", "this daemon serves only its owner")
        if token is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return _refuse(401, "unauthorized", "a valid daemon token is required",
                               "the token is in the daemon's token file in your runtime folder")
        try:
            return await handler(request)
        except RECCError as exc:
            return error_response(exc)
        except web.HTTPException as exc:
            if exc.status == 404:
                return error_response(NotFound(f"no such endpoint: {request.method} {request.path}",
                                               hint="see /v1/openapi.json"))
            if exc.status == 405:
                return _refuse(405, "method-not-allowed", f"{request.method} is not allowed on {request.path}",
                               "see /v1/openapi.json")
            if exc.status == 413:
                return error_response(_too_large())
            return _refuse(exc.status, "http-error", exc.reason)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - never a traceback over the socket
            log.exception("unhandled error on %s %s", request.method, request.path)
            return error_response(InternalError("internal error", hint=f"see {log_path}"))

    async def body(request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise _too_large()  # said up front: answer at once rather than wait for bytes never read
        try:
            raw = await asyncio.wait_for(request.read(), BODY_TIMEOUT)
        except ConnectionError:  # the client went away mid-body: its fault, not an internal error
            raise BadRequest("the connection closed before the whole body arrived") from None
        except asyncio.TimeoutError:
            raise RequestTimeout(f"the request body did not arrive within {BODY_TIMEOUT:g} s",
                                 "send the whole body at once") from None
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("the request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise BadRequest("the request body must be a JSON object")
        return data

    routes = web.RouteTableDef()

    @routes.get("/v1/health")
    async def health(request: web.Request) -> web.Response:
        return web.json_response(dict(info, status="ok", uid=os.getuid()))

    @routes.get("/v1/openapi.json")
    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(OPENAPI)

    @routes.get("/v1/clusters")
    async def list_clusters(request: web.Request) -> web.Response:
        # (the query is parsed only when there is one: this is the route many clients poll)
        include_gone = bool(request.query_string) and request.query.get("all", "") in ("1", "true", "yes")
        # pre-encoded and shared by concurrent requests (manager.list_tagged): API latency under load
        listing, etag = await manager.list_tagged(include_gone)
        # pollers (the library, the TUI) send the tag they last got: an unchanged listing is a 304 without
        # its ~150 kB body (100 clusters), which is most of the cost of answering many of them
        given = request.headers.get("If-None-Match", "")
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if given and (given == etag or given.strip() == "*"
                      or etag in (t.strip().removeprefix("W/") for t in given.split(","))):
            return web.Response(status=304, headers=headers)
        return web.Response(body=listing, content_type="application/json", headers=headers)

    @routes.post("/v1/clusters")
    async def create_cluster(request: web.Request) -> web.Response:
        data = await body(request)
        name = data.get("name")
        if name is not None and not isinstance(name, str):
            raise BadRequest("name must be a string")
        if "spec" not in data:
            raise BadRequest("the request needs a 'spec' object", hint="see /v1/openapi.json")
        confirm = data.get("confirm_cost", False)
        if not isinstance(confirm, bool):
            raise BadRequest("confirm_cost must be true or false")
        return web.json_response(await manager.create(data["spec"], name, confirm_cost=confirm), status=202)

    @routes.get("/v1/clusters/{name}")
    async def get_cluster(request: web.Request) -> web.Response:
        return web.json_response(await manager.describe(request.match_info["name"]))

    @routes.delete("/v1/clusters/{name}")
    async def delete_cluster(request: web.Request) -> web.Response:
        data = await body(request)
        by = data.get("by", "user")
        if by not in ("user", "harvest", "recc harvest"):
            raise BadRequest(f"by must be user, harvest or 'recc harvest', got {by!r}")
        reason = data.get("reason") or "deleted by the user"
        if not isinstance(reason, str) or len(reason) > 500:
            raise BadRequest("reason must be a sentence of at most 500 characters")
        return web.json_response(await manager.delete(request.match_info["name"], reason=reason, by=by))

    @routes.post("/v1/clusters/{name}/scale")
    async def scale_cluster(request: web.Request) -> web.Response:
        data = await body(request)
        return web.json_response(await manager.scale(request.match_info["name"], data.get("n_workers")))

    @routes.post("/v1/clusters/{name}/extend")
    async def extend_cluster(request: web.Request) -> web.Response:
        data = await body(request)
        return web.json_response(await manager.extend(request.match_info["name"], data.get("minutes", 30)))

    exact_cache: dict[tuple[str, float], tuple[float, dict[str, Any]]] = {}

    @routes.get("/v1/costs")
    async def costs(request: web.Request) -> web.Response:
        by = request.query.get("by", "cluster")
        if by not in ("cluster", "user", "job", "day"):
            raise BadRequest(f"cannot group costs by {by!r}", hint="use cluster, user, job or day")
        if request.query.get("exact", "0").lower() not in ("1", "true"):
            return web.json_response({"by": by, "costs": await report(manager.state, by)})
        try:
            days = float(request.query.get("days", "31"))
        except ValueError:
            raise BadRequest("days must be a number of days") from None
        if not 0 < days <= 366:
            raise BadRequest(f"days must be more than 0 and at most 366, got {days:g}")
        # several AWS calls per context: a TUI refreshing every few seconds reuses a recent answer
        cached = exact_cache.get((by, days))
        if cached is None or time.monotonic() - cached[0] > EXACT_CACHE_SECONDS:
            from reccd.exactcost import exact_costs  # boto3 and the eks clients: only when asked
            from reccd.providers import PROVIDER_ARGS

            def factory(context: str) -> Any:  # the daemon's login (docs/credentials.md), as the provider uses
                hook = PROVIDER_ARGS.get("eks")
                return hook({"context": context}).get("session_factory") if hook else None

            cached = exact_cache[(by, days)] = (time.monotonic(), await exact_costs(by, days, factory))
        return web.json_response(cached[1])

    @routes.get("/v1/clusters/{name}/connection")
    async def connection(request: web.Request) -> web.Response:
        return web.json_response(await manager.connection(request.match_info["name"]))

    @routes.get("/v1/clusters/{name}/logs")
    async def logs(request: web.Request) -> web.Response:
        try:
            tail = int(request.query["tail"]) if "tail" in request.query else None
        except ValueError:
            raise BadRequest("tail must be a whole number") from None
        if tail is not None and tail < 0:
            raise BadRequest("tail must not be negative")
        try:  # only the last so many seconds (follow rounds): providers with incremental logs
            since = int(request.query["since_seconds"]) if "since_seconds" in request.query else None
        except ValueError:
            raise BadRequest("since_seconds must be a whole number of seconds") from None
        if since is not None and since < 1:
            raise BadRequest("since_seconds must be at least 1")
        stamped = request.query.get("timestamps", "false").lower() in ("1", "true")
        logs, stamped = await manager.logs(request.match_info["name"], tail, since, stamped)
        return web.json_response({"logs": logs, "timestamps": stamped})

    @routes.get("/v1/events")
    async def events(request: web.Request) -> web.StreamResponse:
        sub = bus.subscribe(request.query.get("cluster"))
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        try:
            await response.write(b'{"type": "stream.open"}\n')
            while True:
                event = await sub.get()
                await response.write(json.dumps(event).encode() + b"\n")
                if event["type"] == "stream.dropped":
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            sub.close()
        return response

    @routes.post("/v1/shutdown")
    async def shutdown(request: web.Request) -> web.Response:
        asyncio.get_running_loop().call_soon(stop)
        return web.json_response({"status": "stopping"}, status=202)

    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app.add_routes(routes)
    return app
