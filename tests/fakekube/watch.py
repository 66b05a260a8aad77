"""``?watch=true``: a chunked stream of ``{"type": ..., "object": ...}`` lines.

Without ``resourceVersion`` (or with "0") the stream starts with an ADDED event per existing
object, as the real server does; with one, it replays the changes after it from a bounded
history and answers ``410 Expired`` (as an ERROR event) when that is too old.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from tests.fakekube import kinds as K
from tests.fakekube.errors import ApiError
from tests.fakekube.selectors import labels_match, parse_field_selector, parse_label_selector
from tests.fakekube.store import Store, Watcher


async def serve_watch(request: web.Request, store: Store, kind: K.Kind, namespace: str | None) -> web.StreamResponse:
    q = request.query
    reqs = parse_label_selector(q.get("labelSelector"))
    fmatch = parse_field_selector(q.get("fieldSelector"))
    try:
        timeout = float(q.get("timeoutSeconds", "1800"))
    except ValueError:
        raise ApiError.bad_request("timeoutSeconds must be a number") from None
    since = q.get("resourceVersion") or "0"

    def wanted(obj: dict) -> bool:
        return (namespace is None or obj["metadata"].get("namespace") == namespace) \
            and labels_match(reqs, obj) and fmatch(obj)

    # Register and snapshot with no await in between: the queue then holds exactly the later changes.
    watcher = Watcher(kind, namespace)
    store.watchers.add(watcher)
    resp: web.StreamResponse | None = None
    try:
        initial: list[tuple[str, dict]] = []
        if since == "0":
            initial = [("ADDED", o) for o in store.list(kind, namespace) if wanted(o)]
        else:
            try:
                rv = int(since)
            except ValueError:
                raise ApiError.bad_request(f"invalid resourceVersion {since!r}") from None
            oldest = store.history[0][0] if store.history else int(store.resource_version) + 1
            if rv < oldest - 1 and rv < int(store.resource_version):
                initial = [("ERROR", ApiError.gone(f"too old resource version: {rv} ({oldest - 1})").status())]
            else:
                initial = [(ev, obj) for (r, key, ev, obj) in store.history
                           if r > rv and key == kind.key and wanted(obj)]
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for event, obj in initial:
            await resp.write((json.dumps({"type": event, "object": obj}) + "\n").encode())
            if event == "ERROR":
                return resp
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                event, obj = await asyncio.wait_for(watcher.queue.get(), remaining)
            except asyncio.TimeoutError:
                break
            if wanted(obj):
                await resp.write((json.dumps({"type": event, "object": obj}) + "\n").encode())
        await resp.write_eof()
        return resp
    except ConnectionResetError:   # the client went away
        if resp is None:
            raise
        return resp
    finally:
        store.watchers.discard(watcher)
