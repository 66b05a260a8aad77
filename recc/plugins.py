"""Worker plugins RECC registers on every cluster a `RSHClient` connects to."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Mapping, Sequence

from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

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


import uuid  # noqa: E402 - below RECCWorkerSetup, which is kept as it was

# Names this process: a plugin made here and set up here is on a worker inside the client.
_THIS_PROCESS = uuid.uuid4().hex


class DatastoreSetup(WorkerPlugin):
    """Give every worker the client's datastores (`recc.datastore.datastore_config`, taken when made).

    On the worker, `apply_datastore_config` replaces the worker's own datastore settings (its
    ``RECC_CONTEXT``, when set, still picks its context's roots), and every ``read_df`` logs the
    store it used to the worker's log (logger ``distributed.worker.recc``). Nothing happens on a
    worker that runs inside the client's own process: it already has the same settings.
    """

    name = "recc-datastores"

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        from recc.datastore import datastore_config

        self.config = dict(config) if config is not None else datastore_config()
        self.client_process = _THIS_PROCESS

    def setup(self, worker: Any) -> None:
        if self.client_process == _THIS_PROCESS:
            return
        from recc.datastore import apply_datastore_config, get_read_datastore_names, log_reads_to

        apply_datastore_config(self.config)
        logger = logging.getLogger("distributed.worker.recc")
        log_reads_to(logger)
        try:
            names = ", ".join(get_read_datastore_names())
        except Exception as exc:  # noqa: BLE001 - a worker must start; the reads will raise the same
            names = f"unusable here: {exc}"
        logger.info("recc: datastores from the client (context %s); read order: %s",
                    self.config.get("context"), names)

    def teardown(self, worker: Any) -> None:
        if self.client_process != _THIS_PROCESS:
            from recc.datastore import apply_datastore_config, log_reads_to

            apply_datastore_config(None)
            log_reads_to(None)


class RECCSchedulerSetup(SchedulerPlugin):
    """Put the client's source paths on the scheduler's ``sys.path`` too.

    The scheduler unpickles task graphs (``dask.delayed``, ``dask.dataframe``), so a graph
    that refers to a researcher's own module needs that module on the scheduler as well.
    """

    name = "recc-scheduler-setup"

    def __init__(self, source_paths: Sequence[str] = ()) -> None:
        self.source_paths = list(source_paths)

    async def start(self, scheduler: Any) -> None:
        for path in reversed(self.source_paths):
            if path not in sys.path:
                sys.path.insert(0, path)
