"""Contexts: where EKS clusters go and what they may touch (docs/eks.md).

A context comes from the user's settings (``recc.config.load_user_config()``, key
``contexts:``; Dask config ``recc.contexts`` too). ``RECC_CONTEXT`` selects one; without it a
scheduled job (``RECC_JOB_ID`` set) uses ``job_context`` (default ``production``) and
everything else ``adhoc`` (the same rule as datastore roots, `recc.datastore.current_context`)::

    contexts:
      adhoc:
        region: us-east-1
        profile: research             # optional; else the standard AWS credential chain
        eks_cluster: research-eks
        provisioner_role_arn: arn:aws:iam::111122223333:role/recc-provisioner
        subnets: [subnet-aaa, subnet-bbb]
        launch_template_id: lt-0123   # or ami_id + instance_profile_arn
        max_nodes: 50                 # per instance type and cluster
        max_nodes_total: 200
        route: auto                   # portforward | loadbalancer | auto
        kubernetes_api_url: https://...   # override (tests: the fake API server)
        kubernetes_ca_file: /path/ca.pem  # override; or kubernetes_verify_ssl: false
        data_access_role_arn: arn:aws:iam::111122223333:role/recc-data
        user_group: research-users    # the user's Kubernetes group (default recc:<user>)
        efs_server: fs-123.efs.us-east-1.amazonaws.com
        lb_source_cidrs: [10.0.0.0/8]
        timeouts: {capacity: 900, workers: 600}
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from recc.config import load_user_config
from recc.errors import SpecError

DEFAULT_CONTEXT = "adhoc"
DEFAULT_JOB_CONTEXT = "production"
ROUTES = ("portforward", "loadbalancer", "auto")


@dataclass(frozen=True)
class Context:
    """One context's settings for the EKS provider."""

    name: str = DEFAULT_CONTEXT
    region: str = "us-east-1"
    profile: str | None = None
    eks_cluster: str | None = None
    provisioner_role_arn: str | None = None
    subnets: tuple[str, ...] = ()
    availability_zones: tuple[str, ...] = ()
    launch_template_id: str | None = None
    launch_template_name: str | None = None
    ami_id: str | None = None
    instance_profile_arn: str | None = None
    max_nodes: int = 20
    max_nodes_total: int | None = None
    route: str = "portforward"
    kubernetes_api_url: str | None = None
    kubernetes_ca_file: str | None = None
    kubernetes_verify_ssl: bool = True
    data_access_role_arn: str | None = None
    user_group: str | None = None
    efs_server: str | None = None
    lb_source_cidrs: tuple[str, ...] = ("10.0.0.0/8",)
    capacity_timeout: float = 900.0
    workers_timeout: float = 600.0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"context {self.name!r}"
        if self.route not in ROUTES:
            raise SpecError(f"{where}: route {self.route!r} is not one of {', '.join(ROUTES)}")
        for key in ("max_nodes", "max_nodes_total"):
            value = getattr(self, key)
            if value is None and key == "max_nodes_total":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SpecError(f"{where}: {key} must be a whole number >= 0, got {value!r}")
        for key in ("subnets", "availability_zones", "lb_source_cidrs"):
            value = getattr(self, key)
            if isinstance(value, str):
                value = (value,)
            object.__setattr__(self, key, tuple(str(v) for v in value))
        for key in ("capacity_timeout", "workers_timeout"):
            try:
                value = float(getattr(self, key))
            except (TypeError, ValueError):
                raise SpecError(f"{where}: {key} must be seconds, got {getattr(self, key)!r}") from None
            if not value > 0:
                raise SpecError(f"{where}: {key} must be positive")
            object.__setattr__(self, key, value)

    def require(self, *keys: str) -> None:
        """`SpecError` naming the settings this context lacks for what is about to happen."""
        missing = [k for k in keys if not getattr(self, k)]
        if missing:
            raise SpecError(f"context {self.name!r} has no {', '.join(missing)}",
                            hint="set them under contexts: in config.yaml (see docs/eks.md)")

    @property
    def has_launch_template(self) -> bool:
        return bool(self.launch_template_id or self.launch_template_name)

    def manifest_options(self, worker_death_timeout: float = 120.0):
        from recc.manifests import Options

        return Options(route=self.route, data_access_role_arn=self.data_access_role_arn, user_group=self.user_group,
                       lb_source_cidrs=self.lb_source_cidrs, efs_server=self.efs_server,
                       worker_death_timeout=worker_death_timeout)

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> "Context":
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise SpecError(f"context {name!r} must be a mapping of settings, found a {type(data).__name__}")
        data = {str(k).replace("-", "_"): v for k, v in data.items()}
        timeouts = data.pop("timeouts", None) or {}
        if not isinstance(timeouts, Mapping):
            raise SpecError(f"context {name!r}: timeouts must be a mapping (capacity, workers)")
        for key in ("capacity", "workers"):
            if key in timeouts:
                data[f"{key}_timeout"] = timeouts[key]
        known = {f.name for f in dataclasses.fields(cls)} - {"name", "extra"}
        unknown = sorted(k for k in data if k not in known)
        if unknown:
            raise SpecError(f"context {name!r} has unknown setting(s): {', '.join(unknown)}",
                            hint=f"known settings: {', '.join(sorted(known))}, timeouts")
        return cls(name=name, **data)


def current_context_name(settings: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> str:
    """``RECC_CONTEXT``; else ``job_context`` (default production) when ``RECC_JOB_ID`` is set; else ``adhoc``."""
    env = os.environ if environ is None else environ
    if env.get("RECC_CONTEXT"):
        return env["RECC_CONTEXT"]
    if env.get("RECC_JOB_ID"):
        cfg = load_user_config() if settings is None else settings
        return str(cfg.get("job_context") or DEFAULT_JOB_CONTEXT)
    return DEFAULT_CONTEXT


def load_context(name: str | None = None, settings: Mapping[str, Any] | None = None,
                 environ: Mapping[str, str] | None = None) -> Context:
    """The named (or current) context from the user's settings; `SpecError` if it is not configured."""
    cfg = load_user_config() if settings is None else settings
    name = name or current_context_name(cfg, environ)
    contexts = cfg.get("contexts") or {}
    if not isinstance(contexts, Mapping):
        raise SpecError("contexts must map context names to settings", hint="see docs/eks.md")
    if name not in contexts:
        raise SpecError(f"context {name!r} is not configured",
                        hint=(f"configured contexts: {', '.join(sorted(map(str, contexts)))}" if contexts
                              else "add it under contexts: in config.yaml (see docs/eks.md)"))
    return Context.from_dict(name, contexts[name])


def all_contexts(settings: Mapping[str, Any] | None = None) -> dict[str, Context]:
    """Every configured context by name; `SpecError` naming a broken one, none configured included."""
    cfg = load_user_config() if settings is None else settings
    contexts = cfg.get("contexts") or {}
    if not isinstance(contexts, Mapping) or not contexts:
        raise SpecError("no contexts are configured", hint="add them under contexts: in config.yaml (see docs/eks.md)")
    return {str(name): Context.from_dict(str(name), data) for name, data in contexts.items()}
