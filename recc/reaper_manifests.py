"""The in-cluster reaper's Kubernetes objects, built by pure functions (``recc harvest --print-cronjob``).

The reaper is a CronJob in the ``recc-system`` namespace that runs ``recc harvest --provider eks``
every few minutes under a role of its own (IRSA annotation on its ServiceAccount, or an EKS Pod
Identity association). It deletes the RECC clusters whose daemon stopped renewing their heartbeat
Lease (laptop closed, daemon killed or frozen) and the ones idle past their timeouts, by the same
rules and through the same deletion path as the daemon (docs/eks-operations.md).

Its settings travel in a ConfigMap holding a ``config.yaml`` with the one context it serves; the
Kubernetes API is reached as from a desktop (an EKS token of the assumed provisioner role), so the
reaper needs no in-cluster RBAC beyond what that role's Kubernetes group already has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

REAPER_NAMESPACE = "recc-system"
REAPER_NAME = "recc-reaper"  # ServiceAccount, ConfigMap and CronJob
CONFIG_DIR = "/etc/recc"
DEFAULT_SCHEDULE = "*/5 * * * *"
# Context settings that only make sense on a desktop (the pod finds the API server by DescribeCluster
# and uses the role it is given, not a profile).
DESKTOP_ONLY = ("profile", "kubernetes_api_url", "kubernetes_ca_file", "kubernetes_verify_ssl")
LABELS = {"app.kubernetes.io/name": "recc", "app.kubernetes.io/component": "reaper",
          "app.kubernetes.io/managed-by": "recc", "app.kubernetes.io/part-of": "recc"}


@dataclass(frozen=True)
class ReaperOptions:
    """What the reaper's objects depend on.

    ``context_settings`` is the context block as in ``config.yaml`` (desktop-only keys are dropped);
    ``role_arn`` is the reaper's own role: with it the ServiceAccount gets the IRSA annotation,
    without it the objects assume an EKS Pod Identity association (printed as a comment).
    """

    context: str
    context_settings: Mapping[str, Any]
    image: str
    role_arn: str | None = None
    schedule: str = DEFAULT_SCHEDULE
    namespace: str = REAPER_NAMESPACE
    extra_args: tuple[str, ...] = field(default=())


def _meta(name: str, opts: ReaperOptions, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": opts.namespace, "labels": dict(LABELS), **extra}


def reaper_namespace(opts: ReaperOptions) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": opts.namespace, "labels": dict(LABELS)}}


def reaper_service_account(opts: ReaperOptions) -> dict[str, Any]:
    """The reaper's identity: IRSA when ``role_arn`` is given, else left to a Pod Identity association."""
    extra: dict[str, Any] = {}
    if opts.role_arn:
        extra["annotations"] = {"eks.amazonaws.com/role-arn": opts.role_arn,
                                "eks.amazonaws.com/sts-regional-endpoints": "true"}
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(REAPER_NAME, opts, **extra),
            "automountServiceAccountToken": False}


def reaper_config(opts: ReaperOptions) -> dict[str, Any]:
    """``config.yaml`` with the one context the reaper serves."""
    settings = {k: v for k, v in dict(opts.context_settings).items()
                if k.replace("-", "_") not in DESKTOP_ONLY}
    text = yaml.safe_dump({"contexts": {opts.context: settings}}, sort_keys=True)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(REAPER_NAME, opts),
            "data": {"config.yaml": text}}


def reaper_cronjob(opts: ReaperOptions) -> dict[str, Any]:
    """Every ``schedule``: ``recc harvest --provider eks --context <context> --json``, one run at a time."""
    command = ["recc", "harvest", "--provider", "eks", "--context", opts.context, "--json", *opts.extra_args]
    container = {
        "name": "reaper", "image": opts.image, "command": command,
        "env": [{"name": "RECC_CONFIG_DIR", "value": CONFIG_DIR}, {"name": "RECC_DATA_DIR", "value": "/tmp/recc"},
                {"name": "HOME", "value": "/tmp"}, {"name": "PYTHONUNBUFFERED", "value": "1"}],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}},
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True},
    }
    pod = {"serviceAccountName": REAPER_NAME, "restartPolicy": "Never",
           # The reaper authenticates to Kubernetes with an EKS token of its AWS role, not the SA token;
           # the IRSA / Pod Identity webhooks mount their own token regardless of this setting.
           "automountServiceAccountToken": False,
           "containers": [container],
           "volumes": [{"name": "config", "configMap": {"name": REAPER_NAME}}, {"name": "tmp", "emptyDir": {}}]}
    return {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": _meta(REAPER_NAME, opts),
        "spec": {
            "schedule": opts.schedule,
            "concurrencyPolicy": "Forbid",  # a slow delete must not race the next run
            "startingDeadlineSeconds": 300,
            "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 3,
            "jobTemplate": {"metadata": {"labels": dict(LABELS)},
                            "spec": {"backoffLimit": 0, "activeDeadlineSeconds": 3600,
                                     "template": {"metadata": {"labels": dict(LABELS)}, "spec": pod}}},
        },
    }


def reaper_objects(opts: ReaperOptions) -> list[dict[str, Any]]:
    """Namespace, ServiceAccount, ConfigMap and CronJob, in apply order."""
    return [reaper_namespace(opts), reaper_service_account(opts), reaper_config(opts), reaper_cronjob(opts)]


def reaper_yaml(opts: ReaperOptions, eks_cluster: str | None = None) -> str:
    """The objects as one YAML stream a person can ``kubectl apply -f -``, with how to give it its role."""
    head = [f"# RECC in-cluster reaper for context {opts.context!r}: `recc harvest --provider eks` every "
            f"{opts.schedule!r}", "# Its role needs the provisioner policy's rights for every user (docs/eks-operations.md)."]
    if not opts.role_arn:
        head.append("# No --role-arn: give the ServiceAccount a role with EKS Pod Identity, e.g.")
        head.append(f"#   aws eks create-pod-identity-association --cluster-name {eks_cluster or '<eks cluster>'} "
                    f"--namespace {opts.namespace} --service-account {REAPER_NAME} --role-arn <reaper role arn>")
    body = yaml.safe_dump_all(reaper_objects(opts), sort_keys=False, default_flow_style=False, explicit_start=True)
    return "\n".join(head) + "\n" + body
