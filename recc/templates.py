"""Cluster templates: named `ClusterSpec` starting points, built in or from the user's file.

User templates live in ``templates.yaml`` in the user config folder (``RECC_CONFIG_DIR`` if
set, else ``platformdirs.user_config_dir("recc")``)::

    big-memory:                       # a new template
      base: large-cluster-large-workers
      n_workers: 100
      worker_memory: 30GiB
    small-cluster-small-workers:      # same name as a built-in: replaces it
      instance_type: m5.2xlarge

Every key except ``base`` is a `ClusterSpec` field. Without ``base`` a template starts from
the built-in of the same name if there is one, else from `ClusterSpec` defaults. The file is
read on every call, so edits apply at once.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, Mapping


from recc.config import read_yaml_mapping
from recc.paths import config_dir
from recc.errors import SpecError, TemplateNotFound
from recc.spec import ClusterSpec

TEMPLATES_FILE = "templates.yaml"
GiB = 2**30


def _builtin_templates() -> dict[str, ClusterSpec]:
    # Built fresh on each call: specs are frozen, but their mapping fields are plain dicts.
    return {
        "local": ClusterSpec(
            provider="local", template="local", instance_type="local",
            n_workers=2, worker_threads=1, worker_cpu=1.0, worker_memory=2 * GiB,
        ),
        "small-cluster-small-workers": ClusterSpec(
            provider="eks", template="small-cluster-small-workers", instance_type="m5.xlarge",
            n_workers=4, worker_cpu=1.0, worker_memory=3 * GiB,
        ),
        "large-cluster-large-workers": ClusterSpec(
            provider="eks", template="large-cluster-large-workers", instance_type="r5.4xlarge",
            n_workers=50, worker_cpu=2.0, worker_memory=15 * GiB, worker_threads=2,
        ),
        "gpu-workers": ClusterSpec(
            provider="eks", template="gpu-workers", instance_type="g4dn.xlarge",
            n_workers=4, worker_cpu=3.0, worker_memory=12 * GiB, worker_gpu=1, resources={"GPU": 1},
            # A g4dn.xlarge has 3.77 CPU allocatable: with a 3-CPU worker only 0.77 is left,
            # so a 1-CPU scheduler would need a GPU node of its own (5 nodes for 4 workers).
            scheduler_cpu=0.5,
        ),
    }


BUILTIN_NAMES = tuple(_builtin_templates())


def user_templates_path() -> Path:
    """Where user templates are read from (the file need not exist)."""
    return config_dir() / TEMPLATES_FILE


def _read_user_file(path: Path) -> dict[str, dict[str, Any]]:
    """The raw entries of the user file, checked for shape; {} if there is no file."""
    data = read_yaml_mapping(path, hint="see docs/planning.md for the templates.yaml format",
                             shape="must map template names to settings",
                             example="my-template: {base: local, n_workers: 4}")
    fields = [f.name for f in dataclasses.fields(ClusterSpec) if f.name != "template"]
    out: dict[str, dict[str, Any]] = {}
    for name, entry in data.items():
        if not isinstance(name, str) or not name.strip():
            raise SpecError(f"{path}: template name {name!r} is not a non-empty string")
        if entry is None:  # "name:" alone is a copy of its base
            entry = {}
        if not isinstance(entry, dict):
            raise SpecError(f"{path}: template {name!r} must be a mapping of settings, "
                            f"found a {type(entry).__name__}", hint=f"settings: base, {', '.join(fields)}")
        unknown = sorted(str(k) for k in entry if k not in fields and k != "base")
        if unknown:
            hint = ("the template's name is its key; use 'base:' to start from another template"
                    if "template" in unknown else f"settings: base, {', '.join(fields)}")
            raise SpecError(f"{path}: template {name!r} has unknown setting(s): {', '.join(unknown)}", hint=hint)
        base = entry.get("base")
        if base is not None and not isinstance(base, str):
            raise SpecError(f"{path}: template {name!r} has base {base!r}, which is not a template name")
        out[name] = entry
    return out


def list_templates() -> dict[str, ClusterSpec]:
    """Every template by name: the built-ins, then the user's (which may replace built-ins)."""
    builtins = _builtin_templates()
    path = user_templates_path()
    raw = _read_user_file(path)
    resolved: dict[str, ClusterSpec] = {}

    def build(name: str, chain: tuple[str, ...]) -> ClusterSpec:
        if name in resolved:
            return resolved[name]
        if name in chain:
            cycle = " -> ".join((*chain[chain.index(name):], name))
            raise SpecError(f"{path}: templates form a cycle through 'base': {cycle}")
        entry = dict(raw[name])
        base_name = entry.pop("base", None)
        if base_name is None or base_name == name:
            # No base, or itself: extend the built-in of that name, else start from defaults.
            base = builtins.get(name, ClusterSpec())
        elif base_name in raw:
            base = build(base_name, (*chain, name))
        elif base_name in builtins:
            base = builtins[base_name]
        else:
            known = sorted({*builtins, *raw} - {name})
            raise SpecError(f"{path}: template {name!r} has unknown base {base_name!r}",
                            hint=f"known templates: {', '.join(known)}")
        try:
            spec = base.replace(template=name, **entry)
        except SpecError as exc:
            raise SpecError(f"{path}: template {name!r}: {exc.message}", hint=exc.hint) from None
        resolved[name] = spec
        return spec

    for name in raw:
        build(name, ())
    return {**builtins, **resolved}


def resolve(template: str, **overrides: Any) -> ClusterSpec:
    """The spec for ``template`` with ``overrides`` applied (``None`` values are ignored).

    Unknown template: `TemplateNotFound` listing the known ones. Unknown or invalid
    overrides: `SpecError`. ``spec.template`` is always the template's name.
    """
    templates = list_templates()
    if template not in templates:
        raise TemplateNotFound(f"unknown template {template!r}", hint=_known_hint(template, templates))
    given = {k: v for k, v in overrides.items() if v is not None}
    return templates[template].replace(template=template, **given)


def _known_hint(name: Any, templates: Mapping[str, ClusterSpec]) -> str:
    close = difflib.get_close_matches(str(name), templates, n=1)
    prefix = f"did you mean {close[0]!r}? " if close else ""
    return f"{prefix}known templates: {', '.join(sorted(templates))}"
