"""Label and field selectors: the query-string forms and the LabelSelector object form."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from tests.fakekube.errors import ApiError

_SET_TERM = re.compile(r"^\s*(?P<key>[^\s!=(),]+)\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)\s*$")
_CMP_TERM = re.compile(r"^\s*(?P<key>[^\s!=(),]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s!=(),]*)\s*$")
_EXISTS_TERM = re.compile(r"^\s*(?P<neg>!?)\s*(?P<key>[^\s!=(),]+)\s*$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str                    # "in", "notin", "exists", "!exists" ("=" is "in", "!=" is "notin")
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op == "in":
            return self.key in labels and labels[self.key] in self.values
        # notin / != also match objects without the key, as in Kubernetes.
        return self.key not in labels or labels[self.key] not in self.values


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    terms, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(ch)
    terms.append("".join(current))
    return [t for t in terms if t.strip()]


def parse_label_selector(text: str | None) -> list[Requirement]:
    """``a=b,c!=d,e in (x,y),f notin (z),g,!h`` -> requirements (all must hold)."""
    if not text:
        return []
    out = []
    for term in _split_terms(text):
        if m := _SET_TERM.match(term):
            values = frozenset(v.strip() for v in m["values"].split(",") if v.strip())
            out.append(Requirement(m["key"], m["op"], values))
        elif m := _CMP_TERM.match(term):
            out.append(Requirement(m["key"], "notin" if m["op"] == "!=" else "in", frozenset([m["value"]])))
        elif m := _EXISTS_TERM.match(term):
            out.append(Requirement(m["key"], "!exists" if m["neg"] else "exists"))
        else:
            raise ApiError.bad_request(f"unable to parse requirement: found '{term.strip()}', "
                                       "expected: in, notin, =, ==, !=, gt, lt")
    return out


def labels_match(requirements: list[Requirement], obj: dict) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(r.matches(labels) for r in requirements)


def selector_object_requirements(selector: dict | None) -> list[Requirement] | None:
    """A LabelSelector (``matchLabels`` / ``matchExpressions``); None for a null selector
    (matches nothing), [] for an empty one (matches everything)."""
    if selector is None:
        return None
    out = [Requirement(k, "in", frozenset([v])) for k, v in (selector.get("matchLabels") or {}).items()]
    for expr in selector.get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}.get(expr.get("operator"))
        if op is None:
            raise ApiError.invalid(f"unsupported selector operator {expr.get('operator')!r}")
        out.append(Requirement(expr["key"], op, frozenset(expr.get("values") or [])))
    return out


def map_selector_requirements(selector: dict[str, str] | None) -> list[Requirement]:
    """A Service's ``spec.selector`` map."""
    return [Requirement(k, "in", frozenset([v])) for k, v in (selector or {}).items()]


def field_value(obj: dict, path: str) -> str:
    """``spec.nodeName`` / ``involvedObject.name`` -> the value as a string ("" when missing)."""
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def parse_field_selector(text: str | None) -> Callable[[dict], bool]:
    """``metadata.name=x,status.phase!=Running`` (any dotted field; only = == != as in Kubernetes)."""
    if not text:
        return lambda obj: True
    checks = []
    for term in _split_terms(text):
        m = re.match(r"^\s*([^\s!=]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if not m:
            raise ApiError.bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        checks.append((m[1], m[2] == "!=", m[3]))

    def match(obj: dict) -> bool:
        return all((field_value(obj, path) != value) if neg else (field_value(obj, path) == value)
                   for path, neg, value in checks)
    return match
