"""Turn a pod's first container into a local command line, environment and folders.

The rewrites (a pod runs on this machine, not in a container, so some in-container names
must be translated; the text is rewritten in ``command``, ``args``, env values and
``workingDir``, nowhere else):

1. Service names: ``<svc>.<ns>.svc[.cluster.local][:<port>]`` and, for services of the pod's
   own namespace, ``<svc>:<port>`` become ``127.0.0.1[:<host port>]``, where the host port
   is the one the service's target pod really listens on (rule 3). A pod that names a
   service waits (ContainerCreating) until the service exists and selects a started pod.
2. Volume mounts: each ``volumeMount.mountPath`` (longest first) becomes a per-pod folder
   holding the volume's files: Secret and ConfigMap keys (``items``/``defaultMode``
   honoured), projected secrets/configMaps, emptyDir (empty), hostPath (the host path
   itself), anything else (nfs, PVC, csi: EFS in real life) a folder shared by every pod
   naming the same source. ``FAKEKUBE_MOUNTS`` (JSON mountPath -> folder) is also set.
3. Ports (when port remapping is on, the default): every declared ``containerPort`` P of
   the pod gets a free host port H on 127.0.0.1, and P as a stand-alone number is replaced
   by H (``--port 8786``, ``--port=8786``, ``tls://:8786``, ``bind(('', 8786))``), so two
   clusters' schedulers can both "listen on 8786". The pod's annotation
   ``fakekube.recc.dev/host-ports`` records ``{"P": H}``; port-forwards to P and the
   LoadBalancer status use H. Ports that are not declared are used as they are.

``$(VAR)`` references in command, args and env values are expanded from the container's env
first, as Kubernetes does. The process env is this process's environment (so ``python`` and
``dask`` resolve to the running interpreter's folder, put first on PATH) plus the service
links (``<SVC>_SERVICE_HOST=127.0.0.1``, ``<SVC>_SERVICE_PORT=<host port>``), ``HOSTNAME``,
``envFrom`` and ``env`` (value, secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys
from decimal import ROUND_CEILING
from pathlib import Path
from typing import Callable

from tests.fakekube import kinds as K
from tests.fakekube import quantity as Q
from tests.fakekube.store import Store

SVC_FQDN = re.compile(r"(?<![\w.-])(?P<svc>[a-z0-9]([-a-z0-9]*[a-z0-9])?)\.(?P<ns>[a-z0-9]([-a-z0-9]*[a-z0-9])?)"
                      r"\.svc(?:\.cluster\.local)?\.?(?::(?P<port>\d+))?(?![\w-])")
VAR_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z0-9]+)\)")


class NotReady(Exception):
    """The pod cannot start yet: (reason, message) for its container's waiting state."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


def expand(text: str, env: dict[str, str]) -> str:
    return VAR_REF.sub(lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), text)


def _lookup(store: Store, kind: K.Kind, namespace: str, name: str, key: str | None, optional: bool) -> str | None:
    obj = store.find(kind, namespace, name)
    what = "secret" if kind is K.SECRETS else "configmap"
    if obj is None:
        if optional:
            return None
        raise NotReady("CreateContainerConfigError", f'{what} "{name}" not found')
    if key is None:
        return ""
    if kind is K.SECRETS:
        data = obj.get("data") or {}
        if key in data:
            return base64.b64decode(data[key]).decode(errors="replace")
    else:
        if key in (obj.get("data") or {}):
            return obj["data"][key]
    if optional:
        return None
    raise NotReady("CreateContainerConfigError", f"couldn't find key {key} in {kind.kind} {namespace}/{name}")


def _field(pod: dict, path: str) -> str:
    meta = pod["metadata"]
    if m := re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path):
        return (meta.get(m[1]) or {}).get(m[2], "")
    simple = {"metadata.name": meta["name"], "metadata.namespace": meta.get("namespace", ""),
              "metadata.uid": meta.get("uid", ""), "spec.nodeName": pod["spec"].get("nodeName", ""),
              "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
              "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1", "status.podIPs": "127.0.0.1"}
    return simple.get(path, "")


