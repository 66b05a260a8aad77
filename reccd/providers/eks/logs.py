"""Pod logs of an EKS cluster through the Kubernetes API, cheap enough to follow at 300 workers.

Kubernetes has no call for many pods' logs at once, so each pod costs one read. What keeps
`recc logs --follow` cheap is the size of each read: a follow round asks with ``sinceSeconds``
(the time since the previous round plus `SLACK`) and ``timestamps=true``, so each pod answers only
its last seconds of lines, and the client drops the overlap by timestamp (`recc.logfollow`).
``sinceSeconds`` counts back from the kubelet's own clock, so a skew between the desktop and the
nodes does not matter. The reads run `CONCURRENCY` at a time.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from recc import manifests as M

if TYPE_CHECKING:
    from reccd.providers.eks.provider import EksProvider

CONCURRENCY = 16  # log reads in flight per request (threads of the blocking client)


async def pod_logs(provider: "EksProvider", name: str, tail: int | None = None, since_seconds: int | None = None,
                   timestamps: bool = False) -> dict[str, list[str]]:
    """Log lines per component: ``scheduler`` and each worker pod by name (scheduler first).

    ``tail``: the last lines of each pod; ``since_seconds``: only lines of the last so many seconds;
    ``timestamps``: each line starts with its RFC 3339 time and a space (as Kubernetes gives it)."""
    ns = M.namespace_name(provider.user, name)
    pods = await provider.k8s("core", "list_namespaced_pod", ns, ok=(404,), as_json=True)
    items = sorted(pods["items"] if pods else [], key=lambda p: (
        (p["metadata"].get("labels") or {}).get("app.kubernetes.io/component") != "scheduler", p["metadata"]["name"]))
    kwargs: dict[str, object] = {}
    if tail:
        kwargs["tail_lines"] = tail
    if since_seconds:
        kwargs["since_seconds"] = max(1, int(since_seconds))
    if timestamps:
        kwargs["timestamps"] = True
    gate = asyncio.Semaphore(CONCURRENCY)

    async def read(pod: str) -> list[str]:
        async with gate:
            text = await provider.k8s("core", "read_namespaced_pod_log", pod, ns, ok=(400, 404), **kwargs)
        return (text or "").splitlines()

    texts = await asyncio.gather(*(read(p["metadata"]["name"]) for p in items))
    out: dict[str, list[str]] = {}
    for p, lines in zip(items, texts):
        comp = (p["metadata"].get("labels") or {}).get("app.kubernetes.io/component")
        out["scheduler" if comp == "scheduler" else p["metadata"]["name"]] = lines
    return out
