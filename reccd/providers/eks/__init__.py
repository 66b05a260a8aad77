"""The ``eks`` provider: per-cluster namespaces and capacity on a shared EKS cluster (docs/eks.md).

`provider` holds the lifecycle, `capacity` the Auto Scaling groups, `apis` the AWS and Kubernetes
clients with retries."""

from reccd.providers.eks.capacity import group_name
from reccd.providers.eks.provider import EksProvider, PortForwardEndpoint

__all__ = ["EksProvider", "PortForwardEndpoint", "group_name"]
