"""Named datastores: the same name reaches the same data from a laptop, a server and a worker.

A datastore is a root on an fsspec filesystem (a local or NFS/EFS path, ``s3://bucket/prefix``,
anything fsspec knows). Settings, highest first:

1. what `apply_datastore_config` installed: on a worker, the client's settings, shipped by
   `recc.plugins.DatastoreSetup` (the worker's own ``RECC_DATASTORE_*`` are then ignored);
2. the environment: ``RECC_DATASTORE_<NAME>=<root>``, ``RECC_READ_DATASTORES=LOCAL,S3`` (read
   order), ``RECC_WRITE_DATASTORES=LOCAL``;
3. ``datastores:`` in ``config.yaml`` (or Dask config ``recc.datastores``), where a root may
   differ by context;
4. defaults: ``LOCAL`` = ``<RECC data folder>/datastore``; read ``LOCAL, FP_LOCAL, S3, FP_S3``
   (those configured, then any other configured store by name); write ``LOCAL``.

The context (which root a name means here) is ``RECC_CONTEXT``; else, in a scheduled job
(``RECC_JOB_ID`` set), ``job_context`` from ``config.yaml`` (default ``production``); else
``adhoc``. See ``docs/datastores.md``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import stat
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from recc.config import config_path, load_user_config
from recc.errors import RECCError, SpecError
from recc.paths import data_dir

KNOWN_ORDER = ("LOCAL", "FP_LOCAL", "S3", "FP_S3")
ENV_ROOT, ENV_READ, ENV_WRITE = "RECC_DATASTORE_", "RECC_READ_DATASTORES", "RECC_WRITE_DATASTORES"
DEFAULT_CONTEXT, DEFAULT_JOB_CONTEXT = "adhoc", "production"
SHA256_KEY = "recc-sha256"  # S3 user metadata (x-amz-meta-recc-sha256) written by write_df and sync
CONFIG_VERSION = 1
_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
# the AWS settings an S3 filesystem is built from: a change makes a new filesystem
_AWS_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_REGION",
            "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN")

log = logging.getLogger("recc.datastore")
io_log = logging.getLogger("recc.io")


class DatastoreError(RECCError):
    """A datastore cannot be used as asked: no rights, no bucket, no credentials, bad settings."""

    code = "datastore-error"


class UnknownDatastore(DatastoreError):
    code = "unknown-datastore"
    http_status = 404


# --- settings -------------------------------------------------------------------------------

def current_context(settings: Mapping[str, Any] | None = None) -> str:
    """``RECC_CONTEXT``; else the job context when ``RECC_JOB_ID`` is set; else ``adhoc``."""
    if os.environ.get("RECC_CONTEXT"):
        return os.environ["RECC_CONTEXT"]
    if os.environ.get("RECC_JOB_ID"):
        cfg = load_user_config() if settings is None else settings
        return str(cfg.get("job_context") or DEFAULT_JOB_CONTEXT)
    return DEFAULT_CONTEXT


def _check_name(name: Any, where: str) -> str:
    upper = str(name).strip().upper()
    if not _NAME.match(upper):
        raise SpecError(f"{where}: {name!r} is not a datastore name",
                        hint="use letters, digits and '_', starting with a letter, e.g. FP_LOCAL")
    return upper


def _names(value: Any, where: str) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise SpecError(f"{where} must be a list of datastore names", hint="e.g. LOCAL,S3")
    return [_check_name(x, where) for x in items if str(x).strip()]


def _is_local_root(root: str) -> bool:
    return "://" not in root or root.startswith(("file://", "local://"))


def _absolute(root: str) -> str:
    """A local root as an absolute path of this machine (it may be shipped to a worker with another cwd)."""
    if not _is_local_root(root):
        return root.rstrip("/")
    path = root.split("://", 1)[1] if "://" in root else root
    return os.path.abspath(os.path.expanduser(path))


def _entry(name: str, value: Any, where: str) -> dict[str, Any]:
    """One store of the config file: a root, ``{context: root}``, or ``{root: ..., options: {...}}``."""
    roots, options = value, {}
    if isinstance(value, dict) and "root" in value:
        roots, options = value["root"], value.get("options") or {}
    if isinstance(roots, str):
        roots = {"default": roots}
    if not isinstance(roots, dict) or not all(isinstance(v, str) for v in roots.values()) \
            or not isinstance(options, dict):
        raise SpecError(f"{where}.{name} must be a root, a mapping of context to root, or {{root, options}}",
                        hint=f"e.g. '{name}: s3://bucket/prefix' or '{name}: {{adhoc: /mnt/nfs/x, production: /efs/x}}'")
    return {"roots": {str(k): v for k, v in roots.items()}, "options": dict(options)}


def datastore_config() -> dict[str, Any]:
    """This process's datastore settings in a portable, JSON-safe form (what `DatastoreSetup` ships).

    ``{"version", "context", "stores": {NAME: {"roots": {context|"default": root}, "options"}},
    "read": [...]|None, "write": [...]|None}``. Roots from the environment (and the default
    ``LOCAL``) are recorded for this context as absolute paths; an object-store root from the
    environment also serves as the default for other contexts.
    """
    if _applied is not None:
        return copy.deepcopy(_applied)
    cfg = load_user_config()
    ctx = current_context(cfg)
    section = cfg.get("datastores") or {}
    if not isinstance(section, dict):
        raise SpecError(f"'datastores' in {config_path()} must be a mapping", hint="see docs/datastores.md")
    stores: dict[str, dict[str, Any]] = {}
    for key, value in section.items():
        if key not in ("read", "write"):
            name = _check_name(key, "datastores")
            stores[name] = _entry(name, value, "datastores")
    for var, value in sorted(os.environ.items()):
        if var.startswith(ENV_ROOT) and value.strip():
            name = _check_name(var[len(ENV_ROOT):], var)
            entry = stores.setdefault(name, {"roots": {}, "options": {}})
            entry["roots"][ctx] = _absolute(value.strip())
            if not _is_local_root(value):
                entry["roots"].setdefault("default", entry["roots"][ctx])
    local = stores.setdefault("LOCAL", {"roots": {}, "options": {}})
    if ctx not in local["roots"] and "default" not in local["roots"]:
        local["roots"][ctx] = str(data_dir() / "datastore")
    for entry in stores.values():  # what this context uses, as an absolute path of this machine
        root = entry["roots"].get(ctx) or entry["roots"].get("default")
        if root:
            entry["roots"][ctx] = _absolute(root)
    read = os.environ.get(ENV_READ) or section.get("read")
    write = os.environ.get(ENV_WRITE) or section.get("write")
    return {"version": CONFIG_VERSION, "context": ctx, "stores": stores,
            "read": _names(read, ENV_READ if os.environ.get(ENV_READ) else "datastores.read") if read else None,
            "write": _names(write, ENV_WRITE if os.environ.get(ENV_WRITE) else "datastores.write") if write else None}


POD_CONTEXT_SUFFIX = "@eks"


def pod_context(context: str) -> str:
    """The datastore context of the pods of EKS context ``context``: ``<context>@eks``.

    A desktop and its clusters' pods may share an EKS context yet reach the data differently (an NFS
    mount here, EFS or S3 there), so the pods' roots have their own key, e.g.
    ``FP_LOCAL: {adhoc: /mnt/nfs/fp, adhoc@eks: s3://research-fp/adhoc}``.
    """
    return f"{context}{POD_CONTEXT_SUFFIX}"


def pod_datastore_env(context: str, settings: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The environment that gives an EKS context's pods their datastores (the manifests put it on every pod).

    ``RECC_CONTEXT=<context>@eks``, and ``RECC_DATASTORE_<NAME>`` for each store with a root for that
    context (or an object-store ``default`` root: a local default is a desktop's path); the read and
    write lists when every store they name has such a root. A worker that gets the client's settings
    (`recc.plugins.DatastoreSetup`) picks the same roots by the same ``RECC_CONTEXT``.
    """
    cfg = load_user_config() if settings is None else settings
    ctx = pod_context(context)
    section = cfg.get("datastores") or {}
    if not isinstance(section, dict):
        raise SpecError(f"'datastores' in {config_path()} must be a mapping", hint="see docs/datastores.md")
    env = {"RECC_CONTEXT": ctx}
    for key, value in section.items():
        if key in ("read", "write"):
            continue
        name = _check_name(key, "datastores")
        roots = _entry(name, value, "datastores")["roots"]
        root = roots.get(ctx) or (roots["default"] if not _is_local_root(roots.get("default", "/")) else None)
        if root:
            env[f"{ENV_ROOT}{name}"] = root
    for key, var in (("read", ENV_READ), ("write", ENV_WRITE)):
        names = _names(section[key], f"datastores.{key}") if section.get(key) else []
        if names and all(f"{ENV_ROOT}{n}" in env for n in names):
            env[var] = ",".join(names)
    return env


_applied: dict[str, Any] | None = None


def apply_datastore_config(cfg: Mapping[str, Any] | None) -> None:
    """Use ``cfg`` (from `datastore_config` in another process) instead of this process's settings.

    On a worker the context stays the worker's ``RECC_CONTEXT`` when set (a pod's context picks
    its own roots), else the client's. ``None`` goes back to this process's own settings.
    """
    global _applied
    if cfg is not None:
        if not isinstance(cfg, Mapping) or cfg.get("version") != CONFIG_VERSION or "stores" not in cfg:
            raise DatastoreError("not a datastore configuration from this version of RECC",
                                 hint="use recc.datastore.datastore_config() in the client")
        cfg = json.loads(json.dumps(cfg))  # a private, JSON-safe copy
    _applied = cfg  # type: ignore[assignment]


# --- resolution -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Datastore:
    """One named root. ``path`` arguments are relative to the root, with '/' separators."""

    name: str
    root: str
    options: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def protocol(self) -> str:
        return "file" if _is_local_root(self.root) else self.root.split("://", 1)[0]

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"

    @property
    def base(self) -> str:
        return self.root if self.is_local else self.root.split("://", 1)[1].rstrip("/")

    @property
    def fs(self) -> Any:
        return filesystem(self.protocol, self.options)

    def full(self, path: str = "") -> str:
        rel = clean_path(path, allow_empty=True)
        if not rel:
            return self.base
        return os.path.join(self.base, *rel.split("/")) if self.is_local else f"{self.base}/{rel}"

    def url(self, path: str = "") -> str:
        return self.full(path) if self.is_local else f"{self.protocol}://{self.full(path)}"

    def info(self, full: str) -> dict[str, Any]:
        """Size and type of ``full`` (from `full`); `FileNotFoundError` if it is not there."""
        if self.is_local:
            try:
                st = os.stat(full)
            except NotADirectoryError as exc:  # a file where a folder would be: the path is not there
                raise FileNotFoundError(str(exc)) from None
            return {"size": st.st_size, "type": "directory" if stat.S_ISDIR(st.st_mode) else "file"}
        return self.fs.info(full)


_fs_cache: dict[tuple[Any, ...], Any] = {}
_fs_lock = threading.Lock()


def filesystem(protocol: str, options: Mapping[str, Any] | None = None) -> Any:
    """An fsspec filesystem, one per protocol, options and AWS environment (and process).

    S3 gets ``use_listings_cache=False`` unless set: another process may have written since
    a listing, and a stale listing would hide a file from the fall-through.
    """
    import fsspec

    opts = dict(options or {})
    if protocol in ("s3", "s3a"):
        opts.setdefault("use_listings_cache", False)
        _daemon_credentials_once()
    key = (os.getpid(), protocol, json.dumps(opts, sort_keys=True, default=str),
           tuple(os.environ.get(k) for k in _AWS_ENV))
    with _fs_lock:
        fs = _fs_cache.get(key)
        if fs is None:
            fs = _fs_cache[key] = fsspec.filesystem(protocol, skip_instance_cache=True, **opts)
    return fs


_credentials_tried: set[int] = set()


def _daemon_credentials_once() -> None:
    """Without credentials of its own, this process gets the daemon's (recc.awscreds); decided once per process."""
    if os.getpid() not in _credentials_tried:
        _credentials_tried.add(os.getpid())
        from recc.awscreds import use_daemon_credentials

        use_daemon_credentials()


def clean_path(path: str, allow_empty: bool = False) -> str:
    """A path inside a datastore: '/'-separated, relative, no '..'."""
    text = os.fspath(path).replace("\\", "/")
    if "://" in text or text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise ValueError(f"{path!r} is not a path inside a datastore; give it relative to the root, e.g. 'demo/x.csv'")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"{path!r} leaves the datastore root ('..')")
    if not parts and not allow_empty:
        raise ValueError("an empty path names no file")
    return "/".join(parts)


