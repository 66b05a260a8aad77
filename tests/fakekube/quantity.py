"""Kubernetes resource quantities (``500m``, ``2``, ``1.5Gi``, ``1e3``) and pod requests."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from tests.fakekube.errors import ApiError

_SUFFIXES = {
    "": Decimal(1), "m": Decimal("0.001"), "u": Decimal("1e-6"), "n": Decimal("1e-9"),
    "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12),
    "P": Decimal(10**15), "E": Decimal(10**18),
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
    "Pi": Decimal(2**50), "Ei": Decimal(2**60),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?$")
# Resources the scheduler and quotas account for.
SCHEDULED_RESOURCES = ("cpu", "memory", "nvidia.com/gpu")


def parse(value: object) -> Decimal:
    """A quantity as a Decimal in base units (cores, bytes, devices)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Decimal(str(value))
    m = _QUANTITY.match(str(value).strip())
    if not m:
        raise ApiError.bad_request(f"quantities must match the regular expression "
                                   f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' (got {value!r})")
    try:
        number = Decimal(m[1] + (m[2] or ""))
    except InvalidOperation:
        raise ApiError.bad_request(f"invalid quantity {value!r}") from None
    return number * _SUFFIXES[m[3] or ""]


def fmt_cpu(cores: Decimal) -> str:
    millis = int(cores * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def fmt_bytes(n: Decimal) -> str:
    n = int(n)
    for suffix, size in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if n and n % size == 0:
            return f"{n // size}{suffix}"
    return str(n)


def fmt(resource: str, value: Decimal) -> str:
    base = resource.split(".", 1)[1] if resource.startswith(("requests.", "limits.")) else resource
    if base == "cpu":
        return fmt_cpu(value)
    if base == "memory" or base.startswith("ephemeral-storage"):
        return fmt_bytes(value)
    return str(int(value)) if value == int(value) else str(value)


def container_requests(container: dict) -> dict[str, Decimal]:
    """Effective requests of one container (a limit without a request is also the request)."""
    res = container.get("resources") or {}
    out = {k: parse(v) for k, v in (res.get("limits") or {}).items()}
    out.update({k: parse(v) for k, v in (res.get("requests") or {}).items()})
    return out


def container_limits(container: dict) -> dict[str, Decimal]:
    return {k: parse(v) for k, v in ((container.get("resources") or {}).get("limits") or {}).items()}


def pod_requests(pod: dict) -> dict[str, Decimal]:
    """Sum over containers, at least the largest init container (as the scheduler computes it)."""
    spec = pod.get("spec") or {}
    total: dict[str, Decimal] = {}
    for c in spec.get("containers") or []:
        for k, v in container_requests(c).items():
            total[k] = total.get(k, Decimal(0)) + v
    for c in spec.get("initContainers") or []:
        for k, v in container_requests(c).items():
            total[k] = max(total.get(k, Decimal(0)), v)
    return total


def pod_limits(pod: dict) -> dict[str, Decimal]:
    total: dict[str, Decimal] = {}
    for c in (pod.get("spec") or {}).get("containers") or []:
        for k, v in container_limits(c).items():
            total[k] = total.get(k, Decimal(0)) + v
    return total
