"""An injectable clock and the Kubernetes time formats (RFC 3339 Time and MicroTime)."""

from __future__ import annotations

import re
import threading
from datetime import datetime, timedelta, timezone

from tests.fakekube.errors import ApiError

MICROTIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")


class Clock:
    """Wall-clock UTC plus an adjustable offset; or frozen at a fixed time.

    Token expiry (and every timestamp the fake writes) uses it, so a test can make every
    token expire by ``clock.advance(16 * 60)`` without waiting.
    """

    def __init__(self, offset_seconds: float = 0.0, frozen: datetime | None = None):
        self._lock = threading.Lock()
        self._offset = timedelta(seconds=offset_seconds)
        self._frozen = frozen

    def now(self) -> datetime:
        with self._lock:
            base = self._frozen or datetime.now(timezone.utc)
            return base + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += timedelta(seconds=seconds)

    def set_offset(self, seconds: float) -> None:
        with self._lock:
            self._offset = timedelta(seconds=seconds)

    def freeze(self, at: datetime | None) -> None:
        with self._lock:
            self._frozen = at
            self._offset = timedelta(0)

    @property
    def offset_seconds(self) -> float:
        with self._lock:
            return self._offset.total_seconds()

    def rfc3339(self) -> str:
        return rfc3339(self.now())

    def micro(self) -> str:
        return microtime(self.now())


def rfc3339(when: datetime) -> str:
    """metav1.Time: ``2026-08-01T12:00:00Z`` (UTC, seconds)."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def microtime(when: datetime) -> str:
    """metav1.MicroTime: ``2026-08-01T12:00:00.123456Z``."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_microtime(value: object, field: str) -> str:
    """Validate a MicroTime as the API server does (fixed 6-digit fraction) and normalise it to UTC."""
    if not isinstance(value, str) or not MICROTIME.match(value):
        raise ApiError.bad_request(
            f'{field}: parsing time "{value}" as "2006-01-02T15:04:05.000000Z07:00": cannot parse')
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return microtime(when)