def _settings() -> tuple[str, dict[str, Datastore], dict[str, Any]]:
    cfg = _applied if _applied is not None else datastore_config()
    ctx = (os.environ.get("RECC_CONTEXT") or cfg["context"]) if _applied is not None else cfg["context"]
    stores = {}
    for name, entry in cfg["stores"].items():
        root = entry["roots"].get(ctx) or entry["roots"].get("default")
        if root:
            stores[name] = Datastore(name, _absolute(root), entry.get("options") or {})
    return ctx, stores, cfg


def _known_first(stores: Mapping[str, Datastore]) -> list[str]:
    return [n for n in KNOWN_ORDER if n in stores] + sorted(n for n in stores if n not in KNOWN_ORDER)


def _unknown(name: str, ctx: str, stores: Mapping[str, Datastore], where: str = "") -> UnknownDatastore:
    configured = ", ".join(_known_first(stores)) or "none"
    return UnknownDatastore(f"unknown datastore {name!r}{where}; configured in context {ctx!r}: {configured}",
                            hint=f"set {ENV_ROOT}{name}=<root> or add it under 'datastores:' in {config_path()}")


def _ordered(which: str) -> list[Datastore]:
    ctx, stores, cfg = _settings()
    names = cfg[which]
    if names is None:
        names = ["LOCAL"] if which == "write" else _known_first(stores)
    for name in names:
        if name not in stores:
            raise _unknown(name, ctx, stores, f" in the {which} datastores")
    return [stores[n] for n in names]


