"""The daemon's identity: a stable random id made once and kept in its data folder.

Two daemons of one user (a desktop and a laptop, or a job daemon) may make clusters on the
same EKS cluster. Each stamps what it makes with its id (namespace label, group tag, Lease
holder), so that after a restart its orphan sweep removes only its own leftovers and never
another machine's live clusters (docs/eks.md, "Two daemons, one EKS cluster").
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from recc.errors import RECCError
from recc.paths import write_private_file

FILE = "daemon-id"
_VALID = re.compile(r"^[a-z0-9]{8,40}$")  # fits a label value and an AWS tag value


def daemon_id(data: Path) -> str:
    """The id stored in ``data/daemon-id`` (0600), made on first use."""
    path = data / FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise RECCError(f"cannot read the daemon id in {path}: {exc}",
                        hint="check the data folder's permissions; deleting the file makes a new id") from exc
    if _VALID.match(text):
        return text
    # none yet, or damaged: a new one (clusters stamped with an old id are then judged by their Lease)
    new = secrets.token_hex(8)
    write_private_file(path, new + "\n")
    return new
