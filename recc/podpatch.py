"""Expert access: extra pod-template fields for EKS clusters (the spec's ``pod_patch``).

A patch is ``{"metadata": {"labels", "annotations"}, "spec": {<PodSpec fields>}}``, merged into the
scheduler's and the workers' pod templates like a Kubernetes strategic-merge patch:

- mappings merge key by key (a patch value replaces a scalar);
- lists of named items (``containers``, ``volumes``, ``env``, ``volumeMounts``, ...) merge by ``name``;
  other lists (``tolerations``, ``imagePullSecrets``, ...) are appended to, so RECC's own
  placement toleration stays;
- a container without a ``name`` patches the main container (``scheduler`` or ``worker``); a named
  container that is neither is a sidecar (it needs an ``image``).

Validated when the spec is made, before anything exists: unknown keys (with the closest known one),
wrong types, and fields that would break a cluster's isolation (its service account, host namespaces,
its node selector) are a `SpecError`.
"""

from __future__ import annotations

import copy
import difflib
from typing import Any, Mapping

from recc.errors import SpecError

MAIN_CONTAINERS = ("scheduler", "worker")
CAPACITY_KEY = "recc.dev/cluster"  # recc.manifests.CAPACITY_KEY (not imported: manifests imports the spec)
METADATA = {"labels": dict, "annotations": dict}
POD_SPEC: dict[str, type | tuple[type, ...]] = {
    "affinity": dict, "tolerations": list, "nodeSelector": dict, "priorityClassName": str, "priority": int,
    "preemptionPolicy": str, "securityContext": dict, "containers": list, "initContainers": list, "volumes": list,
    "imagePullSecrets": list, "hostAliases": list, "dnsConfig": dict, "dnsPolicy": str, "runtimeClassName": str,
    "schedulerName": str, "topologySpreadConstraints": list, "terminationGracePeriodSeconds": int,
    "enableServiceLinks": bool, "shareProcessNamespace": bool, "overhead": dict, "readinessGates": list,
}
CONTAINER: dict[str, type | tuple[type, ...]] = {
    "name": str, "image": str, "imagePullPolicy": str, "command": list, "args": list, "workingDir": str,
    "env": list, "envFrom": list, "volumeMounts": list, "resources": dict, "securityContext": dict, "ports": list,
    "lifecycle": dict, "livenessProbe": dict, "readinessProbe": dict, "startupProbe": dict,
    "terminationMessagePolicy": str,
}
FORBIDDEN = {
    "serviceAccountName": "pods run as the cluster's own service account (its data-access role)",
    "serviceAccount": "pods run as the cluster's own service account (its data-access role)",
    "automountServiceAccountToken": "RECC pods never get a Kubernetes API token",
    "hostNetwork": "pods stay off the node's network", "hostPID": "pods stay out of the node's processes",
    "hostIPC": "pods stay out of the node's IPC", "nodeName": "pods run only on their own cluster's nodes",
}
_JSON = (str, int, float, bool, type(None), list, dict)


def _unknown(key: str, known: Mapping[str, Any], where: str) -> SpecError:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = (f"did you mean {close[0]!r}? " if close else "") + f"known keys: {', '.join(sorted(known))}"
    return SpecError(f"pod_patch: unknown key {where}{key!r}", hint=hint)


def _typed(value: Any, want: type | tuple[type, ...], where: str) -> None:
    ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
    if not ok:
        name = want.__name__ if isinstance(want, type) else "/".join(t.__name__ for t in want)
        kinds = {"dict": "a mapping", "list": "a list", "str": "a string", "int": "a whole number", "bool": "true/false"}
        raise SpecError(f"pod_patch: {where} must be {kinds.get(name, name)}, got {type(value).__name__} {value!r}")