def get_read_datastore_names() -> list[str]:
    """The read datastores in fall-through order."""
    return [s.name for s in _ordered("read")]


def get_write_datastore_names() -> list[str]:
    return [s.name for s in _ordered("write")]


def get_datastore(name: str) -> Datastore:
    ctx, stores, _ = _settings()
    key = str(name).strip().upper()
    if key not in stores:
        raise _unknown(str(name), ctx, stores)
    return stores[key]


def datastores_for(which: str, datastores: str | Iterable[str] | None = None) -> list[Datastore]:
    """``datastores`` (a name, 'A,B' or a list) as stores, or the configured read/write list."""
    if datastores is None:
        return _ordered(which)
    names = datastores.split(",") if isinstance(datastores, str) else list(datastores)
    out = [get_datastore(n) for n in names if str(n).strip()]
    if not out:
        raise ValueError("datastores= names no datastore")
    return out


# --- fall-through and errors -----------------------------------------------------------------

@dataclass(frozen=True)
class Found:
    store: Datastore
    path: str  # relative
    full: str  # inside the store's filesystem
    info: Mapping[str, Any]


def locate(path: str, datastores: str | Iterable[str] | None = None) -> Found:
    """The first read datastore holding ``path``; `FileNotFoundError` naming every place tried."""
    rel = clean_path(path)
    tried = []
    for store in datastores_for("read", datastores):
        full = store.full(rel)
        try:
            return Found(store, rel, full, store.info(full))
        except FileNotFoundError as exc:
            why = " (bucket does not exist)" if "bucket" in str(exc).lower() else ""
            tried.append(f"{store.name} ({store.url(rel)}){why}")
        except Exception as exc:  # noqa: BLE001 - rights, credentials, network: name the store
            raise access_error(store, "read", rel, exc) from exc
    raise FileNotFoundError(f"{rel} not found in any of the datastores tried: {'; '.join(tried)}")


