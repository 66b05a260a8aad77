"""Worker plugins RECC registers on every cluster a `RSHClient` connects to."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Mapping, Sequence

from distributed.diagnostics.plugin import WorkerPlugin

log = logging.getLogger("recc.plugins")


class RECCWorkerSetup(WorkerPlugin):
    """Give every worker, present and future, the client's environment variables and source paths.

    Source paths go to the front of ``sys.path`` so a researcher's own modules import on
    the workers as they do in the notebook.
    """

    name = "recc-worker-setup"

    def __init__(self, env: Mapping[str, str] | None = None, source_paths: Sequence[str] = ()) -> None:
        self.env = dict(env or {})
        self.source_paths = list(source_paths)

    def setup(self, worker: Any) -> None:
        os.environ.update(self.env)
        for path in reversed(self.source_paths):
            if path not in sys.path:
                sys.path.insert(0, path)
        log.info("recc: set %d environment variables and %d source paths", len(self.env), len(self.source_paths))
