"""RECC: ephemeral, cost-visible Dask clusters, locally or on AWS EKS, behind two calls.

>>> from recc import RECCCluster, RSHClient     # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["RECCCluster", "RSHClient", "ClusterSpec", "RECCError", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy: `recc` the command should not pay for importing distributed on every call.
    if name == "RECCCluster":
        from recc.cluster import RECCCluster

        return RECCCluster
    if name == "RSHClient":
        from recc.client import RSHClient

        return RSHClient
    if name == "ClusterSpec":
        from recc.spec import ClusterSpec

        return ClusterSpec
    if name == "RECCError":
        from recc.errors import RECCError

        return RECCError
    raise AttributeError(f"module 'recc' has no attribute {name!r}")