def access_error(store: Datastore, action: str, rel: str, exc: BaseException) -> DatastoreError:
    """A `DatastoreError` naming the store, the place and why (never a raw botocore message alone)."""
    text = str(exc)
    if isinstance(exc, FileNotFoundError) and "bucket" in text.lower():
        reason = "the bucket does not exist"
    elif isinstance(exc, (NotADirectoryError, FileExistsError)):
        reason = "a file stands where a folder is needed (is the root a file?)"
    elif isinstance(exc, PermissionError):
        reason = f"permission denied ({text})"
    elif type(exc).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
        reason = "no AWS credentials found"
    else:
        reason = f"{type(exc).__name__}: {text}"
    return DatastoreError(f"cannot {action} {rel or '/'} in datastore {store.name} ({store.url(rel)}): {reason}",
                          hint=f"check the root ({ENV_ROOT}{store.name} or 'datastores:' in config.yaml) "
                               "and your rights and credentials there")


# --- reporting which store a read used --------------------------------------------------------

_read_logger: logging.Logger | None = None


def log_reads_to(logger: logging.Logger | None) -> None:
    """Report reads to ``logger`` (a worker's log) instead of printing; ``None`` prints again."""
    global _read_logger
    _read_logger = logger


def report_read(found: Found, quiet: bool = False) -> None:
    """Print "Loading from S3" (a terminal, a notebook), or log it on a worker.

    Silenced by ``quiet=True`` or ``logging.getLogger("recc.io").setLevel(logging.WARNING)``.
    A worker logs every read, quiet or not.
    """
    if _read_logger is not None:
        _read_logger.info("recc: loading %s from %s (%s)", found.path, found.store.name, found.store.url(found.path))
        return
    io_log.debug("loading %s from %s (%s)", found.path, found.store.name, found.store.url(found.path))
    if quiet or io_log.disabled or (io_log.level and io_log.level > logging.INFO):
        return
    print(f"Loading from {found.store.name}", flush=True)


# --- sync (in recc.datasync) ------------------------------------------------------------------

def sync(path: str = "", src: str = "LOCAL", dst: str = "S3", dry_run: bool = False, quiet: bool = False) -> Any:
    """Copy what is new or changed under ``path`` from ``src`` to ``dst``; see `recc.datasync.sync`."""
    from recc.datasync import sync as _sync

    return _sync(path, src=src, dst=dst, dry_run=dry_run, quiet=quiet)


def sync_main(argv: list[str] | None = None) -> int:
    """``recc sync PATH --from LOCAL --to S3 [--dry-run]``; see `recc.datasync.sync_main`."""
    from recc.datasync import sync_main as _main

    return _main(argv)
