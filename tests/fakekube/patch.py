"""PATCH bodies: JSON merge patch (RFC 7386), a strategic-merge approximation, JSON patch (RFC 6902)."""

from __future__ import annotations

import copy
from typing import Any

from tests.fakekube.errors import ApiError

# List fields a strategic merge patch merges element by element, and the key it matches on.
_MERGE_KEYS = ("name", "containerPort", "mountPath", "devicePath", "ip", "type", "topologyKey")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _merge_key(a: list, b: list) -> str | None:
    items = [x for x in a + b]
    if not items or not all(isinstance(x, dict) for x in items):
        return None
    for key in _MERGE_KEYS:
        if all(key in x for x in items):
            return key
    return None


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Like a merge patch, but lists of objects with a common key (containers by name, ports by
    containerPort, ...) merge element-wise; ``$patch``/``$setElementOrder`` directives are
    honoured only as far as ``$patch: delete`` on a list element and ``$patch: replace``."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            out.pop(key, None)
        elif isinstance(value, list) and isinstance(out.get(key), list) and (mk := _merge_key(out[key], value)):
            merged = [copy.deepcopy(x) for x in out[key]]
            for item in value:
                idx = next((i for i, x in enumerate(merged) if x.get(mk) == item.get(mk)), None)
                if item.get("$patch") == "delete":
                    if idx is not None:
                        merged.pop(idx)
                elif idx is None:
                    merged.append({k: v for k, v in item.items() if not k.startswith("$")})
                else:
                    merged[idx] = strategic_merge_patch(merged[idx], item)
            out[key] = merged
        else:
            out[key] = strategic_merge_patch(out.get(key), value)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError.bad_request(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for p in parts:
        if isinstance(doc, list):
            doc = doc[int(p)]
        elif isinstance(doc, dict):
            doc = doc[p]
        else:
            raise KeyError(p)
    return doc


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, list):
        parent.insert(len(parent) if last == "-" else int(last), value)
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise KeyError(last)
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    parent = _walk(doc, parts[:-1])
    if isinstance(parent, list):
        return parent.pop(int(parts[-1]))
    return parent.pop(parts[-1])


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902: add, remove, replace, move, copy, test."""
    if not isinstance(ops, list):
        raise ApiError.bad_request("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        try:
            name, parts = op["op"], _pointer(op["path"])
            if name == "add":
                doc = _add(doc, parts, copy.deepcopy(op["value"]))
            elif name == "remove":
                _remove(doc, parts)
            elif name == "replace":
                _walk(doc, parts)   # must exist
                if parts:
                    _remove(doc, parts)
                doc = _add(doc, parts, copy.deepcopy(op["value"]))
            elif name == "move":
                value = _remove(doc, _pointer(op["from"]))
                doc = _add(doc, parts, value)
            elif name == "copy":
                doc = _add(doc, parts, copy.deepcopy(_walk(doc, _pointer(op["from"]))))
            elif name == "test":
                if _walk(doc, parts) != op["value"]:
                    raise ApiError(422, "Invalid", f"the test operation failed on {op['path']}")
            else:
                raise ApiError.bad_request(f"unknown JSON patch operation {name!r}")
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiError(422, "Invalid", f"the JSON patch could not be applied: {op!r} ({exc})") from None
    return doc


def apply(target: dict, body: Any, content_type: str) -> dict:
    """Apply a PATCH body according to its Content-Type."""
    ct = (content_type or "").split(";")[0].strip().lower()
    if ct == "application/json-patch+json":
        out = json_patch(target, body)
    elif ct == "application/merge-patch+json":
        out = merge_patch(target, body)
    elif ct in ("application/strategic-merge-patch+json", "application/json", ""):
        out = strategic_merge_patch(target, body)
    elif ct.startswith("application/apply-patch"):
        # Server-side apply, approximated as a strategic merge (no field ownership).
        out = strategic_merge_patch(target, body)
    else:
        raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                       f"accepted media types include: application/json-patch+json, application/merge-patch+json, "
                       f"application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct!r})")
    if not isinstance(out, dict):
        raise ApiError.bad_request("the patch did not produce an object")
    return out
