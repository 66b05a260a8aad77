"""The stand-in kubelet: a bound pod's first container runs as a local process.

The process runs in its own session (so a stop signals its whole process group), with
stdout and stderr going to a log file the ``pods/{name}/log`` endpoint reads. See
`tests.fakekube.podspec` for how the container's command, env and volumes are translated.
Only the first container runs; any others are reported as running so the pod can be Ready.
Readiness is "the process has started" (probes are not run). A container that exits makes
the pod Succeeded (exit 0) or Failed; nothing restarts it, and its Deployment does not
replace it (a crash stays visible instead of looping).

Deleting a pod sends SIGTERM to its process group, SIGKILL after the pod's grace period
(capped by ``max_grace``), and removes the pod once the process is gone.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tests.fakekube import kinds as K
from tests.fakekube import podspec as P
from tests.fakekube.events import record, set_condition
from tests.fakekube.selectors import labels_match, map_selector_requirements
from tests.fakekube.store import Store

log = logging.getLogger("fakekube.kubelet")
HOST_PORTS_ANNOTATION = "fakekube.recc.dev/host-ports"
TERMINAL = ("Succeeded", "Failed")


@dataclass
class Runtime:
    uid: str
    namespace: str
    name: str
    folder: Path
    ports: dict[int, int] = field(default_factory=dict)   # containerPort -> host port
    proc: asyncio.subprocess.Process | None = None
    started: bool = False
    exit_code: int | None = None
    stopping: bool = False

    @property
    def log_path(self) -> Path:
        return self.folder / "container.log"


async def _stamp_lines(stream: asyncio.StreamReader | None, path: Path) -> None:
    """Append each line of ``stream`` to ``path`` as ``<RFC 3339 nano time> <line>`` (the CRI log form)."""
    if stream is None:
        return
    with open(path, "ab") as out:
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line over the reader's limit: take what is there
                line = await stream.read(2**16)
            if not line:
                return
            now = datetime.now(timezone.utc)
            stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}000Z"
            out.write(stamp.encode() + b" " + (line if line.endswith(b"\n") else line + b"\n"))
            out.flush()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free_port() -> int:
    """A free port below the kernel's ephemeral range. The pod's process binds it a second or more later
    (an interpreter's start); a port from bind(0) is in that range, and meanwhile any outgoing connection
    on the machine could take it as its local end, failing the pod (address already in use)."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        if _port_is_free(port):
            return port
    with socket.socket() as s:  # a crowded range: the old way, race and all
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Kubelet:
    def __init__(self, store: Store, workdir: Path, *, remap_ports: bool = True, run_processes: bool = True,
                 max_grace: float = 5.0):
        self.store = store
        self.workdir = workdir
        self.remap_ports = remap_ports
        self.run_processes = run_processes
        self.max_grace = max_grace
        self.runtimes: dict[str, Runtime] = {}
        self._port_memory: dict[tuple[str, str, int], int] = {}
        self._tasks: set[asyncio.Task] = set()

    # ---- the loop's entry point ----------------------------------------------------------
    async def reconcile(self) -> None:
        nodes = {n["metadata"]["name"] for n in self.store.iter(K.NODES)}
        live = set()
        for pod in list(self.store.iter(K.PODS)):
            meta, spec = pod["metadata"], pod.get("spec") or {}
            uid = meta["uid"]
            live.add(uid)
            rt = self.runtimes.get(uid)
            if meta.get("deletionTimestamp"):
                if rt is None or not rt.started or rt.exit_code is not None:
                    self._forget(uid)
                    self.store.remove(K.PODS, meta["namespace"], meta["name"])
                elif not rt.stopping:
                    rt.stopping = True
                    self._spawn(self._stop(rt, float(meta.get("deletionGracePeriodSeconds", 30)), remove=True))
                continue
            if spec.get("nodeName") in nodes and (rt is None or not rt.started) \
                    and (pod.get("status") or {}).get("phase") not in TERMINAL:
                try:
                    await self._start(pod)
                except Exception as exc:  # a pod the fake cannot run must not stop the others
                    log.exception("cannot start pod %s/%s", meta["namespace"], meta["name"])
                    rt = self.runtimes.get(uid)
                    if rt is not None:
                        self._set_waiting(pod, rt, "RunContainerError", f"fakekube: {exc!r}")
        for uid in [u for u in self.runtimes if u not in live]:
            rt = self.runtimes[uid]
            if rt.started and rt.exit_code is None and not rt.stopping:
                rt.stopping = True
                self._spawn(self._stop(rt, 1.0, remove=False))
            elif not rt.stopping:
                self._forget(uid)

    async def close(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL after a second) and remove the folders."""
        stops = [self._stop(rt, 1.0, remove=False) for rt in list(self.runtimes.values())
                 if rt.started and rt.exit_code is None]
        await asyncio.gather(*stops, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for uid in list(self.runtimes):
            self._forget(uid)

    # ---- lookups for the API, port-forward and service status ----------------------------
    def runtime_of(self, pod: dict) -> Runtime | None:
        return self.runtimes.get(pod["metadata"]["uid"])

    def host_port(self, pod: dict, port: int) -> int:
        rt = self.runtime_of(pod)
        return rt.ports.get(port, port) if rt else port

    def endpoint(self, namespace: str, service: dict, self_uid: str | None = None) -> tuple[dict, Runtime] | None:
        """A started pod the service selects (the asking pod itself counts as started)."""
        selector = (service.get("spec") or {}).get("selector")
        if not selector:
            return None
        reqs = map_selector_requirements(selector)
        best = None
        for pod in self.store.iter(K.PODS, namespace):
            rt = self.runtimes.get(pod["metadata"]["uid"])
            if rt is None or pod["metadata"].get("deletionTimestamp") or not labels_match(reqs, pod):
                continue
            if rt.uid == self_uid or (rt.started and rt.exit_code is None):
                if best is None or pod["metadata"]["creationTimestamp"] > best[0]["metadata"]["creationTimestamp"]:
                    best = (pod, rt)
        return best

    def service_port(self, namespace: str, name: str, port: int | None, self_uid: str | None = None) -> int | None:
        """The host port behind ``name:port`` (None while the service has no started pod)."""
        svc = self.store.find(K.SERVICES, namespace, name)
        if svc is None:
            return None
        found = self.endpoint(namespace, svc, self_uid)
        if found is None:
            return None
        pod, rt = found
        spec_port = next((p for p in svc["spec"].get("ports") or [] if p.get("port") == port), None)
        target = spec_port.get("targetPort", port) if spec_port else port
        if isinstance(target, str) and not target.isdigit():
            target = next((cp["containerPort"] for c in pod["spec"].get("containers") or []
                           for cp in c.get("ports") or [] if cp.get("name") == target), None)
            if target is None:
                return None
        return rt.ports.get(int(target), int(target))

    # ---- starting --------------------------------------------------------------------------
    def _owner_key(self, pod: dict) -> str:
        for ref in pod["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "ReplicaSet":
                rs = self.store.find(K.REPLICASETS, pod["metadata"]["namespace"], ref["name"])
                for owner in (rs or {}).get("metadata", {}).get("ownerReferences") or []:
                    return f"{owner['kind']}/{owner['name']}"
            return f"{ref.get('kind')}/{ref.get('name')}"
        return f"Pod/{pod['metadata']['name']}"

    def _allocate_ports(self, pod: dict, rt: Runtime) -> None:
        if rt.ports:
            return
        declared = [cp["containerPort"] for c in pod["spec"].get("containers") or [] for cp in c.get("ports") or []
                    if isinstance(cp.get("containerPort"), int)]
        in_use = {p for r in self.runtimes.values() for p in r.ports.values()}
        for port in declared:
            if not self.remap_ports:
                rt.ports[port] = port
                continue
            key = (rt.namespace, self._owner_key(pod), port)
            host = self._port_memory.get(key)
            if host is None or host in in_use or not _port_is_free(host):
                host = _free_port()
            self._port_memory[key] = host
            rt.ports[port] = host
            in_use.add(host)

    async def _start(self, pod: dict) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        ns, uid = meta["namespace"], meta["uid"]
        rt = self.runtimes.get(uid)
        if rt is None:
            rt = Runtime(uid, ns, meta["name"], self.workdir / "pods" / uid)
            rt.folder.mkdir(parents=True, exist_ok=True)
            self.runtimes[uid] = rt
        self._allocate_ports(pod, rt)
        container = spec["containers"][0]
        try:
            argv, env, cwd = self._prepare(pod, container, rt)
        except P.NotReady as why:
            self._set_waiting(pod, rt, why.reason, why.message)
            return
        rt.started = True
        if self.run_processes:
            try:
                # through a pipe: each line is stored with the time it arrived, as a container runtime
                # does, so the log endpoint can answer timestamps=true and sinceSeconds
                rt.proc = await asyncio.create_subprocess_exec(
                    *argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
                self._spawn(_stamp_lines(rt.proc.stdout, rt.log_path))
            except OSError as exc:
                rt.exit_code = 128
                self._set_terminated(pod, rt, 128, "StartError", f"failed to start {argv[0]!r}: {exc}")
                return
            self._spawn(self._wait(rt))
        self._set_running(pod, rt)

    def _prepare(self, pod: dict, container: dict, rt: Runtime) -> tuple[list[str], dict[str, str], str]:
        ns = rt.namespace
        argv = list(container.get("command") or []) + list(container.get("args") or [])
        if not argv and self.run_processes:
            raise P.NotReady("RunContainerError", "fakekube runs a container's command/args; this one has none "
                             "(the image's entrypoint cannot be run locally)")
        own_env = P.container_env(self.store, pod, container)
        services = sorted(self.store.iter(K.SERVICES, ns), key=lambda s: s["metadata"]["name"])
        local_names = [s["metadata"]["name"] for s in services]
        texts = argv + list(own_env.values()) + [container.get("workingDir", "")]
        for ref_ns, ref_name in sorted(P.service_refs(texts, ns, local_names)):
            if self.store.find(K.SERVICES, ref_ns, ref_name) is None:
                raise P.NotReady("ContainerCreating", f"fakekube: waiting for service {ref_ns}/{ref_name} to exist")
            svc = self.store.find(K.SERVICES, ref_ns, ref_name)
            if svc["spec"].get("selector") and self.endpoint(ref_ns, svc, rt.uid) is None:
                raise P.NotReady("ContainerCreating", f"fakekube: waiting for a started pod behind service "
                                 f"{ref_ns}/{ref_name}")
        volumes = P.materialize_volumes(self.store, pod, rt.folder, self.workdir / "shared")
        mounts = P.mount_map(container, volumes)

        def resolve(name: str, namespace: str, port: int | None) -> str | None:
            if self.store.find(K.SERVICES, namespace, name) is None:
                return None
            if port is None:
                return "127.0.0.1"
            host = self.service_port(namespace, name, port, rt.uid)
            return None if host is None else f"127.0.0.1:{host}"

        rewrite = P.make_rewriter(mounts, rt.ports, resolve, ns, local_names)
        env = P.base_environment()
        env["HOSTNAME"] = pod["metadata"]["name"]
        if pod["spec"].get("enableServiceLinks", True):
            for svc in services:
                ports = [(p.get("name", ""), self.service_port(ns, svc["metadata"]["name"], p.get("port"), rt.uid)
                          or p.get("port")) for p in svc["spec"].get("ports") or []]
                env.update(P.service_link_env(svc["metadata"]["name"], ports))
        own_env = {k: rewrite(v) for k, v in own_env.items()}
        env.update(own_env)
        env["FAKEKUBE_MOUNTS"] = json.dumps(mounts)
        argv = [rewrite(P.expand(a, own_env)) for a in argv]
        cwd = rewrite(container["workingDir"]) if container.get("workingDir") else str(rt.folder)
        return argv, env, cwd

    async def _wait(self, rt: Runtime) -> None:
        code = await rt.proc.wait()
        rt.exit_code = 128 - code if code < 0 else code   # -15 (SIGTERM) -> 143, as a container reports it
        pod = self.store.find(K.PODS, rt.namespace, rt.name)
        if pod is not None and pod["metadata"]["uid"] == rt.uid:
            reason = "Completed" if rt.exit_code == 0 else "Error"
            self._set_terminated(pod, rt, rt.exit_code, reason, None)
        self.store.kick.set()

    async def _stop(self, rt: Runtime, grace: float, *, remove: bool) -> None:
        rt.stopping = True
        pod = self.store.find(K.PODS, rt.namespace, rt.name)
        if pod is not None:
            record(self.store, pod, "Killing", f"Stopping container {pod['spec']['containers'][0]['name']}",
                   component="kubelet")
        if rt.proc is not None and rt.exit_code is None:
            _signal(rt.proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(rt.proc.wait()), max(0.0, min(grace, self.max_grace)))
            except asyncio.TimeoutError:
                _signal(rt.proc.pid, signal.SIGKILL)
                await rt.proc.wait()
            _signal(rt.proc.pid, signal.SIGKILL)   # stragglers left in the process group
        if remove:
            pod = self.store.find(K.PODS, rt.namespace, rt.name)
            if pod is not None and pod["metadata"]["uid"] == rt.uid:
                self.store.remove(K.PODS, rt.namespace, rt.name)
        self._forget(rt.uid)

    def _forget(self, uid: str) -> None:
        rt = self.runtimes.pop(uid, None)
        if rt is not None:
            if rt.proc is not None and rt.exit_code is not None:
                _signal(rt.proc.pid, signal.SIGKILL)   # children the container left in its session
            shutil.rmtree(rt.folder, ignore_errors=True)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- pod status ------------------------------------------------------------------------
    def _container_statuses(self, pod: dict, first_state: dict, ready: bool) -> list[dict]:
        out = []
        for i, c in enumerate(pod["spec"]["containers"]):
            state = first_state if i == 0 else ({"running": first_state["running"]} if "running" in first_state
                                                else first_state)
            out.append({"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": ready,
                        "restartCount": 0, "started": "running" in state, "state": state,
                        **({"containerID": f"fakekube://{pod['metadata']['uid']}"} if "waiting" not in state else {})})
        return out

    def _write_status(self, pod: dict, rt: Runtime, mutate) -> None:
        fresh = self.store.find(K.PODS, rt.namespace, rt.name)
        if fresh is None or fresh["metadata"]["uid"] != rt.uid:
            return
        mutate(fresh, self.store.clock.rfc3339())
        if rt.ports:
            fresh["metadata"].setdefault("annotations", {})[HOST_PORTS_ANNOTATION] = json.dumps(
                {str(k): v for k, v in sorted(rt.ports.items())})
        self.store.write(K.PODS, fresh)

    def _set_waiting(self, pod: dict, rt: Runtime, reason: str, message: str) -> None:
        def mutate(p: dict, now: str) -> None:
            set_condition(p, now, "Ready", "False", "ContainersNotReady", "containers with unready status")
            p["status"]["containerStatuses"] = self._container_statuses(
                p, {"waiting": {"reason": reason, "message": message}}, False)
        self._write_status(pod, rt, mutate)

    def _set_running(self, pod: dict, rt: Runtime) -> None:
        def mutate(p: dict, now: str) -> None:
            st = p["status"]
            st.update(phase="Running", podIP="127.0.0.1", podIPs=[{"ip": "127.0.0.1"}], hostIP="127.0.0.1",
                      hostIPs=[{"ip": "127.0.0.1"}], startTime=st.get("startTime", now))
            for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled"):
                set_condition(p, now, t, "True")
            st["containerStatuses"] = self._container_statuses(p, {"running": {"startedAt": now}}, True)
        self._write_status(pod, rt, mutate)
        record(self.store, pod, "Started", f"Started container {pod['spec']['containers'][0]['name']}",
               component="kubelet")

    def _set_terminated(self, pod: dict, rt: Runtime, code: int, reason: str, message: str | None) -> None:
        def mutate(p: dict, now: str) -> None:
            st = p["status"]
            st["phase"] = "Succeeded" if code == 0 else "Failed"
            for t in ("Ready", "ContainersReady"):
                set_condition(p, now, t, "False", "PodCompleted" if code == 0 else "PodFailed")
            previous = (st.get("containerStatuses") or [{}])[0].get("state", {}).get("running", {})
            term = {"exitCode": code, "reason": reason, "startedAt": previous.get("startedAt", now),
                    "finishedAt": now, **({"message": message} if message else {})}
            st["containerStatuses"] = self._container_statuses(p, {"terminated": term}, False)
        self._write_status(pod, rt, mutate)


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGKILL when the thread that started us ends, so
    pod processes cannot outlive a fake whose owner crashed without stopping it."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _signal(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
