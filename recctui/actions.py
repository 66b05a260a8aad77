"""What the user can do to clusters: each action opens its dialog, then runs in a thread worker.

Actions take an optional cluster name (the command palette names one); without it they act
on the row under the cursor. The target is captured when the action starts, so a table
that moves underneath a dialog changes nothing.
"""

from __future__ import annotations

import webbrowser
from typing import Any

from textual import work

from recc.errors import RECCError
from recctui import format as fmt
from recctui.messages import ActionDone

EXTEND_MINUTES = 30


class ClusterActions:
    """Mixed into the App (which provides `client`, `clusters`, `notify`, `push_screen`...)."""

    clusters: dict[str, dict[str, Any]]

    # -- targets --------------------------------------------------------------------------------

    def target(self, name: str | None = None, live: bool = True) -> dict[str, Any] | None:
        """The named cluster (a live one first), else the one under the cursor."""
        if name:
            rows = [r for r in self.clusters.values() if r["name"] == name]
            rows.sort(key=lambda r: (not fmt.is_live(r), -(r.get("created_at") or 0)))
            row = rows[0] if rows else None
        else:
            screen = self.clusters_screen  # type: ignore[attr-defined]
            row = screen.table.selected if screen is not None else None
        if row is None:
            self.notify("no cluster selected" if not name else f"no cluster named {name!r}",  # type: ignore
                        severity="warning", timeout=3)
            return None
        if live and not fmt.is_live(row):
            self.notify(f"{row['name']} is {row['status']}", severity="warning", timeout=3)  # type: ignore
            return None
        return row

    def _need_daemon(self) -> bool:
        if not self.daemon_up:  # type: ignore[attr-defined]
            self.notify("the RECC daemon is not answering; try again when it is back",  # type: ignore
                        severity="error", timeout=5)
            return False
        return True

    # -- create -----------------------------------------------------------------------------------

    def action_create(self, template: str = "local") -> None:
        from recc.config import load_user_config
        from recc.templates import list_templates
        from recctui.screens.dialogs import CreateDialog

        if not self._need_daemon():
            return
        try:
            templates = list_templates()
            limit = load_user_config().get("max_cost_per_hour")
        except RECCError as exc:
            self.notify(f"{exc.message}\n{exc.hint or ''}", severity="error", markup=False)  # type: ignore
            return
        self.push_screen(CreateDialog(templates, limit, template), self._create_confirmed)  # type: ignore

    def _create_confirmed(self, request: dict[str, Any] | None) -> None:
        if request:
            self.do_create(request)

    @work(thread=True, group="actions", exit_on_error=False)
    def do_create(self, request: dict[str, Any]) -> None:
        row = self.client.create_cluster(request["spec"], request["name"],  # type: ignore[attr-defined]
                                         confirm_cost=request["confirm_cost"])
        self.post_message(ActionDone("create", row["name"], f"creating cluster {row['name']}…", row))  # type: ignore

    # -- scale, extend, delete ----------------------------------------------------------------------

    def action_scale(self, name: str = "") -> None:
        from recctui.screens.dialogs import ScaleDialog

        row = self.target(name or None)
        if row is None or not self._need_daemon():
            return
        target = row["name"]
        self.push_screen(ScaleDialog(row), lambda n: n is not None and self.do_scale(target, n))  # type: ignore

    @work(thread=True, group="actions", exit_on_error=False)
    def do_scale(self, name: str, n: int) -> None:
        self.client.scale(name, n)  # type: ignore[attr-defined]
        self.post_message(ActionDone("scale", name, f"{name} scaled to {n} workers"))  # type: ignore

    def action_extend(self, name: str = "", minutes: float = EXTEND_MINUTES) -> None:
        row = self.target(name or None)
        if row is not None and self._need_daemon():
            self.do_extend(row["name"], minutes)

    @work(thread=True, group="actions", exit_on_error=False)
    def do_extend(self, name: str, minutes: float) -> None:
        view = self.client.extend(name, minutes)  # type: ignore[attr-defined]
        until = (view.get("harvest") or {}).get("extended_until")
        self.post_message(ActionDone("extend", name, f"{name}: harvest postponed by {minutes:g} minutes"
                                     + (f" (until {fmt.clock(until)})" if until else ""), view))  # type: ignore

    def action_extend_warned(self) -> None:
        name = getattr(self, "last_warned", None)
        if not name:
            self.notify("no harvest warning to answer", timeout=3)  # type: ignore
            return
        self.action_extend(name)

    def action_delete(self, name: str = "") -> None:
        from recctui.screens.dialogs import DeleteDialog

        row = self.target(name or None)
        if row is None or not self._need_daemon():
            return
        self.push_screen(DeleteDialog(row), self._delete_confirmed)  # type: ignore

    def _delete_confirmed(self, target: dict[str, Any] | None) -> None:
        if target:
            self.notify(f"deleting {target['name']}…", timeout=3)  # type: ignore
            self.do_delete(target["name"])

    @work(thread=True, group="actions", exit_on_error=False)
    def do_delete(self, name: str) -> None:
        self.client.delete_cluster(name)  # type: ignore[attr-defined]
        self.post_message(ActionDone("delete", name, f"{name} deleted"))  # type: ignore

    # -- look --------------------------------------------------------------------------------------

    def action_logs(self, name: str = "") -> None:
        from recctui.screens.logs import LogsScreen

        row = self.target(name or None, live=False)
        if row is not None:
            self.push_screen(LogsScreen(row))  # type: ignore

    def action_costs(self) -> None:
        from recctui.screens.costs import CostsScreen

        self.push_screen(CostsScreen())  # type: ignore

    def action_dashboard(self, name: str = "") -> None:
        row = self.target(name or None)
        if row is not None and self._need_daemon():
            self.open_dashboard(row["name"])

    @work(thread=True, group="actions", exit_on_error=False)
    def open_dashboard(self, name: str) -> None:
        link = self.client.connection(name)["dashboard_link"]  # type: ignore[attr-defined]
        opened = webbrowser.open(link)
        self.post_message(ActionDone("dashboard", name, f"opened the dashboard of {name}" if opened else
                                     f"no browser found; the dashboard of {name} is at {link}"))  # type: ignore

    def action_copy_client(self, name: str = "") -> None:
        row = self.target(name or None, live=False)
        if row is not None:
            line = f'RSHClient("{row["name"]}")'
            self.copy_to_clipboard(line)  # type: ignore
            self.notify(f"copied {line}", timeout=3)  # type: ignore

    def on_action_done(self, message: ActionDone) -> None:
        self.notify(message.message, timeout=4)  # type: ignore
        if message.action == "create" and message.result.get("id"):
            self.select_after_refresh = message.result["id"]
        self.request_refresh(0.0)  # type: ignore[attr-defined]
