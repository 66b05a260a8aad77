"""`ClusterSpec`: everything that describes a cluster, as a frozen dataclass.

Specs are plain data: built from a template plus keyword overrides
(`dataclasses.replace`), validated once in ``__post_init__``, and sent to the daemon
as JSON (`to_dict` / `from_dict`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping

from dask.utils import parse_bytes, parse_timedelta

from recc.errors import SpecError

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
PROVIDERS = ("local", "eks")
MAX_WORKERS = 5000


class ClusterStatus(str, Enum):
    """One status vocabulary for daemon, library and TUI."""

    PENDING = "pending"
    CREATING = "creating"
    RUNNING = "running"
    SCALING = "scaling"
    DELETING = "deleting"
    DELETED = "deleted"
    FAILED = "failed"

    @property
    def is_live(self) -> bool:
        # deleting is live: it may still cost money, and a failed delete must be retryable
        return self in (ClusterStatus.PENDING, ClusterStatus.CREATING, ClusterStatus.RUNNING,
                        ClusterStatus.SCALING, ClusterStatus.DELETING)


def parse_memory(value: int | float | str, what: str) -> int:
    """Bytes from ``4GiB``, ``"512 MB"`` or a number of bytes."""
    try:
        n = parse_bytes(value) if isinstance(value, str) else int(value)
    except (ValueError, TypeError):
        raise SpecError(f"{what} {value!r} is not a size", hint="use e.g. 4GiB or 512MiB") from None
    if n <= 0:
        raise SpecError(f"{what} must be positive, got {value!r}")
    return n


def parse_seconds(value: int | float | str | None, what: str) -> float | None:
    """Seconds from a number or a Dask-style string (``"15s"``, ``"20 minutes"``)."""
    if value is None:
        return None
    try:
        n = float(parse_timedelta(value, default="seconds"))
    except (ValueError, TypeError, KeyError):
        raise SpecError(f"{what} {value!r} is not a duration",
                        hint='use seconds or a string like "15s" or "20 minutes"') from None
    if n <= 0:
        raise SpecError(f"{what} must be positive, got {value!r}")
    if n > 30 * 86400:
        raise SpecError(f"{what} {value!r} is longer than 30 days", hint="use a shorter timeout")
    return n


def check_name(name: str) -> str:
    """A cluster name usable as a DNS label inside ``recc-<user>-<name>``."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SpecError(
            f"cluster name {name!r} is not valid",
            hint="use 1-40 lowercase letters, digits and '-', starting and ending with a letter or digit",
        )
    return name


@dataclass(frozen=True)
class ClusterSpec:
    """What a cluster is made of. Sizes are bytes, CPUs are cores, timeouts are seconds."""

    provider: str = "local"
    template: str = "local"
    instance_type: str = "local"
    region: str = "us-east-1"
    n_workers: int = 2
    worker_cpu: float = 1.0
    worker_memory: int = 2 * 2**30
    worker_threads: int = 1
    worker_gpu: int = 0
    scheduler_cpu: float = 1.0
    scheduler_memory: int = 2 * 2**30
    resources: Mapping[str, float] = field(default_factory=dict)
    image: str = "ghcr.io/dask/dask:2026.8.0-py3.11"
    env: Mapping[str, str] = field(default_factory=dict)
    source_paths: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    idle_timeout: float | None = 20 * 60.0
    no_client_timeout: float | None = 10 * 60.0
    heartbeat_ttl: float = 15 * 60.0
    harvest_warning: float = 2 * 60.0
    persist: bool = False
    job_id: str | None = None
    # eks only: the context (docs/eks.md) the cluster is made in; None = the daemon's current one
    context: str | None = None
    # eks only: extra pod-template fields for the scheduler and workers (recc.podpatch; docs/eks-operations.md)
    pod_patch: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Normalise in place (frozen: object.__setattr__) so every spec that exists is valid.
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if self.provider not in PROVIDERS:
            raise SpecError(f"unknown provider {self.provider!r}", hint=f"use one of {', '.join(PROVIDERS)}")
        n = self.n_workers
        if isinstance(n, bool) or not isinstance(n, int) and not (isinstance(n, float) and n.is_integer()):
            raise SpecError(f"n_workers must be a whole number, got {n!r}")
        put("n_workers", int(n))
        if not 0 <= self.n_workers <= MAX_WORKERS:
            raise SpecError(f"n_workers must be between 0 and {MAX_WORKERS}, got {self.n_workers}")
        for cpu_field in ("worker_cpu", "scheduler_cpu"):
            value = getattr(self, cpu_field)
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise SpecError(f"{cpu_field} must be a number of cores, got {value!r}") from None
            if not value > 0:
                raise SpecError(f"{cpu_field} must be positive, got {value}")
            put(cpu_field, value)
        put("worker_memory", parse_memory(self.worker_memory, "worker_memory"))
        put("scheduler_memory", parse_memory(self.scheduler_memory, "scheduler_memory"))
        for int_field, low in (("worker_threads", 1), ("worker_gpu", 0)):
            value = getattr(self, int_field)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SpecError(f"{int_field} must be a whole number >= {low}, got {value!r}")
        put("idle_timeout", parse_seconds(self.idle_timeout, "idle_timeout"))
        put("no_client_timeout", parse_seconds(self.no_client_timeout, "no_client_timeout"))
        put("heartbeat_ttl", parse_seconds(self.heartbeat_ttl, "heartbeat_ttl"))
        put("harvest_warning", parse_seconds(self.harvest_warning, "harvest_warning"))
        if self.heartbeat_ttl is None:
            raise SpecError("heartbeat_ttl cannot be turned off: it is what stops a cluster whose daemon is gone")
        if not isinstance(self.persist, bool):
            raise SpecError(f"persist must be true or false, got {self.persist!r}")
        if self.job_id is not None and not isinstance(self.job_id, str):
            raise SpecError(f"job_id must be a string, got {self.job_id!r}")
        if self.context is not None and (not isinstance(self.context, str) or not self.context.strip()):
            raise SpecError(f"context must be the name of a context, got {self.context!r}",
                            hint="contexts are configured under contexts: in config.yaml (docs/eks.md)")
        from recc.podpatch import validate_pod_patch

        put("pod_patch", validate_pod_patch(self.pod_patch))
        put("resources", {str(k): float(v) for k, v in dict(self.resources).items()})
        put("env", {str(k): str(v) for k, v in dict(self.env).items()})
        put("tags", {str(k): str(v) for k, v in dict(self.tags).items()})
        if isinstance(self.source_paths, str):
            put("source_paths", (self.source_paths,))
        put("source_paths", tuple(str(p) for p in self.source_paths))

    def replace(self, **overrides: Any) -> "ClusterSpec":
        """A copy with fields overridden; unknown field names are a `SpecError`."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise SpecError(
                f"unknown cluster setting(s): {', '.join(sorted(unknown))}",
                hint=f"known settings: {', '.join(f.name for f in dataclasses.fields(self))}",
            )
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["source_paths"] = list(self.source_paths)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ClusterSpec":
        if not isinstance(data, Mapping):
            raise SpecError("a cluster spec must be a JSON object")
        return cls().replace(**dict(data))
