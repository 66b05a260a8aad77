"""In-memory fan-out of daemon events to event-stream subscribers.

Publishing never waits for a subscriber: each has a bounded queue, and one that falls
behind is dropped with a final event saying why, so a slow reader cannot slow the daemon.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

QUEUE_SIZE = 1000


class Subscription:
    def __init__(self, bus: "EventBus", cluster: str | None) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self.cluster = cluster
        self.dropped: str | None = None
        self._bus = bus

    def close(self) -> None:
        self._bus._subs.discard(self)

    async def get(self) -> dict[str, Any]:
        return await self.queue.get()


class EventBus:
    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self._seq = itertools.count(1)

    def subscribe(self, cluster: str | None = None) -> Subscription:
        sub = Subscription(self, cluster)
        self._subs.add(sub)
        return sub

    def publish(self, kind: str, cluster: str | None = None, **data: Any) -> dict[str, Any]:
        event = {"seq": next(self._seq), "type": kind, "cluster": cluster, "at": time.time(), "data": data}
        for sub in list(self._subs):
            if sub.cluster is not None and cluster != sub.cluster:
                continue
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.dropped = f"subscriber fell more than {QUEUE_SIZE} events behind"
                self._subs.discard(sub)
                # make room for one last event telling the reader why the stream ends
                sub.queue.get_nowait()
                sub.queue.put_nowait({"seq": event["seq"], "type": "stream.dropped", "cluster": None,
                                      "at": event["at"], "data": {"reason": sub.dropped}})
        return event
