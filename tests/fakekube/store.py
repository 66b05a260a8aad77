"""The object store: CRUD with resourceVersion, generation, finalizers, watch events.

Everything runs on the server's event loop, so there is no locking. Objects are kept as
plain JSON dicts and copied in and out. Admission (defaults, validation, quota) is a
pluggable object so this module stays about storage semantics.
"""

from __future__ import annotations

import asyncio
import copy
import random
import uuid
from collections import deque
from typing import Any, Callable, Iterable, Protocol

from tests.fakekube import kinds as K
from tests.fakekube.clock import Clock
from tests.fakekube.errors import ApiError, success_status
from tests.fakekube.patch import apply as apply_patch
from tests.fakekube.selectors import labels_match, parse_field_selector, parse_label_selector

HISTORY = 4000
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def random_suffix(n: int = 5) -> str:
    return "".join(random.choice(_NAME_CHARS) for _ in range(n))


class Admission(Protocol):
    def admit(self, op: str, kind: K.Kind, new: dict, old: dict | None) -> None: ...


class Watcher:
    def __init__(self, kind: K.Kind, namespace: str | None):
        self.kind, self.namespace = kind, namespace
        self.queue: asyncio.Queue = asyncio.Queue()


class Store:
    def __init__(self, clock: Clock):
        self.clock = clock
        self.admission: Admission | None = None
        self._objs: dict[str, dict[tuple[str, str], dict]] = {k.key: {} for k in K.KINDS}
        self._rv = 0
        self.history: deque = deque(maxlen=HISTORY)
        self.watchers: set[Watcher] = set()
        self.kick = asyncio.Event()          # set on every change; the controllers wait on it
        self.after_create: list[Callable[[K.Kind, dict], None]] = []

    # ---- reading ----------------------------------------------------------------
    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def find(self, kind: K.Kind, namespace: str | None, name: str) -> dict | None:
        obj = self._objs[kind.key].get((namespace or "", name))
        return copy.deepcopy(obj) if obj is not None else None

    def get(self, kind: K.Kind, namespace: str | None, name: str) -> dict:
        obj = self.find(kind, namespace, name)
        if obj is None:
            raise ApiError.not_found(kind.plural, name, kind.group)
        return obj

    def iter(self, kind: K.Kind, namespace: str | None = None) -> Iterable[dict]:
        """Live objects, not copies: for controllers that only read."""
        for (ns, _), obj in list(self._objs[kind.key].items()):
            if namespace is None or ns == namespace:
                yield obj

    def list(self, kind: K.Kind, namespace: str | None = None, label_selector: str | None = None,
             field_selector: str | None = None) -> list[dict]:
        reqs = parse_label_selector(label_selector)
        fmatch = parse_field_selector(field_selector)
        out = [copy.deepcopy(o) for o in self.iter(kind, namespace) if labels_match(reqs, o) and fmatch(o)]
        out.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return out

    def list_body(self, kind: K.Kind, items: list[dict]) -> dict:
        return {"kind": f"{kind.kind}List", "apiVersion": kind.api_version,
                "metadata": {"resourceVersion": self.resource_version}, "items": items}

    # ---- writing (API semantics) --------------------------------------------------
    def create(self, kind: K.Kind, namespace: str | None, body: dict, *, dry_run: bool = False) -> dict:
        if not isinstance(body, dict):
            raise ApiError.bad_request("the request body must be a JSON object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {}) or {}
        obj["metadata"] = meta
        self._check_type(kind, obj)
        generate = not meta.get("name")
        if generate:
            if meta.get("generateName"):
                # Admission sees the prefix (so its messages read 'pods "web-7d9f-" is forbidden', as the
                # real ones do); the random suffix is added after it.
                meta["name"] = meta["generateName"]
            else:
                raise ApiError.invalid("metadata.name: Required value: name or generateName is required",
                                       kind.kind, "", kind.group)
        name = meta["name"]
        if kind.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise ApiError.bad_request("the namespace of the provided object does not match the namespace "
                                           "sent on the request")
            meta["namespace"] = namespace
            ns_obj = self._objs["namespaces"].get(("", namespace))
            if ns_obj is None:
                raise ApiError.not_found("namespaces", namespace)
            if ns_obj["metadata"].get("deletionTimestamp"):
                raise ApiError.forbidden(kind.plural, name, f"unable to create new content in namespace "
                                         f"{namespace} because it is being terminated", kind.group)
        else:
            meta.pop("namespace", None)
        for k in ("resourceVersion", "uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                  "managedFields", "selfLink"):
            meta.pop(k, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = self.clock.rfc3339()
        if "spec" in obj or kind.has_status:
            meta["generation"] = 1
        if self.admission:
            self.admission.admit("CREATE", kind, obj, None)
        if generate:
            meta["name"] = name = meta["generateName"] + random_suffix()
        key = (namespace if kind.namespaced else "", name)
        if key in self._objs[kind.key]:
            raise ApiError.already_exists(kind.plural, name, kind.group)
        if dry_run:
            return obj
        out = self._put(kind, key, obj, "ADDED")
        for fn in self.after_create:
            fn(kind, out)
        return out

    def replace(self, kind: K.Kind, namespace: str | None, name: str, body: dict, *,
                subresource: str | None = None, dry_run: bool = False) -> dict:
        if not isinstance(body, dict):
            raise ApiError.bad_request("the request body must be a JSON object")
        old = self.get(kind, namespace, name)
        new = copy.deepcopy(body)
        new.setdefault("metadata", {})
        self._check_type(kind, new)
        meta, old_meta = new["metadata"], old["metadata"]
        if meta.get("name") not in (None, name):
            raise ApiError.bad_request(f"the name of the object ({meta.get('name')}) does not match the name on "
                                       f"the URL ({name})")
        rv = meta.get("resourceVersion")
        if rv not in (None, "") and rv != old_meta["resourceVersion"]:
            raise ApiError.conflict(kind.plural, name, kind.group)
        if subresource == "status":
            # Only the status changes; the rest is the stored object.
            merged = copy.deepcopy(old)
            merged["status"] = new.get("status")
            new = merged
        else:
            for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
                if k in old_meta:
                    meta[k] = old_meta[k]
                else:
                    meta.pop(k, None)
            meta["name"] = name
            if kind.namespaced:
                meta["namespace"] = namespace
            if kind.has_status:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
            if "generation" in old_meta and new.get("spec") != old.get("spec"):
                meta["generation"] = old_meta["generation"] + 1
        if self.admission:
            self.admission.admit("UPDATE", kind, new, old)
        if dry_run:
            return new
        if old_meta.get("deletionTimestamp") and not new["metadata"].get("finalizers") and kind.key != "namespaces" \
                and kind.key != "pods":
            self.remove(kind, namespace, name)
            return new
        return self._put(kind, (namespace or "", name), new, "MODIFIED")

    def patch(self, kind: K.Kind, namespace: str | None, name: str, body: Any, content_type: str, *,
              subresource: str | None = None, dry_run: bool = False) -> dict:
        old = self.get(kind, namespace, name)
        new = apply_patch(old, body, content_type)
        # A patch only carries a precondition if it sets resourceVersion itself.
        patched_rv = (new.get("metadata") or {}).get("resourceVersion")
        if patched_rv == old["metadata"]["resourceVersion"]:
            new["metadata"].pop("resourceVersion", None)
        return self.replace(kind, namespace, name, new, subresource=subresource, dry_run=dry_run)

    def delete(self, kind: K.Kind, namespace: str | None, name: str, *, grace: int | None = None,
               dry_run: bool = False) -> dict:
        """Pods and namespaces are marked (the kubelet / namespace controller removes them);
        objects with finalizers are marked until the finalizers are gone; the rest go at once."""
        obj = self.get(kind, namespace, name)
        if dry_run:
            return obj
        meta = obj["metadata"]
        graceful = kind.key in ("pods", "namespaces") or bool(meta.get("finalizers"))
        if not graceful:
            self.remove(kind, namespace, name)
            status = success_status(name, kind)
            status["details"]["uid"] = meta["uid"]
            return status
        if kind.key == "namespaces" and meta.get("deletionTimestamp"):
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on namespaces "{name}": The system is '
                           "ensuring all content is removed from this namespace.  Upon completion, this namespace "
                           "will automatically be purged by the system.", {"name": name, "kind": "namespaces"})
        if not meta.get("deletionTimestamp"):
            meta["deletionTimestamp"] = self.clock.rfc3339()
            if kind.key == "pods":
                spec_grace = (obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
                meta["deletionGracePeriodSeconds"] = int(spec_grace if grace is None else grace)
            elif kind.key == "namespaces":
                obj.setdefault("status", {})["phase"] = "Terminating"
            else:
                meta["deletionGracePeriodSeconds"] = 0
            return self._put(kind, (namespace or "", name), obj, "MODIFIED")
        return obj

    # ---- writing (controllers) ----------------------------------------------------
    def write(self, kind: K.Kind, obj: dict) -> dict:
        """Store ``obj`` as it is (no admission, no precondition); a no-op if nothing changed."""
        meta = obj["metadata"]
        key = (meta.get("namespace", "") if kind.namespaced else "", meta["name"])
        old = self._objs[kind.key].get(key)
        if old is not None:
            probe = dict(obj, metadata=dict(meta, resourceVersion=old["metadata"]["resourceVersion"]))
            if probe == old:
                return copy.deepcopy(old)
        return self._put(kind, key, copy.deepcopy(obj), "MODIFIED" if old is not None else "ADDED")

    def remove(self, kind: K.Kind, namespace: str | None, name: str) -> dict | None:
        obj = self._objs[kind.key].pop((namespace or "" if kind.namespaced else "", name), None)
        if obj is not None:
            self._rv += 1
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self._rv)
            self._emit("DELETED", kind, obj)
        return obj

    # ---- internals ----------------------------------------------------------------
    def _check_type(self, kind: K.Kind, obj: dict) -> None:
        if obj.get("kind") not in (None, "", kind.kind) or obj.get("apiVersion") not in (None, "", kind.api_version):
            raise ApiError.bad_request(f"the body is a {obj.get('apiVersion')}/{obj.get('kind')}, not a "
                                       f"{kind.api_version}/{kind.kind}")
        obj["kind"], obj["apiVersion"] = kind.kind, kind.api_version

    def _put(self, kind: K.Kind, key: tuple[str, str], obj: dict, event: str) -> dict:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._objs[kind.key][key] = obj
        out = copy.deepcopy(obj)
        self._emit(event, kind, out)
        return copy.deepcopy(obj)

    def _emit(self, event: str, kind: K.Kind, obj: dict) -> None:
        self.history.append((self._rv, kind.key, event, obj))
        ns = obj["metadata"].get("namespace")
        for w in list(self.watchers):
            if w.kind.key == kind.key and (w.namespace is None or w.namespace == ns):
                w.queue.put_nowait((event, obj))
        self.kick.set()
