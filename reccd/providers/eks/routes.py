"""How the daemon's tunnel reaches an EKS cluster's scheduler: the route of the context.

- ``portforward``: `PortForwardEndpoint`, a Kubernetes port-forward to the running scheduler pod
  through the API server (works wherever provisioning works).
- ``loadbalancer``: a plain `Endpoint` at the Service's internal load balancer.
- ``auto``: `AutoEndpoint`, which tries the load balancer first with a short TCP connect (the
  connect *is* the upstream socket, so a reachable load balancer costs nothing extra) and falls
  back to a port-forward when it does not answer; a failure is remembered for
  `LB_RETRY_AFTER` seconds so that a desktop outside the VPC does not pay the probe on every
  connection.

All three are `reccd.tunnel` resolver results (``host``/``port`` for display, and
``open_connection()`` where the endpoint makes its own socket), so the tunnel stays a byte relay.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reccd.providers.eks.provider import EksProvider

log = logging.getLogger("reccd.providers.eks")

PROBE_TIMEOUT = 1.5  # an internal NLB answers a SYN in milliseconds; no route means no answer at all
LB_RETRY_AFTER = 30.0  # seconds a failed load balancer is skipped before it is tried again


@dataclass(frozen=True)
class PortForwardEndpoint:
    """An upstream reached by a Kubernetes port-forward to a pod (a `reccd.tunnel` resolver result)."""

    provider: "EksProvider"
    namespace: str
    component: str
    port: int

    @property
    def host(self) -> str:
        return f"portforward/{self.namespace}/{self.component}"

    async def open_connection(self) -> socket.socket:
        return await self.provider._port_forward(self.namespace, self.component, self.port)


async def connect_probe(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> socket.socket:
    """A connected non-blocking TCP socket to ``host:port``, or OSError / TimeoutError within ``timeout``."""
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, address), timeout)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass(frozen=True)
class _Shown:
    host: str
    port: int


@dataclass
class AutoEndpoint:
    """The ``auto`` route: the load balancer when it answers, else a port-forward.

    ``host``/``port`` (what ``recc ls --json`` shows as the tunnel's upstream) name the route
    the last connection took: the load balancer's address, or ``portforward/<namespace>/...``.
    """

    provider: "EksProvider"
    cluster: str
    namespace: str
    component: str
    container_port: int  # what the port-forward targets
    lb_index: int  # which of the load balancer's ports: 0 scheduler, 1 dashboard
    chosen: "_Shown | PortForwardEndpoint | None" = None

    @property
    def host(self) -> str:
        return (self.chosen or self._forward()).host

    @property
    def port(self) -> int:
        return (self.chosen or self._forward()).port

    def _forward(self) -> PortForwardEndpoint:
        return PortForwardEndpoint(self.provider, self.namespace, self.component, self.container_port)

    async def open_connection(self) -> socket.socket:
        lb = await self.provider.known_load_balancer(self.cluster)
        failed_at = self.provider.lb_failures.get(self.namespace)
        if lb is not None and (failed_at is None or time.monotonic() - failed_at > LB_RETRY_AFTER):
            host, port = lb["host"], lb["ports"][self.lb_index]
            try:
                sock = await connect_probe(host, port)
            except (OSError, asyncio.TimeoutError) as e:
                log.info("load balancer %s:%s of %s did not answer (%s); using a port-forward",
                         host, port, self.namespace, type(e).__name__)
                self.provider.lb_failures[self.namespace] = time.monotonic()
            else:
                self.provider.lb_failures.pop(self.namespace, None)
                self.chosen = _Shown(host, port)
                return sock
        forward = self._forward()
        self.chosen = forward
        return await forward.open_connection()
