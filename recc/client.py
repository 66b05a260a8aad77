"""`RSHClient`: a `distributed.Client` that runs locally or on a RECC cluster with the same code."""

from __future__ import annotations

import os
from typing import Any

import dask.config
from distributed import Client

from recc.cluster import RECCCluster
from recc.daemon_client import DaemonClient
from recc.errors import TemplateNotFound
from recc.plugins import DatastoreSetup, RECCSchedulerSetup, RECCWorkerSetup
from recc.spec import ClusterSpec
from recc.templates import list_templates


def cluster_target() -> str | None:
    """Where `RSHClient()` without arguments should run: ``RECC_CLUSTER``, then ``recc.cluster`` in Dask config."""
    return os.environ.get("RECC_CLUSTER") or dask.config.get("recc.cluster", None)


class RSHClient(Client):
    """A Dask client that decides where to run from its argument, ``RECC_CLUSTER`` or config.

    - ``RSHClient(n_workers=4)``: an in-process `LocalCluster` (nothing set anywhere);
    - ``RSHClient(cluster)``: a `RECCCluster` (or any Dask cluster);
    - ``RSHClient("name")``: attach to a running RECC cluster by name;
    - ``RSHClient()`` with ``RECC_CLUSTER=<template>``: create a cluster for this client
      through the daemon and delete it when the client closes; with ``RECC_CLUSTER=<name>``
      of a running cluster, attach to it.

    It never connects directly to workers: remote workers are only reachable through the scheduler.
    """

    def __init__(self, address: Any = None, *, n_workers: int | None = None, threads_per_worker: int | None = None,
                 processes: bool | None = None, asynchronous: bool = False, env: dict[str, str] | None = None,
                 source_paths: list[str] | None = None, **kwargs: Any) -> None:
        self._recc_owned: RECCCluster | None = None
        from recc.awscreds import use_daemon_credentials

        use_daemon_credentials()  # boto3 / s3fs in this process get the daemon's short-lived credentials
        if isinstance(address, str) and "://" not in address:
            address = self._recc_owned = RECCCluster.from_name(address, asynchronous=asynchronous)
        elif address is None and not dask.config.get("scheduler-address", None) and cluster_target():
            address = self._recc_owned = self._cluster_for(cluster_target() or "", n_workers, asynchronous)
        elif address is None:
            local = {"n_workers": n_workers, "threads_per_worker": threads_per_worker, "processes": processes}
            kwargs.update({k: v for k, v in local.items() if v is not None})
        spec: ClusterSpec | None = getattr(address, "spec", None)
        self._recc_plugin = RECCWorkerSetup(
            env={**(spec.env if spec else {}), **(env or {})},
            source_paths=[*(spec.source_paths if spec else ()), *(source_paths or [])],
        )
        # a snapshot of this process's datastore settings, so workers read the same roots
        self._recc_datastores = DatastoreSetup()
        kwargs["direct_to_workers"] = False
        super().__init__(address, asynchronous=asynchronous, **kwargs)

    @staticmethod
    def _cluster_for(target: str, n_workers: int | None, asynchronous: bool) -> RECCCluster:
        daemon = DaemonClient.connect(start=True)
        running = [c["name"] for c in daemon.list_clusters()]
        if target in running:
            return RECCCluster.from_name(target, asynchronous=asynchronous, daemon=daemon)
        templates = list_templates()
        if target in templates:
            return RECCCluster(target, n_workers=n_workers, asynchronous=asynchronous, daemon=daemon)
        raise TemplateNotFound(
            f"RECC_CLUSTER={target!r} is neither a running cluster nor a template",
            hint=f"templates: {', '.join(sorted(templates))}; running: {', '.join(running) or 'none'}",
        )

    async def _start(self, timeout: Any = None, **kwargs: Any) -> None:
        cluster = self._recc_owned
        if cluster is not None and cluster.security is None:
            # an asynchronous cluster is started only now, so its TLS material arrives late
            await cluster
            self.security = cluster.security
            self.connection_args = self.security.get_connection_args("client")
            self.rpc.connection_args = self.connection_args
        if timeout is None:
            await super()._start(**kwargs)
        else:
            await super()._start(timeout=timeout, **kwargs)
        for plugin in (self._recc_plugin, self._recc_datastores):
            await self._register_worker_plugin(plugin, plugin.name, idempotent=False)
        if self._recc_plugin.source_paths:
            scheduler_setup = RECCSchedulerSetup(self._recc_plugin.source_paths)
            await self._register_scheduler_plugin(scheduler_setup, scheduler_setup.name, idempotent=False)

    async def _close(self, fast: bool = False) -> None:
        await super()._close(fast=fast)
        if self._recc_owned is not None:
            await self._recc_owned._close()
