"""The provider interface and the registry of providers.

A provider is one module under ``reccd/providers/`` with one class that satisfies
:class:`Provider`. ``create`` yields checkpoints (what exists so far); the daemon
journals each one before resuming the generator, so ``delete`` can always be given the
last checkpoint that was recorded and remove exactly what may exist.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, ClassVar, Protocol, Sequence

from recc.errors import ProviderError
from recc.spec import ClusterSpec

# A checkpoint is plain JSON-able data: what exists so far, cumulative (each yield
# contains everything of the previous one plus what the step added).
Checkpoint = dict[str, Any]


@dataclass(frozen=True)
class ClusterTLS:
    """PEM material for one cluster: its own CA and one leaf per role."""

    ca_cert: str
    scheduler_cert: str
    scheduler_key: str
    worker_cert: str
    worker_key: str
    client_cert: str
    client_key: str


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int


@dataclass(frozen=True)
class Endpoints:
    """Where the cluster's services listen, as the daemon can reach them (the tunnel's upstream)."""

    scheduler: Endpoint
    dashboard: Endpoint | None = None


@dataclass
class ProviderStatus:
    """What a provider observes of one cluster right now."""

    name: str
    alive: bool
    workers_ready: int = 0
    workers_desired: int = 0
    nodes: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


class Provider(Protocol):
    name: ClassVar[str]

    def create(self, name: str, spec: ClusterSpec, tls: ClusterTLS) -> AsyncIterator[Checkpoint]:
        """Make the cluster step by step, yielding what exists after each step."""

    async def delete(self, name: str, last: Checkpoint | None) -> None:
        """Remove everything ``last`` (any prefix of create's yields, or None) says may exist. Idempotent."""

    async def scale(self, name: str, n_workers: int, last: Checkpoint) -> Checkpoint:
        """Converge to ``n_workers`` workers; returns the new checkpoint to journal."""

    async def status(self, names: Sequence[str], lasts: Sequence[Checkpoint]) -> list[ProviderStatus]:
        """Observe the named clusters."""

    def endpoints(self, name: str, last: Checkpoint) -> Endpoints:
        """Scheduler and dashboard upstreams of a created cluster."""

    async def logs(self, name: str, last: Checkpoint, tail: int | None = None) -> dict[str, list[str]]:
        """Log lines per component ("scheduler", "worker-0", ...)."""

    async def list_owned(self) -> list[str]:
        """Names of clusters that exist for this provider (reconcile after a crash)."""


PROVIDERS: dict[str, str] = {
    "local": "reccd.providers.local:LocalProvider",
    "eks": "reccd.providers.eks:EksProvider",
}


# Extra keyword arguments a provider gets from the process that hosts it, as a function of
# the ones asked for: the daemon gives the eks provider its credentials' session factory
# (reccd/credentials.py) without the manager knowing about credentials. Asked-for ones win.
PROVIDER_ARGS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def load_provider(name: str, **kwargs: Any) -> Provider:
    """Instantiate a registered provider by name."""
    if name in PROVIDER_ARGS:
        kwargs = {**PROVIDER_ARGS[name](dict(kwargs)), **kwargs}
    target = PROVIDERS.get(name)
    if target is None:
        raise ProviderError(
            f"provider {name!r} is not available in this version of RECC",
            hint=f"available providers: {', '.join(sorted(PROVIDERS))}",
        )
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)


# Providers also implement (spend safety):
#
#     async def heartbeat(self, name: str, last: Checkpoint, ttl: float) -> IdleFacts:
#         """Renew the cluster-side dead-man switch for ``ttl`` seconds and return its idle facts."""
#
#     async def idle_facts(self, name: str, last: Checkpoint) -> IdleFacts:
#         """The idle facts without renewing the switch (`recc harvest`); errors are ProviderError."""
