"""When an idle cluster is harvested: a pure decision from observed facts.

The same code runs in the daemon (its harvest loop) and in `recc harvest` (for the
clusters no daemon watches). Times are epoch seconds (``time.time()``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class IdleFacts:
    """What a cluster's scheduler plugin reports about its own use.

    ``last_activity``: the last time a task ran, was queued or a graph arrived (or the
    scheduler started). ``clients``: connected clients other than the daemon's own.
    ``last_client_left``: when the number of such clients last dropped to zero (None
    while one is connected or if none ever connected; then the cluster's start counts).
    ``observed_at``: the scheduler's clock when it answered.
    """

    last_activity: float
    clients: int
    last_client_left: float | None
    observed_at: float
    started_at: float

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "IdleFacts":
        return cls(last_activity=float(data["last_activity"]), clients=int(data["clients"]),
                   last_client_left=None if data.get("last_client_left") is None else float(data["last_client_left"]),
                   observed_at=float(data["observed_at"]), started_at=float(data["started_at"]))

    def to_dict(self) -> dict[str, Any]:
        return {"last_activity": self.last_activity, "clients": self.clients,
                "last_client_left": self.last_client_left, "observed_at": self.observed_at,
                "started_at": self.started_at}
