"""The user's RECC settings: ``config.yaml`` in the user config folder, over Dask config.

Two places, because users already keep Dask settings in ``~/.config/dask/*.yaml`` (and
``DASK_RECC__...`` environment variables): anything under ``recc:`` there applies, and
RECC's own ``config.yaml`` (``$RECC_CONFIG_DIR`` or platformdirs' user config folder) wins
where both set a key. The file is read on every call, so edits apply without a restart.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import dask.config
import yaml

from recc.errors import SpecError
from recc.paths import config_dir

CONFIG_FILE = "config.yaml"


def config_path() -> Path:
    """Where ``config.yaml`` is read from (the file need not exist)."""
    return config_dir() / CONFIG_FILE


def read_yaml_mapping(path: Path, *, hint: str = "fix or remove the file",
                      shape: str = "must be a mapping of settings", example: str = "budgets: {user: {monthly: 500}}"
                      ) -> dict[str, Any]:
    """A YAML file that must hold a mapping; {} if it is missing or empty; `SpecError` naming the file otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read {path}: {exc}", hint="fix or remove the file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise SpecError(f"{path} is not valid YAML{where}: {problem}", hint=hint) from None
    if data is None:  # an empty (or all-comment) file sets nothing
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"{path} {shape}, found a {type(data).__name__}", hint=f"write e.g. '{example}'")
    return data


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, mapping by mapping; neither is changed.

    Not `dask.config.merge`: it treats ``a-b`` and ``a_b`` as one key, which would fold
    two budgets (say jobs ``nightly-risk`` and ``nightly_risk``) into one, and it fails on
    keys that are not strings.
    """
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_user_config() -> dict[str, Any]:
    """The merged settings: Dask config under ``recc.``, then ``config.yaml`` on top.

    Nested mappings merge key by key (so a budget set in Dask config survives a file that
    only sets another one). A missing file is ``{}``; an unreadable or malformed one is a
    `SpecError` naming the file.
    """
    from_dask = dask.config.get("recc", default={})
    if not isinstance(from_dask, dict):
        raise SpecError(f"Dask config 'recc' must be a mapping, found a {type(from_dask).__name__}",
                        hint="check ~/.config/dask/*.yaml and DASK_RECC* environment variables")
    # _merge copies: callers may change the result without touching Dask's global config.
    return _merge(from_dask, read_yaml_mapping(config_path()))
