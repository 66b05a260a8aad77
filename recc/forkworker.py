"""Nanny preload: the nanny forks its worker process instead of spawning a new interpreter.

A spawned worker imports distributed again, about a second of CPU and most of a local worker's
start (on two cores, most of create-to-first-result); the nanny has imported it already. The
fork also carries the nanny's environment block and command line, so the worker is found by
the cluster's process mark like every other cluster process.

Used as ``dask worker --preload-nanny recc.forkworker`` by the ``local`` provider. Linux only:
elsewhere (no fork, or fork unsafe with threads as on macOS) the worker is spawned as usual.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any


def _in_child() -> None:
    # The nanny's handlers (distributed._signals) set an event on the nanny's event loop, which does
    # not run in the child: kept, they would swallow the SIGTERM with which the nanny or a delete ends
    # the worker. The loop's wake-up fd is the nanny's too.
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def dask_setup(nanny: Any) -> None:
    """Run by the nanny before it starts its worker process."""
    if sys.platform != "linux":
        return
    import dask.config

    os.register_at_fork(after_in_child=_in_child)
    dask.config.set({"distributed.worker.multiprocessing-method": "fork"})