def _resource_field(container: dict, ref: dict) -> str:
    resource = ref.get("resource", "")
    which, _, name = resource.partition(".")
    values = (container.get("resources") or {}).get(which) or {}
    if name not in values:
        return "0"
    value = Q.parse(values[name]) / Q.parse(ref.get("divisor", "1"))
    return str(int(value.to_integral_value(rounding=ROUND_CEILING)))


def container_env(store: Store, pod: dict, container: dict) -> dict[str, str]:
    """The container's own variables (envFrom, then env), as Kubernetes resolves them."""
    ns = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for key, kind in (("secretRef", K.SECRETS), ("configMapRef", K.CONFIGMAPS)):
            ref = source.get(key)
            if not ref:
                continue
            obj = store.find(kind, ns, ref["name"])
            if obj is None:
                if ref.get("optional"):
                    continue
                raise NotReady("CreateContainerConfigError", f'{"secret" if kind is K.SECRETS else "configmap"} '
                               f'"{ref["name"]}" not found')
            for k, v in (obj.get("data") or {}).items():
                env[prefix + k] = base64.b64decode(v).decode(errors="replace") if kind is K.SECRETS else v
    for item in container.get("env") or []:
        name = item["name"]
        if "value" in item or "valueFrom" not in item:
            env[name] = expand(str(item.get("value", "")), env)
            continue
        src = item["valueFrom"]
        value: str | None
        if "secretKeyRef" in src:
            r = src["secretKeyRef"]
            value = _lookup(store, K.SECRETS, ns, r["name"], r["key"], bool(r.get("optional")))
        elif "configMapKeyRef" in src:
            r = src["configMapKeyRef"]
            value = _lookup(store, K.CONFIGMAPS, ns, r["name"], r["key"], bool(r.get("optional")))
        elif "fieldRef" in src:
            value = _field(pod, src["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in src:
            value = _resource_field(container, src["resourceFieldRef"])
        else:
            value = ""
        if value is not None:
            env[name] = value
    return env


def _write(path: Path, content: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    path.chmod(mode)


def _write_keys(store: Store, folder: Path, kind: K.Kind, ns: str, source: dict, name_key: str) -> None:
    name = source.get(name_key)
    obj = store.find(kind, ns, name)
    if obj is None:
        if source.get("optional"):
            return
        raise NotReady("ContainerCreating", f'MountVolume.SetUp failed: {"secret" if kind is K.SECRETS else "configmap"}'
                       f' "{name}" not found')
    files: dict[str, bytes] = {}
    if kind is K.SECRETS:
        files = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    else:
        files = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        files.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    mode = int(source.get("defaultMode", 0o644))
    items = source.get("items")
    if items:
        for item in items:
            if item["key"] in files:
                _write(folder / item["path"], files[item["key"]], int(item.get("mode", mode)))
    else:
        for key, content in files.items():
            _write(folder / key, content, mode)


def materialize_volumes(store: Store, pod: dict, pod_dir: Path, shared_dir: Path) -> dict[str, Path]:
    """Create every volume of the pod; returns volume name -> local folder."""
    ns = pod["metadata"]["namespace"]
    out: dict[str, Path] = {}
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        name = vol["name"]
        folder = pod_dir / "volumes" / name
        if "hostPath" in vol:
            out[name] = Path(vol["hostPath"]["path"])
            continue
        source = {k: v for k, v in vol.items() if k != "name"}
        if not any(k in vol for k in ("secret", "configMap", "emptyDir", "projected", "downwardAPI")):
            digest = hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:16]
            folder = shared_dir / digest
        folder.mkdir(parents=True, exist_ok=True)
        if "secret" in vol:
            _write_keys(store, folder, K.SECRETS, ns, vol["secret"], "secretName")
        elif "configMap" in vol:
            _write_keys(store, folder, K.CONFIGMAPS, ns, vol["configMap"], "name")
        elif "projected" in vol:
            for src in vol["projected"].get("sources") or []:
                if "secret" in src:
                    _write_keys(store, folder, K.SECRETS, ns, src["secret"], "name")
                elif "configMap" in src:
                    _write_keys(store, folder, K.CONFIGMAPS, ns, src["configMap"], "name")
                elif "serviceAccountToken" in src:
                    _write(folder / src["serviceAccountToken"].get("path", "token"), b"fakekube-token", 0o644)
        elif "downwardAPI" in vol:
            for item in vol["downwardAPI"].get("items") or []:
                if "fieldRef" in item:
                    _write(folder / item["path"], _field(pod, item["fieldRef"]["fieldPath"]).encode(), 0o644)
        out[name] = folder
    return out


def mount_map(container: dict, volumes: dict[str, Path]) -> dict[str, str]:
    """mountPath -> local folder for the container's volumeMounts."""
    out = {}
    for m in container.get("volumeMounts") or []:
        if m.get("name") not in volumes:
            raise NotReady("CreateContainerConfigError", f"volume {m.get('name')!r} not found in the pod")
        local = volumes[m["name"]] / m["subPath"] if m.get("subPath") else volumes[m["name"]]
        out[m["mountPath"].rstrip("/") or "/"] = str(local)
    return out


def make_rewriter(mounts: dict[str, str], ports: dict[int, int],
                  service: Callable[[str, str, int | None], str | None],
                  namespace: str, local_services: list[str]) -> Callable[[str], str]:
    """The text rewrite of the module docstring (services, then mounts, then ports)."""
    mount_patterns = [(re.compile(r"(?<![\w./-])" + re.escape(m) + r"(?=$|/|[^\w.-])"), local)
                      for m, local in sorted(mounts.items(), key=lambda kv: -len(kv[0])) if m != "/"]
    port_patterns = [(re.compile(rf"(?<![\w.]){p}(?![\w.])"), str(h)) for p, h in ports.items() if p != h]
    short = [re.compile(rf"(?<![\w.-])(?P<svc>{re.escape(s)}):(?P<port>\d+)(?![\w])") for s in local_services]

    def svc_sub(m: re.Match, ns: str | None = None) -> str:
        port = int(m["port"]) if m["port"] else None
        found = service(m["svc"], ns or m["ns"], port)
        return m[0] if found is None else found

    def rewrite(text: str) -> str:
        text = SVC_FQDN.sub(svc_sub, text)
        for pattern in short:
            text = pattern.sub(lambda m: svc_sub(m, namespace), text)
        for pattern, local in mount_patterns:
            text = pattern.sub(lambda _m, local=local: local, text)
        for pattern, host in port_patterns:
            text = pattern.sub(host, text)
        return text
    return rewrite


def service_refs(texts: list[str], namespace: str, local_services: list[str]) -> set[tuple[str, str]]:
    """(namespace, service) pairs a pod names in its command line and env."""
    refs = set()
    for text in texts:
        refs.update((m["ns"], m["svc"]) for m in SVC_FQDN.finditer(text))
        for s in local_services:
            if re.search(rf"(?<![\w.-]){re.escape(s)}:\d+(?![\w])", text):
                refs.add((namespace, s))
    return refs


def base_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return env


def service_link_env(name: str, ports: list[tuple[str, int]]) -> dict[str, str]:
    """Docker-link style variables Kubernetes gives every pod for each service of its namespace."""
    prefix = name.upper().replace("-", "_")
    env = {f"{prefix}_SERVICE_HOST": "127.0.0.1"}
    if ports:
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0][1])
        for pname, host in ports:
            if pname:
                env[f"{prefix}_SERVICE_PORT_{pname.upper().replace('-', '_')}"] = str(host)
    return env
