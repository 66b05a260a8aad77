"""Messages from the daemon-facing workers to the widgets, named for what happened.

Workers run in threads and post these to the app (``post_message`` is thread-safe); the
app updates its store and hands them on. High-rate ones define ``can_replace`` so a
backlog collapses to the latest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message


@dataclass
class ClustersRefreshed(Message):
    """The daemon's full list of clusters (live and gone), as of ``at``."""

    rows: list[dict[str, Any]]
    at: float

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ClustersRefreshed)


@dataclass
class DaemonEvent(Message):
    """One event from the daemon's stream: ``{"type", "cluster", "data", ...}``."""

    event: dict[str, Any]


@dataclass
class DaemonUp(Message):
    """The daemon answers (again); ``version`` and ``pid`` from its health."""

    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class DaemonDown(Message):
    """The daemon does not answer; ``attempt`` reconnects so far, the next in ``retry_in`` seconds."""

    reason: str
    attempt: int
    retry_in: float

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, DaemonDown)


@dataclass
class DetailFetched(Message):
    """One cluster's full description (with its events) for the detail pane."""

    cluster_id: str
    detail: dict[str, Any]


@dataclass
class CostsFetched(Message):
    """Accrued costs by cluster and by day, and the user's budgets (``recc.costs.Budget``)."""

    by_cluster: list[dict[str, Any]]
    by_day: list[dict[str, Any]]
    budgets: list[Any]
    budget_error: str | None = None


@dataclass
class ExactCostsFetched(Message):
    """EKS spend from AWS's instance times (``GET /v1/costs?exact=1``: ``{message, contexts: [...]}``),
    or ``error`` when the daemon could not be asked."""

    answer: dict[str, Any]
    error: str | None = None


@dataclass
class LogsFetched(Message):
    """A tail of every component's log: ``{component: [lines]}``."""

    name: str
    logs: dict[str, list[str]]

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, LogsFetched) and message.name == self.name


@dataclass
class ActionDone(Message):
    """An action on a cluster finished; ``message`` says what happened."""

    action: str
    name: str
    message: str
    result: dict[str, Any] = field(default_factory=dict)