def _json(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise SpecError(f"pod_patch: {where} has a key that is not a string: {k!r}")
            _json(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _json(v, f"{where}[{i}]")
    elif not isinstance(value, _JSON):
        raise SpecError(f"pod_patch: {where} is not JSON data ({type(value).__name__})")


def validate_pod_patch(patch: Any) -> dict[str, Any]:
    """A checked deep copy of ``patch`` (see the module docstring); `SpecError` naming what is wrong."""
    if patch is None:
        return {}
    if not isinstance(patch, Mapping):
        raise SpecError(f"pod_patch must be a mapping like {{'spec': {{...}}}}, got {type(patch).__name__}",
                        hint="e.g. pod_patch={'spec': {'priorityClassName': 'research-high'}}")
    patch = copy.deepcopy(dict(patch))
    _json(patch, "pod_patch")
    for key in patch:
        if key not in ("metadata", "spec"):
            raise _unknown(key, {"metadata": 0, "spec": 0}, "")
    meta = patch.get("metadata", {})
    _typed(meta, dict, "metadata")
    for key, value in meta.items():
        if key not in METADATA:
            raise _unknown(key, METADATA, "metadata.")
        _typed(value, dict, f"metadata.{key}")
        for k, v in value.items():
            _typed(v, str, f"metadata.{key}.{k}")
    spec = patch.get("spec", {})
    _typed(spec, dict, "spec")
    for key, value in spec.items():
        if key in FORBIDDEN:
            raise SpecError(f"pod_patch: spec.{key} cannot be set: {FORBIDDEN[key]}")
        if key not in POD_SPEC:
            raise _unknown(key, POD_SPEC, "spec.")
        _typed(value, POD_SPEC[key], f"spec.{key}")
    if CAPACITY_KEY in spec.get("nodeSelector", {}):
        raise SpecError(f"pod_patch: spec.nodeSelector.{CAPACITY_KEY} cannot be set: "
                        "pods run only on their own cluster's nodes")
    for group in ("containers", "initContainers"):
        for i, c in enumerate(spec.get(group, [])):
            where = f"spec.{group}[{i}]"
            _typed(c, dict, where)
            for key, value in c.items():
                if key not in CONTAINER:
                    raise _unknown(key, CONTAINER, f"{where}.")
                _typed(value, CONTAINER[key], f"{where}.{key}")
            if group == "initContainers" or c.get("name") not in (None, *MAIN_CONTAINERS):
                if not c.get("name") or not c.get("image"):
                    raise SpecError(f"pod_patch: {where} is an extra container and needs a name and an image",
                                    hint="leave out the name to patch the scheduler or worker container itself")
    for key in ("volumes", "imagePullSecrets", "hostAliases", "tolerations", "topologySpreadConstraints"):
        for i, item in enumerate(spec.get(key, [])):
            _typed(item, dict, f"spec.{key}[{i}]")
    return patch


def _merge_lists(base: list[Any], patch: list[Any]) -> list[Any]:
    named = all(isinstance(x, dict) and "name" in x for x in base + patch) and (base or patch)
    if not named:
        return base + [x for x in patch if x not in base]
    out = [copy.deepcopy(x) for x in base]
    for item in patch:
        match = next((x for x in out if x["name"] == item["name"]), None)
        if match is None:
            out.append(copy.deepcopy(item))
        else:
            out[out.index(match)] = merge(match, item)
    return out


def merge(base: Any, patch: Any) -> Any:
    """``patch`` merged into ``base`` (neither changed): mappings by key, named lists by name, others appended."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for k, v in patch.items():
            out[k] = merge(out[k], v) if k in out else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list):
        return _merge_lists(base, patch)
    return copy.deepcopy(patch)


def apply_pod_patch(template: Mapping[str, Any], patch: Mapping[str, Any], main: str) -> dict[str, Any]:
    """A pod template (``{"metadata", "spec"}``) with ``patch`` merged in; nameless containers patch ``main``."""
    if not patch:
        return copy.deepcopy(dict(template))
    patch = copy.deepcopy(dict(patch))
    spec = patch.get("spec", {})
    if "containers" in spec:
        other = [m for m in MAIN_CONTAINERS if m != main]
        spec["containers"] = [dict(c, name=c.get("name") or main) for c in spec["containers"]
                              if c.get("name") not in other]  # the other template's container is not ours
    return merge(dict(template), patch)
