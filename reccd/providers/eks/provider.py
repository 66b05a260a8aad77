"""The ``eks`` provider's lifecycle: one namespace and one Auto Scaling group per cluster on a shared EKS cluster.

Create, step by step (each yield cumulative; docs/eks.md has names, tags and the IAM policy)::

    1 {"namespace", "user", "cluster", "context", "spec", "policy": True}   namespace + quota, policy, SA, RBAC
    2 + "groups": [{"name", "launch_template", "instance_type", "desired", "max"}]   capacity
    3 + "secret": True                                                   TLS secret
    4 + "deployments": True                                              scheduler + workers
    5 + "service": True                                                 scheduler Service
    6 + "ready": True                                                    nodes, scheduler and workers up

Every name derives from (user, cluster), so `delete` removes everything from any checkpoint,
even None: deployments and service, then (once their pods are gone, so no other cluster's
node is touched) the groups and their launch templates (found by tag), then the namespace.
Every call is idempotent (409 on create and 404 on delete move on). Blocking boto3 and
kubernetes calls run in threads. The daemon reaches the scheduler through a port-forward
(`PortForwardEndpoint`, a `reccd.tunnel` upstream) or, for the loadbalancer route, the
Service's load balancer.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Callable, ClassVar, Sequence

from recc.errors import BadRequest, ClusterNotReady, ProviderError, RECCError
from recc.harvest import IdleFacts
from recc.plan import plan
from recc.spec import ClusterSpec, check_name
from recc import manifests as M
from reccd.contexts import Context
from reccd.providers import Checkpoint, ClusterTLS, Endpoint, Endpoints, ProviderStatus
from reccd.providers.eks.apis import EksApis
from reccd.providers.eks.capacity import delete_capacity, ensure_group, no_instances
from reccd.providers.eks.pods import pod_progress
from reccd.providers.eks.routes import AutoEndpoint, PortForwardEndpoint

LB_CACHE_SECONDS = 30.0  # how long an auto route trusts its last look at the Service's load balancer
# The first look again after a wait's first look (seconds); each later one waits twice as long, up to
# ``poll``. Most waits end soon after they begin (pods stopping, an emptied namespace going, the last
# worker joining once its pod runs): looking again only after a whole ``poll`` (1 s in the daemon)
# made every create and delete a second or more per wait slower than what it waited for. Long waits
# (nodes booting for minutes) still look every ``poll`` after the first ~1.5 s, so this costs a few
# cheap extra calls per wait, not a faster poll.
FIRST_LOOK_AGAIN = 0.1

log = logging.getLogger("reccd.providers.eks")

def _now_micro() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class EksProvider(EksApis):
    name: ClassVar[str] = "eks"

    def __init__(self, workdir: Path | str | None = None, context: Context | str | None = None, *,
                 user: str | None = None, poll: float = 1.0, session_factory: Callable[[], Any] | None = None,
                 worker_death_timeout: float = 120.0, daemon_id: str | None = None) -> None:
        super().__init__(workdir, context, user=user, session_factory=session_factory)
        self.poll = poll
        # the daemon's id (reccd.identity), stamped on what it makes; None for the reaper and `recc orphans`
        self.daemon_id = daemon_id
        self.worker_death_timeout = worker_death_timeout
        self._tls: dict[str, ClusterTLS] = {}
        self._tunnels: dict[str, Any] = {}  # namespace -> reccd.tunnel.Tunnel for the provider's own rpc
        self._lbs: dict[str, tuple[float, dict[str, Any] | None]] = {}  # cluster -> (looked at, load balancer)
        self.lb_failures: dict[str, float] = {}  # namespace -> when its load balancer last did not answer

    # ------------------------------------------------------------------ objects

    def _names(self, name: str, spec: ClusterSpec | None = None) -> M.Names:
        check_name(name)
        return M.Names(user=self.user, cluster=name, job=(spec.job_id if spec else None) or "adhoc")

    def _options(self) -> M.Options:
        import dataclasses

        from recc.datastore import pod_datastore_env

        # the pods' datastore roots for this context (docs/eks-operations.md, "Data from pods")
        return dataclasses.replace(self.context.manifest_options(self.worker_death_timeout),
                                   pod_env=pod_datastore_env(self.context.name),
                                   extra_labels={M.DAEMON_LABEL: self.daemon_id} if self.daemon_id else {})

    # ------------------------------------------------------------------ create

    async def create(self, name: str, spec: ClusterSpec, tls: ClusterTLS) -> AsyncIterator[Checkpoint]:
        names = self._names(name, spec)
        options = self._options()
        the_plan = plan(spec)
        self._tls[names.namespace] = tls
        cp: Checkpoint = {"namespace": names.namespace, "user": self.user, "cluster": name, "job": names.job,
                          "context": self.context.name, "spec": spec.to_dict()}
        for obj in M.policy_objects(spec, names, options):
            await self.apply(obj, update=obj["kind"] == "ResourceQuota")
        cp["policy"] = True
        yield copy.deepcopy(cp)

        cp["groups"] = [await ensure_group(self, names, spec.instance_type, the_plan.nodes)]
        yield copy.deepcopy(cp)

        await self.apply(M.tls_secret(names, tls))
        cp["secret"] = True
        yield copy.deepcopy(cp)

        await self.apply(M.scheduler_deployment(spec, names, options), update=True)
        await self.apply(M.worker_deployment(spec, names, options), update=True)
        cp["deployments"] = True
        yield copy.deepcopy(cp)

        await self.apply(M.scheduler_service(names, options))
        cp["service"] = True
        yield copy.deepcopy(cp)

        await self._wait_ready(names, cp, spec.n_workers)
        if options.route == "loadbalancer":
            cp["load_balancer"] = await self._wait_load_balancer(name)
        elif options.route == "auto":  # never wait: a load balancer that comes later is found by the route
            cp["load_balancer"] = await self.load_balancer(name)
        cp["ready"] = True
        yield copy.deepcopy(cp)

    def _pause(self, looks: int) -> float:
        """How long to wait before look number ``looks + 1`` of a wait (see `FIRST_LOOK_AGAIN`)."""
        return min(self.poll, FIRST_LOOK_AGAIN * 2 ** min(looks, 16))

    async def _wait_load_balancer(self, name: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.context.workers_timeout
        looks = 0
        while (lb := await self.load_balancer(name)) is None:
            if time.monotonic() > deadline:
                raise ProviderError(f"the load balancer of EKS cluster {name!r} got no address within "
                                    f"{self.context.workers_timeout:g} s",
                                    hint="check the AWS Load Balancer Controller, or use route: portforward")
            await asyncio.sleep(self._pause(looks))
            looks += 1
        return lb

    # ------------------------------------------------------------------ waiting

    async def _progress(self, names: M.Names, cp: Checkpoint) -> dict[str, Any]:
        """What exists now: instances, nodes, pods (and why pods are Pending)."""
        groups = [g["name"] for g in cp.get("groups", [])]
        desc = await self.aws("autoscaling", "describe_auto_scaling_groups", AutoScalingGroupNames=groups)
        instances = sum(1 for g in desc["AutoScalingGroups"] for i in g.get("Instances", [])
                        if i.get("LifecycleState") == "InService")
        nodes = await self.k8s("core", "list_node", label_selector=f"{M.CAPACITY_KEY}={names.namespace}",
                               as_json=True)
        ready_nodes = sum(1 for n in nodes["items"] if any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in n.get("status", {}).get("conditions") or []))
        pods = await self.k8s("core", "list_namespaced_pod", names.namespace, as_json=True)
        return {"instances": instances, "nodes": ready_nodes, **pod_progress(pods["items"])}

    async def _wait_ready(self, names: M.Names, cp: Checkpoint, n_workers: int) -> None:
        ctx = self.context
        wanted = sum(g.get("wanted", g["desired"]) for g in cp.get("groups", []))
        start = time.monotonic()
        deadline = start + ctx.capacity_timeout
        nodes_seen_at: float | None = None
        joined = 0
        looks, seen = 0, None
        while True:
            prog = await self._progress(names, cp)
            if prog["failed"]:
                raise ProviderError(f"EKS cluster {names.cluster!r}: pods failed: {', '.join(prog['failed'])}",
                                    hint=f"see `recc logs {names.cluster}`; a scheduler that exits at start is often "
                                         "an image without recc (docs/eks.md, \"The pod image\")")
            if prog["nodes"] and nodes_seen_at is None:
                nodes_seen_at = time.monotonic()
                deadline = max(deadline, nodes_seen_at + ctx.workers_timeout)
            if prog["scheduler"] and prog["workers_running"] >= n_workers:
                try:
                    joined = await self._joined(names.namespace, timeout=5.0)
                except (OSError, asyncio.TimeoutError, RECCError) as e:
                    log.debug("scheduler of %s not answering yet: %r", names.namespace, e)
                if joined >= n_workers:
                    return
            # a milestone (the first Ready node, the scheduler running, every worker pod running) starts the
            # quick looks again: what it waits for next (pods on the node, workers joining) comes soon. Not
            # every pod or node that comes: a 300-worker ramp would then list its pods several times a second.
            now_seen = (prog["nodes"] > 0, prog["scheduler"], prog["workers_running"] >= n_workers)
            if now_seen != seen:
                looks, seen = 0, now_seen
            log.info("%s: instances %d/%d, nodes ready %d, workers joined %d/%d", names.namespace,
                     prog["instances"], wanted, prog["nodes"], joined, n_workers)
            if time.monotonic() > deadline:
                missing = []
                if prog["instances"] < wanted:
                    missing.append(f"capacity: {prog['instances']}/{wanted} instances running "
                                   f"(context max_nodes={ctx.max_nodes})")
                if prog["nodes"] < prog["instances"]:
                    missing.append(f"nodes: {prog['nodes']}/{prog['instances']} instances joined as Ready nodes")
                if prog["pending"]:
                    missing.append("pending pods: " + ", ".join(prog["pending"][:5])
                                   + (f" and {len(prog['pending']) - 5} more" if len(prog["pending"]) > 5 else ""))
                if not prog["scheduler"]:
                    missing.append("the scheduler is not running")
                missing.append(f"workers joined {joined}/{n_workers}")
                raise ProviderError(f"EKS cluster {names.cluster!r} was not ready within "
                                    f"{time.monotonic() - start:.0f} s: " + "; ".join(missing),
                                    hint="raise max_nodes in the context, ask for fewer or smaller workers, "
                                         "or check the image and the launch template")
            await asyncio.sleep(self._pause(looks))
            looks += 1

    # ------------------------------------------------------------------ talking to the scheduler

    def _scheduler_pod(self, namespace: str, component: str = "scheduler") -> str:
        pods = self.k8s_sync("core", "list_namespaced_pod", namespace,
                         label_selector=f"app.kubernetes.io/component={component}",
                         field_selector="status.phase=Running")
        live = [p.metadata.name for p in pods.items if not p.metadata.deletion_timestamp]
        if not live:
            raise ClusterNotReady(f"no running {component} pod in namespace {namespace}")
        return live[0]

    async def _port_forward(self, namespace: str, component: str, port: int) -> socket.socket:
        def open_() -> socket.socket:
            from kubernetes.stream import portforward

            pod = self._scheduler_pod(namespace, component)
            api = self.api()
            with self.pf_lock:
                api["pf_client"].configuration.api_key["authorization"] = self.bearer()
                self.calls["k8s"] += 1
                pf = portforward(api["pf"].connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port))
            # The tunnel owns the socket from here; the proxy thread ends when it is closed.
            sock = pf.socket(port)._socket  # the real socket inside the client's wrapper
            sock.setblocking(False)
            return sock

        return await asyncio.to_thread(open_)

    async def _tunnel(self, namespace: str) -> str:
        """A local address relaying to this cluster's scheduler by port-forward (for the provider's own rpc)."""
        from reccd.tunnel import Tunnel

        tunnel = self._tunnels.get(namespace)
        if tunnel is None:
            endpoint = PortForwardEndpoint(self, namespace, "scheduler", M.SCHEDULER_PORT)

            async def resolve() -> PortForwardEndpoint:
                return endpoint

            tunnel = self._tunnels[namespace] = Tunnel(resolve, backoff_base=0.05, backoff_cap=1.0)
            await tunnel.start()
        return f"tls://127.0.0.1:{tunnel.port}"

    async def _security(self, namespace: str) -> Any:
        from distributed import Security

        tls = self._tls.get(namespace)
        if tls is not None:
            ca, cert, key = tls.ca_cert, tls.worker_cert, tls.worker_key
        else:  # after a daemon restart: the worker leaf (it has clientAuth) from the cluster's secret
            import base64

            secret = await self.k8s("core", "read_namespaced_secret", M.TLS_SECRET, namespace)
            data = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
            ca, cert, key = data["ca.pem"], data["worker.pem"], data["worker-key.pem"]
        return Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, require_encryption=True)

    async def _call(self, namespace: str, op: str, timeout: float = 10.0, **kwargs: Any) -> Any:
        from distributed.core import rpc

        address = await self._tunnel(namespace)
        sec = await self._security(namespace)
        async with rpc(address, connection_args=sec.get_connection_args("client"), timeout=timeout) as r:
            return await asyncio.wait_for(getattr(r, op)(**kwargs), timeout)

    async def _joined(self, namespace: str, timeout: float = 10.0) -> int:
        ident = await self._call(namespace, "identity", timeout=timeout)
        return sum(1 for w in ident.get("workers", {}).values()
                   if w.get("status") not in ("closing", "closing_gracefully", "closed", "failed"))

    # keepalive passes the user's "extend" (epoch seconds) so the in-cluster reaper honours it too
    heartbeat_carries_extension: ClassVar[bool] = True

    async def heartbeat(self, name: str, last: Checkpoint, ttl: float, timeout: float = 10.0,
                        extended_until: float | None = None) -> IdleFacts:
        """Renew the ``recc-heartbeat`` Lease for ``ttl`` seconds and the scheduler's switch; its idle facts.

        ``extended_until`` (the daemon's `recc extend`) goes on the Lease as ``recc.dev/extended-until``."""
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
            raise BadRequest(f"a heartbeat ttl must be a positive number of seconds, got {ttl!r}")
        names = self._names(name)
        holder = f"reccd/{self.user}" + (f"/{self.daemon_id}" if self.daemon_id else "")
        lease = M.heartbeat_lease(names, holder=holder, ttl=ttl, now_micro=_now_micro())
        body: dict[str, Any] = {"spec": lease["spec"]}
        if extended_until:
            lease["metadata"]["annotations"] = {M.EXTENDED_ANNOTATION: f"{float(extended_until):.3f}"}
            body["metadata"] = {"annotations": lease["metadata"]["annotations"]}
        patched = await self.k8s("coord", "patch_namespaced_lease", M.HEARTBEAT_LEASE, names.namespace,
                                body, ok=(404,))
        if patched is None:
            lease["spec"]["acquireTime"] = lease["spec"]["renewTime"]
            await self.k8s("coord", "create_namespaced_lease", names.namespace, lease, ok=(409,))
        return await self._ask_facts(names, "recc_heartbeat", timeout, ttl=float(ttl))

    async def idle_facts(self, name: str, last: Checkpoint, timeout: float = 10.0) -> IdleFacts:
        return await self._ask_facts(self._names(name), "recc_idle_facts", timeout)

    async def _ask_facts(self, names: M.Names, op: str, timeout: float, **kwargs: Any) -> IdleFacts:
        try:
            facts = await self._call(names.namespace, op, timeout=timeout, **kwargs)
        except (OSError, asyncio.TimeoutError) as e:
            raise ProviderError(f"the scheduler of EKS cluster {names.cluster!r} did not answer {op} "
                                f"within {timeout:g} s ({type(e).__name__}: {e})",
                                hint="the cluster may be gone or still starting") from e
        if not isinstance(facts, dict):
            raise ProviderError(f"the scheduler of EKS cluster {names.cluster!r} has no RECC dead-man switch")
        return IdleFacts.from_dict(facts)

    # ------------------------------------------------------------------ endpoints, logs, status

    def endpoints(self, name: str, last: Checkpoint) -> Endpoints:
        if not (last or {}).get("service"):
            raise ClusterNotReady(f"EKS cluster {name!r} has no scheduler service yet")
        ns = self._names(name).namespace
        route = self.context.route
        if route == "loadbalancer" and last.get("load_balancer"):
            lb = last["load_balancer"]
            return Endpoints(Endpoint(lb["host"], lb["ports"][0]), Endpoint(lb["host"], lb["ports"][1]))
        if route == "auto":
            if last.get("load_balancer") and name not in self._lbs:
                self._lbs[name] = (time.monotonic(), last["load_balancer"])
            return Endpoints(scheduler=AutoEndpoint(self, name, ns, "scheduler", M.SCHEDULER_PORT, 0),  # type: ignore[arg-type]
                             dashboard=AutoEndpoint(self, name, ns, "scheduler", M.DASHBOARD_PORT, 1))  # type: ignore[arg-type]
        return Endpoints(scheduler=PortForwardEndpoint(self, ns, "scheduler", M.SCHEDULER_PORT),  # type: ignore[arg-type]
                         dashboard=PortForwardEndpoint(self, ns, "scheduler", M.DASHBOARD_PORT))  # type: ignore[arg-type]

    async def load_balancer(self, name: str) -> dict[str, Any] | None:
        """The scheduler Service's load balancer (host, [scheduler port, dashboard port]) once it has one."""
        svc = await self.k8s("core", "read_namespaced_service", M.SCHEDULER, self._names(name).namespace, ok=(404,))
        ingress = (svc and svc.status and svc.status.load_balancer and svc.status.load_balancer.ingress) or []
        if not ingress:
            return None
        first = ingress[0]
        # ingress.ports lists per-port status where the implementation fills it (the test fake);
        # real AWS load balancers leave it empty and listen on the Service's ports.
        ports = [(first.ports[i].port if first.ports and i < len(first.ports) else p.port)
                 for i, p in enumerate(svc.spec.ports)]
        return {"host": first.ip or first.hostname, "ports": ports}

    async def known_load_balancer(self, name: str) -> dict[str, Any] | None:
        """The Service's load balancer as last seen (looked up again after `LB_CACHE_SECONDS`)."""
        seen = self._lbs.get(name)
        if seen is None or time.monotonic() - seen[0] > LB_CACHE_SECONDS:
            seen = self._lbs[name] = (time.monotonic(), await self.load_balancer(name))
        return seen[1]

    # logs(since_seconds=..., timestamps=True) answers only new lines (recc logs --follow; reccd.manager.logs)
    incremental_logs: ClassVar[bool] = True

    async def logs(self, name: str, last: Checkpoint, tail: int | None = None, since_seconds: int | None = None,
                   timestamps: bool = False) -> dict[str, list[str]]:
        """Pod logs through the API, one read per pod (reccd/providers/eks/logs.py)."""
        from reccd.providers.eks.logs import pod_logs

        return await pod_logs(self, name, tail, since_seconds, timestamps)

    async def status(self, names: Sequence[str], lasts: Sequence[Checkpoint]) -> list[ProviderStatus]:
        out = []
        for name, last in zip(names, lasts):
            n = self._names(name)
            dep = await self.k8s("apps", "read_namespaced_deployment", M.WORKER, n.namespace, ok=(404,))
            sched = await self.k8s("apps", "read_namespaced_deployment", M.SCHEDULER, n.namespace, ok=(404,))
            nodes = await self.k8s("core", "list_node", label_selector=f"{M.CAPACITY_KEY}={n.namespace}",
                                   as_json=True)
            alive = bool(sched and (sched.status.ready_replicas or 0) >= 1)
            out.append(ProviderStatus(name=name, alive=alive,
                                      workers_ready=(dep.status.ready_replicas or 0) if dep else 0,
                                      workers_desired=(dep.spec.replicas or 0) if dep else 0,
                                      nodes=len(nodes["items"]), detail={"namespace": n.namespace}))
        return out

    async def list_owned(self) -> list[str]:
        """This daemon's clusters on the EKS cluster that nobody heartbeats (reccd/providers/eks/sweep.py):
        never another daemon's, never one with a fresh Lease."""
        from reccd.providers.eks.sweep import sweepable

        return await sweepable(self)

    # ------------------------------------------------------------------ scale and delete

    async def scale(self, name: str, n_workers: int, last: Checkpoint) -> Checkpoint:
        if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 0:
            raise BadRequest(f"n_workers must be a whole number >= 0, got {n_workers!r}")
        if not (last or {}).get("deployments"):
            raise ClusterNotReady(f"EKS cluster {name!r} has no deployments to scale")
        cp = copy.deepcopy(last)
        spec = ClusterSpec.from_dict(cp["spec"]).replace(n_workers=n_workers)
        names = self._names(name, spec)
        await self.apply(M.resource_quota(spec, names), update=True)
        cp["groups"] = [await ensure_group(self, names, spec.instance_type, plan(spec).nodes)]
        await self.k8s("apps", "patch_namespaced_deployment_scale", M.WORKER, names.namespace,
                      {"spec": {"replicas": n_workers}})
        cp["spec"] = spec.to_dict()
        await self._wait_ready(names, cp, n_workers)
        cp["ready"] = True
        return cp

    async def delete(self, name: str, last: Checkpoint | None) -> None:
        names = self._names(name)
        ns = names.namespace
        await self._close_tunnel(ns)
        self._lbs.pop(name, None)
        self.lb_failures.pop(ns, None)
        # 1. what runs: service, deployments (their pods go with them)
        await self.k8s("core", "delete_namespaced_service", M.SCHEDULER, ns, ok=(404,))
        for dep in (M.WORKER, M.SCHEDULER):
            await self.k8s("apps", "delete_namespaced_deployment", dep, ns, ok=(404,),
                          propagation_policy="Foreground")
        await self._wait_until(lambda: self._no_pods(ns), self.context.workers_timeout,
                               f"the pods of namespace {ns} to stop")
        # 2. capacity: only after the pods are gone; found by tag, whatever the checkpoint says
        await delete_capacity(self, ns, {g["name"] for g in (last or {}).get("groups", [])})
        await self._wait_until(lambda: no_instances(self, ns), self.context.capacity_timeout,
                               f"the instances of namespace {ns} to terminate")
        # 3. the namespace, with the secret, lease and policy objects
        await self.k8s("core", "delete_namespace", ns, ok=(404, 409))
        await self._wait_until(lambda: self._namespace_gone(ns), self.context.workers_timeout,
                               f"namespace {ns} to go")
        self._tls.pop(ns, None)

    def _no_pods(self, ns: str) -> bool:
        pods = self.k8s_sync("core", "list_namespaced_pod", ns, ok=(404,), as_json=True, limit=1)
        return pods is None or not pods["items"]

    def _namespace_gone(self, ns: str) -> bool:
        return self.k8s_sync("core", "read_namespace", ns, ok=(404,)) is None

    async def _wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        looks = 0
        while not await asyncio.to_thread(check):
            if time.monotonic() > deadline:
                raise ProviderError(f"timed out after {timeout:g} s waiting for {what}",
                                    hint="run the delete again; it picks up where it stopped")
            await asyncio.sleep(self._pause(looks))
            looks += 1

    async def _close_tunnel(self, ns: str) -> None:
        tunnel = self._tunnels.pop(ns, None)
        if tunnel is not None:
            await tunnel.close()

    async def close(self) -> None:
        """Close the provider's own tunnels and the API client."""
        for ns in list(self._tunnels):
            await self._close_tunnel(ns)
        await self.close_api()
