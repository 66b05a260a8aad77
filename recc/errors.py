"""Errors that carry a message for a person.

Every error RECC raises on purpose is a :class:`RECCError` (or a subclass) with a
class-level ``code``. The daemon sends it as ``{"error": {"code", "message", "hint"}}``
and the client re-raises the same class from the code, so a script sees the same
exception whether the failure happened in-process or in the daemon.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar


class RECCError(Exception):
    """Base class: a failure a person can understand and act on."""

    code: ClassVar[str] = "error"
    http_status: ClassVar[int] = 400

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "hint": self.hint}}


class SpecError(RECCError):
    """A cluster spec or its overrides cannot be satisfied as written."""

    code = "invalid-spec"


class TemplateNotFound(SpecError):
    code = "unknown-template"
    http_status = 404


class PlanError(SpecError):
    """The spec is valid on its own but cannot be placed on the chosen capacity."""

    code = "impossible-plan"


class BadRequest(RECCError):
    code = "bad-request"


class ClusterNotFound(RECCError):
    code = "cluster-not-found"
    http_status = 404


class ClusterExists(RECCError):
    code = "cluster-exists"
    http_status = 409


class ClusterNotReady(RECCError):
    code = "cluster-not-ready"
    http_status = 409


class ProviderError(RECCError):
    """A provider could not do what it was asked (processes, cloud APIs)."""

    code = "provider-error"
    http_status = 502


class DaemonUnavailable(RECCError):
    """No daemon answers, and none could be started."""

    code = "daemon-unavailable"
    http_status = 503


class DaemonAlreadyRunning(RECCError):
    code = "daemon-running"
    http_status = 409


class InsecureRuntimeDir(RECCError):
    code = "insecure-runtime-dir"


class NotFound(RECCError):
    code = "not-found"
    http_status = 404


class InternalError(RECCError):
    code = "internal-error"
    http_status = 500


def _all_subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


def error_from_json(body: dict[str, Any]) -> RECCError:
    """Rebuild the exception the daemon sent, by its code (unknown codes stay RECCError)."""
    err = body.get("error", {}) if isinstance(body, dict) else {}
    code = err.get("code", "error")
    classes = {c.code: c for c in reversed(_all_subclasses(RECCError))}
    cls = classes.get(code, RECCError)
    exc = cls(err.get("message") or "the daemon reported an error", err.get("hint"))
    if cls is RECCError:
        exc.code = code  # keep the daemon's code visible on an unknown class
    return exc


class CostNotConfirmed(RECCError):
    """The cluster would cost more per hour than the configured guard allows."""

    code = "cost-not-confirmed"
    http_status = 402


def run_for_a_person(fn: Callable[[], int], prog: str = "recc") -> int:
    """Run a command's body; a `RECCError` becomes one line and a hint, never a traceback.

    An unexpected exception is one line too, unless ``RECC_DEBUG`` is set (then it is raised).
    """
    import os
    import sys

    try:
        return fn()
    except RECCError as exc:
        print(f"{prog}: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  hint: {exc.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - a person gets one line; RECC_DEBUG=1 shows the traceback
        if os.environ.get("RECC_DEBUG"):
            raise
        print(f"{prog}: unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr)
        print("  hint: this is a bug in RECC; run again with RECC_DEBUG=1 for the traceback and report it",
              file=sys.stderr)
        return 1
