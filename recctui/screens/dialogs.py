"""Dialogs: create (with the plan before confirming), scale, delete (typed name), save logs.

Each dialog is given its target when it opens and returns what to do when it closes; the
caller acts on the target captured at open, whatever the table shows by then.
"""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from recc.errors import RECCError
from recc.plan import format_plan, plan
from recc.spec import ClusterSpec
from recctui import format as fmt


class Dialog(ModalScreen[Any]):
    """A centred box; Escape cancels."""

    DEFAULT_CSS = """
    Dialog { align: center middle; }
    Dialog > Vertical {
        width: 76; height: auto; max-height: 90%; border: thick $primary; background: $surface; padding: 1 2;
    }
    Dialog .title { text-style: bold; margin-bottom: 1; }
    Dialog .buttons { height: auto; align-horizontal: right; margin-top: 1; }
    Dialog .buttons Button { margin-left: 2; }
    Dialog .plan { margin-top: 1; }
    Dialog .plan.-error { color: $error; }
    Dialog Input { margin-bottom: 1; }
    Dialog .field { height: 1; margin-bottom: 1; }
    Dialog .field Label { width: 16; color: $text-muted; }
    Dialog .field Input, Dialog .field Select { width: 1fr; margin: 0; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.dismiss(None)


def _int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text else None


class CreateDialog(Dialog):
    """Pick a template, override workers / instance type / worker memory, see the plan, confirm."""

    def __init__(self, templates: dict[str, ClusterSpec], max_cost_per_hour: float | None = None,
                 template: str = "local") -> None:
        super().__init__()
        self.templates = templates
        self.max_cost = max_cost_per_hour
        self.template = template if template in templates else next(iter(templates))
        self.spec: ClusterSpec | None = None

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Create a cluster", classes="title")
            with Horizontal(classes="field"):
                yield Label("template")
                yield Select([(n, n) for n in self.templates], value=self.template, allow_blank=False,
                             id="template", compact=True)
            for label, field_id, hint, kind in (
                ("workers", "workers", "the template's", "integer"),
                ("instance type", "instance-type", "the template's", "text"),
                ("worker memory", "worker-memory", "e.g. 4GiB (the template's)", "text"),
                ("name", "name", "optional: generated if empty", "text"),
            ):
                with Horizontal(classes="field"):
                    yield Label(label)
                    yield Input(placeholder=hint, id=field_id, type=kind, compact=True)  # type: ignore[arg-type]
            yield Static(classes="plan", id="plan")
            yield Checkbox("I accept this cost per hour (above my max_cost_per_hour)", id="confirm-cost")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Create", variant="primary", id="create")

    def on_mount(self) -> None:
        self.query_one("#confirm-cost").display = False
        self.update_plan()

    @on(Select.Changed)
    @on(Input.Changed)
    def update_plan(self) -> None:
        preview = self.query_one("#plan", Static)
        create = self.query_one("#create", Button)
        template = self.query_one("#template", Select).value
        try:
            overrides = {
                "n_workers": _int(self.query_one("#workers", Input).value),
                "instance_type": self.query_one("#instance-type", Input).value.strip() or None,
                "worker_memory": self.query_one("#worker-memory", Input).value.strip() or None,
            }
            spec = self.templates[str(template)].replace(**{k: v for k, v in overrides.items() if v is not None})
            the_plan = plan(spec)
        except (RECCError, ValueError) as exc:
            message = exc.message if isinstance(exc, RECCError) else str(exc)
            hint = f" ({exc.hint})" if isinstance(exc, RECCError) and exc.hint else ""
            preview.update(f"cannot plan: {message}{hint}")
            preview.set_class(True, "-error")
            create.disabled, self.spec = True, None
            return
        preview.set_class(False, "-error")
        over = self.max_cost is not None and the_plan.cost_per_hour > self.max_cost
        text = f"{format_plan(the_plan, spec)}\n{the_plan.nodes} node(s), {fmt.rate(the_plan.cost_per_hour)}"
        if over:
            text += f"  — above your limit of {fmt.rate(self.max_cost)}"
        preview.update(text)
        self.query_one("#confirm-cost").display = over
        create.disabled = over and not self.query_one("#confirm-cost", Checkbox).value
        self.spec = spec

    @on(Checkbox.Changed)
    def _confirm_changed(self) -> None:
        self.update_plan()

    @on(Input.Submitted)
    @on(Button.Pressed, "#create")
    def create(self) -> None:
        if self.spec is None or self.query_one("#create", Button).disabled:
            return
        name = self.query_one("#name", Input).value.strip() or None
        self.dismiss({"spec": self.spec.to_dict(), "name": name,
                      "confirm_cost": self.query_one("#confirm-cost", Checkbox).value})


class ScaleDialog(Dialog):
    """Scale one cluster; a scale-down needs the button, not just Enter."""

    def __init__(self, row: dict[str, Any]) -> None:
        super().__init__()
        self.target = dict(row)  # fixed at open
        self.current = (row.get("workers") or {}).get("desired", 0)

    def compose(self) -> ComposeResult:
        row = self.target
        with Vertical():
            yield Label(f"Scale cluster {row['name']}", classes="title")
            yield Label(f"now {self.current} workers, {fmt.rate(row.get('cost_per_hour'))}")
            yield Input(str(self.current), id="n-workers", type="integer")
            yield Static(classes="plan", id="plan")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Scale", variant="primary", id="scale")

    def on_mount(self) -> None:
        self.query_one("#n-workers", Input).focus()
        self.update_plan()

    def wanted(self) -> int | None:
        try:
            return _int(self.query_one("#n-workers", Input).value)
        except ValueError:
            return None

    @on(Input.Changed)
    def update_plan(self) -> None:
        n, preview, button = self.wanted(), self.query_one("#plan", Static), self.query_one("#scale", Button)
        try:
            if n is None:
                raise ValueError("type a number of workers")
            spec = ClusterSpec.from_dict(self.target.get("spec") or {}).replace(n_workers=n)
            the_plan = plan(spec)
        except (RECCError, ValueError) as exc:
            preview.update(f"cannot plan: {getattr(exc, 'message', str(exc))}")
            preview.set_class(True, "-error")
            button.disabled = True
            return
        preview.set_class(False, "-error")
        preview.update(f"after: {format_plan(the_plan, spec)}")
        button.disabled = n == self.current
        down = n < self.current
        button.label = "Scale down" if down else "Scale"
        button.variant = "error" if down else "primary"

    @on(Input.Submitted)
    def _submitted(self) -> None:
        n = self.wanted()
        if n is not None and n < self.current:
            self.query_one("#scale", Button).focus()  # removing workers: one more deliberate key
            self.query_one("#plan", Static).update(f"scale down to {n} workers? press Enter on Scale down")
            return
        self._scale()

    @on(Button.Pressed, "#scale")
    def _scale(self) -> None:
        if not self.query_one("#scale", Button).disabled:
            self.dismiss(self.wanted())


class DeleteDialog(Dialog):
    """Names the cluster and its $/h; Cancel has the focus; the name must be typed."""

    def __init__(self, row: dict[str, Any]) -> None:
        super().__init__()
        self.target = dict(row)  # fixed at open

    def compose(self) -> ComposeResult:
        row = self.target
        with Vertical():
            yield Label(f"Delete cluster {row['name']}?", classes="title")
            yield Static(
                f"It costs {fmt.rate(row.get('cost_per_hour'))} and has accrued {fmt.money(row.get('total_cost'))}.\n"
                f"Its scheduler, {(row.get('workers') or {}).get('desired', 0)} worker(s) and tunnel are removed; "
                "work in progress is lost.")
            yield Label(f"Type [b]{row['name']}[/b] to confirm:")
            yield Input(placeholder=row["name"], id="confirm-name")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Delete", variant="error", id="delete", disabled=True)

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    @on(Input.Changed)
    def _typed(self, event: Input.Changed) -> None:
        self.query_one("#delete", Button).disabled = event.value.strip() != self.target["name"]

    @on(Input.Submitted)
    @on(Button.Pressed, "#delete")
    def _delete(self) -> None:
        if self.query_one("#confirm-name", Input).value.strip() == self.target["name"]:
            self.dismiss(self.target)


class SaveDialog(Dialog):
    """Where to save a log."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Save the log buffer to", classes="title")
            yield Input(self.path, id="path")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Save", variant="primary", id="save")

    @on(Input.Submitted)
    @on(Button.Pressed, "#save")
    def _save(self) -> None:
        path = self.query_one("#path", Input).value.strip()
        if path:
            self.dismiss(path)
