"""`FakeKube`: the server, its controllers and its loops, on one asyncio loop.

Run it on the caller's loop (``await fake.start()`` / ``await fake.stop()``) or on a loop
of its own in a daemon thread (``fake.start_in_thread()`` / ``fake.stop_in_thread()``).

Test-only control endpoints (no token needed, loopback only):
``GET /fakekube/state`` (clock, API call counts, node polls), ``POST /fakekube/clock``
(``{"advance_seconds": n}`` or ``{"offset_seconds": n}``), ``POST /fakekube/expire-tokens``
(tokens made until now are refused as expired, later ones accepted), ``POST /fakekube/sync-nodes``
(poll moto now and wait for it).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Mapping

from aiohttp import web

from tests.fakekube import kinds as K
from tests.fakekube.admission import Admission
from tests.fakekube.api import Api, json_response
from tests.fakekube.auth import TokenVerifier
from tests.fakekube.clock import Clock
from tests.fakekube.controllers import Controllers
from tests.fakekube.kubelet import Kubelet
from tests.fakekube.nodes import NodeSync
from tests.fakekube.scheduler import Scheduler
from tests.fakekube.store import Store
from tests.fakekube.streams import handle_log, handle_portforward

log = logging.getLogger("fakekube")
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class FakeKube:
    def __init__(self, *, cluster_name: str = "recc-test", moto_endpoint: str | None = None,
                 region: str = "us-east-1", host: str = "127.0.0.1", port: int = 0, clock: Clock | None = None,
                 node_poll_interval: float = 1.0, remap_ports: bool = True, run_processes: bool = True,
                 max_grace: float = 5.0, known_secrets: Mapping[str, str] | None = None,
                 workdir: str | Path | None = None):
        self.cluster_name = cluster_name
        self.moto_endpoint = moto_endpoint
        self.region = region
        self.host, self.port = host, port
        self.clock = clock or Clock()
        self.node_poll_interval = node_poll_interval
        self.remap_ports, self.run_processes, self.max_grace = remap_ports, run_processes, max_grace
        self.known_secrets = dict(known_secrets or {})
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else None
        self.url: str | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task] = []
        self.passes = 0           # reconcile passes (an idle fake makes about one a second)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------
    async def start(self) -> str:
        self._loop = asyncio.get_running_loop()
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="fakekube-"))
        self.store = Store(self.clock)
        self.kubelet = Kubelet(self.store, self.workdir, remap_ports=self.remap_ports,
                               run_processes=self.run_processes, max_grace=self.max_grace)
        self.controllers = Controllers(self.store, self.kubelet)
        self.scheduler = Scheduler(self.store)
        self.store.admission = Admission(self.store)
        self.store.after_create.append(self.controllers.after_create)
        for ns in DEFAULT_NAMESPACES:
            self.store.create(K.NAMESPACES, None, {"metadata": {"name": ns}})
        self.nodes = NodeSync(self.store, moto_endpoint=self.moto_endpoint, cluster_name=self.cluster_name,
                              region=self.region, interval=self.node_poll_interval) if self.moto_endpoint else None
        self.verifier = TokenVerifier(self.cluster_name, self.clock, self.known_secrets)
        self.api = Api(self.store, self.verifier)
        self.api.subresources[("pods", "log")] = functools.partial(handle_log, self.kubelet)
        self.api.subresources[("pods", "portforward")] = functools.partial(handle_portforward, self.kubelet)
        app = web.Application(client_max_size=16 * 2**20)
        self.api.install(app)
        app.router.add_get("/fakekube/state", self._state)
        app.router.add_post("/fakekube/clock", self._set_clock)
        app.router.add_post("/fakekube/sync-nodes", self._sync_nodes)
        app.router.add_post("/fakekube/expire-tokens", self._expire_tokens)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.url = f"http://{self.host}:{self.port}"
        self._tasks.append(asyncio.create_task(self._reconcile_loop(), name="fakekube-reconcile"))
        if self.nodes is not None:
            self._tasks.append(asyncio.create_task(self.nodes.run(), name="fakekube-nodes"))
        log.info("fake Kubernetes API for cluster %r at %s", self.cluster_name, self.url)
        return self.url

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if getattr(self, "kubelet", None) is not None:
            await self.kubelet.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def start_in_thread(self) -> str:
        """Run on a private loop in a daemon thread; returns the URL once serving."""
        loop = asyncio.new_event_loop()
        started: dict[str, Any] = {}
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                started["url"] = loop.run_until_complete(self.start())
            except BaseException as exc:  # reported to the caller below
                started["error"] = exc
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="fakekube", daemon=True)
        self._thread.start()
        ready.wait(30)
        if "error" in started:
            raise started["error"]
        return started["url"]

    def stop_in_thread(self, timeout: float = 30) -> None:
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._loop.close()
        self._thread = None

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 30) -> Any:
        """Run ``fn(*args)`` (a function or coroutine function) on the fake's loop and return its result."""
        async def run() -> Any:
            result = fn(*args)
            return await result if asyncio.iscoroutine(result) else result
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def set_load_balancer_ip(self, ip: str, namespace: str | None = None) -> None:
        """From another thread: the address LoadBalancer Services (of ``namespace``, or all) get from now on."""
        def put() -> None:
            if namespace is None:
                self.controllers.load_balancer_ip = ip
            else:
                self.controllers.load_balancer_ips[namespace] = ip
        self.call(put)

    def sync_nodes(self) -> None:
        """From another thread: poll moto now and apply the result before returning."""
        if self.nodes is not None:
            self.call(self.nodes.sync_once)

    # ---- loops and control endpoints -----------------------------------------------
    async def _reconcile_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.store.kick.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
            await asyncio.sleep(0.01)   # let a burst of writes land in one pass
            self.store.kick.clear()
            self.passes += 1
            try:
                self.controllers.run_once()
                self.scheduler.run_once()
                await self.kubelet.reconcile()
                self.controllers.services()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconcile pass failed")

    async def _state(self, request: web.Request) -> web.Response:
        return json_response({"cluster": self.cluster_name, "now": self.clock.rfc3339(),
                              "clock_offset_seconds": self.clock.offset_seconds, "calls": dict(self.api.calls),
                              "node_polls": self.nodes.polls if self.nodes else 0,
                              "reconcile_passes": self.passes})

    async def _set_clock(self, request: web.Request) -> web.Response:
        body = json.loads(await request.text() or "{}")
        if "offset_seconds" in body:
            self.clock.set_offset(float(body["offset_seconds"]))
        if "advance_seconds" in body:
            self.clock.advance(float(body["advance_seconds"]))
        return json_response({"now": self.clock.rfc3339(), "clock_offset_seconds": self.clock.offset_seconds})

    def expire_tokens(self) -> None:
        """Every token made up to now is refused as expired from now on; newer ones (made at
        least a second later) are accepted. Thread-safe enough: one attribute assignment."""
        self.verifier.expire_tokens()

    async def _expire_tokens(self, request: web.Request) -> web.Response:
        when = self.verifier.expire_tokens()
        return json_response({"tokens_dated_before": when.strftime("%Y-%m-%dT%H:%M:%SZ")})

    async def _sync_nodes(self, request: web.Request) -> web.Response:
        if self.nodes is not None:
            await self.nodes.sync_once()
        return json_response({"nodes": [n["metadata"]["name"] for n in self.store.iter(K.NODES)]})
