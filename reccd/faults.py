"""Test-only fault injection: make the daemon die hard at a chosen provisioning point.

``RECC_FAULT=create:after-step=2:exit`` kills the daemon right after step 2's outcome is
journaled (a step boundary); ``RECC_FAULT=create:before-journal=2:exit`` kills it after
step 2's side effect happened but before its outcome is journaled. Never set it outside
tests: the daemon dies without cleaning up, which is the point.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("reccd.faults")


def _parse(value: str) -> tuple[str, str, int, str] | None:
    try:
        operation, point, action = value.split(":")
        where, _, step = point.partition("=")
        return operation, where, int(step), action
    except ValueError:
        return None


def maybe_fail(operation: str, where: str, step: int) -> None:
    """Die here if ``RECC_FAULT`` names this operation, point and step."""
    value = os.environ.get("RECC_FAULT")
    if not value:
        return
    parsed = _parse(value)
    if parsed is None:
        log.error("ignoring malformed RECC_FAULT=%r (expected e.g. create:after-step=2:exit)", value)
        return
    if parsed[:3] == (operation, where, step) and parsed[3] == "exit":
        log.error("RECC_FAULT: dying at %s %s=%d", operation, where, step)
        logging.shutdown()
        os._exit(137)
