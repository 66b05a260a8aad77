"""The app's link to the daemon: connect (starting it if absent), follow events, refresh.

Every call to the (synchronous) `DaemonClient` happens in a thread worker; results come
back as messages (`recctui.messages`). One handler turns a failed worker's `RECCError`
into a notification with the daemon's message and hint, never a traceback.
"""

from __future__ import annotations

import getpass
import logging
import time
from typing import Any, Callable

from textual import work
from textual.worker import Worker, WorkerState, get_current_worker

from recc.daemon_client import DaemonClient, EventStream
from recc.errors import DaemonUnavailable, RECCError
from recctui.messages import (ClustersRefreshed, CostsFetched, DaemonDown, DaemonEvent, DaemonUp, DetailFetched,
                               ExactCostsFetched)

log = logging.getLogger("recctui")

REFRESH_EVERY = 5.0  # seconds between full refreshes while the daemon is up (ages, costs, tunnels)
DEBOUNCE = 0.15  # events arriving close together cause one refresh
BACKOFF_MAX = 3.0


def report_worker_error(node: Any, event: Worker.StateChanged) -> None:
    """Notify the daemon's message and hint for a failed worker (the one error path)."""
    if event.state != WorkerState.ERROR:
        return
    error = event.worker.error
    if isinstance(error, RECCError):
        text = error.message + (f"\n[dim]{_escape(error.hint)}[/]" if error.hint else "")
        node.notify(text if error.hint else _escape(error.message), title=_title(error), severity="error",
                    timeout=10, markup=bool(error.hint))
    else:
        log.error("worker %s failed", event.worker.name, exc_info=error)
        node.notify(f"unexpected error ({type(error).__name__}): {error}", title="internal error",
                    severity="error", timeout=10, markup=False)


def _escape(text: str) -> str:
    return text.replace("[", r"\[")


def _title(error: RECCError) -> str:
    return error.code.replace("-", " ")


def with_accrued(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row's cost so far: the final total of a gone cluster, else what the daemon accrued until now."""
    for row in rows:
        if row.get("total_cost") is None:
            row["total_cost"] = row.get("accrued_cost")
    return rows


class DaemonLink:
    """Mixed into the App: the client, the daemon's state and the workers that talk to it."""

    client: DaemonClient | None
    daemon_up: bool
    post_message: Callable[..., bool]

    def init_link(self, connect: bool = True) -> None:
        self.client = None
        self.daemon_up = False
        self.connect_enabled = connect
        self._stream: EventStream | None = None
        self._stopping = False
        self._refresh_pending = False

    # -- connect and follow ---------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="connect", exit_on_error=False)
    def connect(self, start: bool = True) -> None:
        """Find the daemon (starting one if allowed), then follow its events."""
        try:
            client = DaemonClient.connect(start=start, quiet=True)
        except RECCError as exc:
            self.client = self.client or DaemonClient()
            self.post_message(DaemonDown(exc.message + (f" ({exc.hint})" if exc.hint else ""), 1, 1.0))
        else:
            self.client = client
        self.call_from_thread(self.follow)

    @work(thread=True, exclusive=True, group="events", exit_on_error=False)
    def follow(self) -> None:
        """Follow the event stream; when it ends, reconnect with backoff and say so."""
        worker = get_current_worker()
        client = self.client or DaemonClient()
        attempt = 0
        while not worker.is_cancelled and not self._stopping:
            try:
                info = client.health(timeout=3)
                stream = client.events()
            except (RECCError, OSError, ValueError) as exc:
                # OSError/ValueError too: a daemon killed mid-answer can leave a timeout or a torn
                # reply, and a worker that died here would never try again
                attempt += 1
                delay = min(BACKOFF_MAX, 0.25 * 2 ** (attempt - 1))
                reason = exc.message if isinstance(exc, RECCError) else f"{type(exc).__name__}: {exc}"
                self.post_message(DaemonDown(reason, attempt, delay))
                worker.cancelled_event.wait(delay)
                continue
            self._stream = stream
            if self._stopping:
                stream.close()
                break
            attempt = 0
            self.post_message(DaemonUp(info))
            try:
                for event in stream:
                    if event.get("type") != "stream.open":
                        self.post_message(DaemonEvent(event))
            except (RECCError, OSError, ValueError) as exc:
                log.debug("event stream ended: %r", exc)
            self._stream = None

    def stop_link(self) -> None:
        self._stopping = True
        stream = self._stream
        if stream is not None:
            stream.close()

    # -- refresh ----------------------------------------------------------------------------------

    def request_refresh(self, delay: float = DEBOUNCE) -> None:
        """A refresh soon; many requests within ``delay`` make one."""
        if self._refresh_pending or not self.daemon_up:
            return
        self._refresh_pending = True

        def go() -> None:
            self._refresh_pending = False
            self.refresh_clusters()

        self.set_timer(max(delay, 0.01), go)  # type: ignore[attr-defined]  (0 divides by zero in Textual)

    @work(thread=True, exclusive=True, group="refresh", exit_on_error=False)
    def refresh_clusters(self) -> None:
        client = self.client
        if client is None:
            return
        try:
            rows = client.list_clusters(include_gone=True)
        except DaemonUnavailable:
            return  # the event follower shows the banner and reconnects
        if not get_current_worker().is_cancelled:
            self.post_message(ClustersRefreshed(with_accrued(rows), time.time()))

    @work(thread=True, exclusive=True, group="detail", exit_on_error=False)
    def fetch_detail(self, cluster_id: str, name: str) -> None:
        if self.client is None:
            return
        try:
            detail = self.client.get_cluster(name)
        except DaemonUnavailable:
            return
        if detail.get("id") == cluster_id and not get_current_worker().is_cancelled:
            self.post_message(DetailFetched(cluster_id, detail))

    @work(thread=True, exclusive=True, group="costs", exit_on_error=False)
    def fetch_costs(self) -> None:
        if self.client is None:
            return
        by_cluster = self.client.costs("cluster")
        by_day = self.client.costs("day")
        budgets: list[Any] = []
        error = None
        try:
            from recc.config import load_user_config
            from recc.costs import load_budgets

            budgets = load_budgets(load_user_config(), user=getpass.getuser())
        except RECCError as exc:
            error = exc.message
        self.post_message(CostsFetched(by_cluster, by_day, budgets, error))

    @work(thread=True, exclusive=True, group="exact-costs", exit_on_error=False)
    def fetch_exact_costs(self) -> None:
        """AWS's figures for EKS clusters: a worker of its own, so the daemon's figures never wait for AWS."""
        if self.client is None:
            return
        try:
            answer, error = self.client.exact_costs("cluster"), None
        except RECCError as exc:  # shown in the costs screen's exact pane, where the figures would be
            answer, error = {}, f"{exc.message} ({exc.hint})" if exc.hint else exc.message
        if not get_current_worker().is_cancelled:
            self.post_message(ExactCostsFetched(answer, error))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        report_worker_error(self, event)
