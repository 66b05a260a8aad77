"""`ApiError`: a failure that becomes a Kubernetes ``Status`` body (kind Status, status Failure)."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """Raised anywhere in the fake; the HTTP layer turns it into a Status response."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict:
        body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            body["details"] = self.details
        return body

    # Constructors named after the Kubernetes reasons, with the real servers' message shapes.
    @classmethod
    def not_found(cls, resource: str, name: str, group: str = "") -> "ApiError":
        return cls(404, "NotFound", f'{resource}{"." + group if group else ""} "{name}" not found',
                   _details(name, resource, group))

    @classmethod
    def already_exists(cls, resource: str, name: str, group: str = "") -> "ApiError":
        return cls(409, "AlreadyExists", f'{resource}{"." + group if group else ""} "{name}" already exists',
                   _details(name, resource, group))

    @classmethod
    def conflict(cls, resource: str, name: str, group: str = "") -> "ApiError":
        qualified = f'{resource}{"." + group if group else ""}'
        return cls(409, "Conflict", f'Operation cannot be fulfilled on {qualified} "{name}": the object has been '
                   "modified; please apply your changes to the latest version and try again",
                   _details(name, resource, group))

    @classmethod
    def forbidden(cls, resource: str, name: str, why: str, group: str = "") -> "ApiError":
        qualified = f'{resource}{"." + group if group else ""}'
        return cls(403, "Forbidden", f'{qualified} "{name}" is forbidden: {why}', _details(name, resource, group))

    @classmethod
    def invalid(cls, message: str, kind: str = "", name: str = "", group: str = "") -> "ApiError":
        if kind:
            message = f'{kind} "{name}" is invalid: {message}'
        return cls(422, "Invalid", message, _details(name, kind, group) if kind else None)

    @classmethod
    def bad_request(cls, message: str) -> "ApiError":
        return cls(400, "BadRequest", message)

    @classmethod
    def unauthorized(cls, why: str = "") -> "ApiError":
        return cls(401, "Unauthorized", f"Unauthorized: {why}" if why else "Unauthorized")

    @classmethod
    def method_not_allowed(cls) -> "ApiError":
        return cls(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    @classmethod
    def gone(cls, message: str) -> "ApiError":
        return cls(410, "Expired", message)


def _details(name: str, kind: str, group: str) -> dict:
    d: dict[str, Any] = {"name": name, "kind": kind}
    if group:
        d["group"] = group
    return d


def success_status(name: str, kind: Any) -> dict:
    """What DELETE returns for an object removed at once (kind: a `Kind`)."""
    details = {"name": name, "kind": kind.plural}
    if kind.group:
        details["group"] = kind.group
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
