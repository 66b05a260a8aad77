"""What a cluster's pods say, read from a pod listing (pure: `provider._progress` lists, this reads).

A Deployment's pods restart their containers (``restartPolicy: Always``): a scheduler that exits at start
(an image without ``recc``, a bad setting) never makes its pod ``Failed``. The pod stays ``Running`` or
``Pending`` while its container waits in ``CrashLoopBackOff`` between restarts, so a crash loop is read from
the container statuses, or creation would wait its whole timeout (instances paid for meanwhile).
"""

from __future__ import annotations

from typing import Any

COMPONENT = "app.kubernetes.io/component"
# Restarts after which a container waiting in CrashLoopBackOff fails the cluster's creation. A worker may
# exit once or twice while its scheduler starts (its death timeout); three back-offs are ~70 s (10 s, 20 s, 40 s).
CRASH_LOOP_RESTARTS = 3


def crash_loop(pod: dict[str, Any]) -> str | None:
    """Why ``pod`` is crash-looping (its container, restarts and last exit), or None."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") == "CrashLoopBackOff" and (cs.get("restartCount") or 0) >= CRASH_LOOP_RESTARTS:
            last = (cs.get("lastState") or {}).get("terminated") or {}
            exit_ = f"; last exit {last['exitCode']} ({last.get('reason') or 'Error'})" if "exitCode" in last else ""
            return f"container {cs.get('name')} restarted {cs['restartCount']} times{exit_}"
    return None


def pod_progress(pods: list[dict[str, Any]]) -> dict[str, Any]:
    """``scheduler`` (its pod runs), ``workers_running``, ``pending`` and ``failed`` (pods, with why)."""
    out: dict[str, Any] = {"scheduler": False, "workers_running": 0, "pending": [], "failed": []}
    for p in pods:
        meta, status = p["metadata"], p.get("status") or {}
        if meta.get("deletionTimestamp"):
            continue
        phase = status.get("phase")
        looping = crash_loop(p)
        if looping:
            out["failed"].append(f"{meta['name']} ({looping})")
        elif phase == "Running":
            if (meta.get("labels") or {}).get(COMPONENT) == "scheduler":
                out["scheduler"] = True
            else:
                out["workers_running"] += 1
        elif phase == "Pending":
            why = [c.get("message") or c.get("reason") for c in status.get("conditions") or []
                   if c.get("status") == "False"]
            for cs in status.get("containerStatuses") or []:
                waiting = (cs.get("state") or {}).get("waiting") or {}
                if waiting.get("reason"):
                    why.append(f"{waiting['reason']}: {waiting.get('message') or ''}".strip(": "))
            out["pending"].append(f"{meta['name']} ({'; '.join(w for w in why if w) or 'Pending'})")
        elif phase in ("Failed", "Succeeded"):
            out["failed"].append(f"{meta['name']} ({phase})")
    return out
