"""Per-request progress channels, served as Server-Sent Events.

A client names its request with the ``X-Request-Id`` header and reads
``GET /progress/{request_id}`` (before, during or shortly after the request). Events are
JSON objects: ``queued``, ``started``, ``step`` (step, steps, previews), then ``done`` or
``error``. Publishing is thread-safe: the worker thread hops to the loop with
``call_soon_threadsafe``. Channels are bounded and expire after they finish.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

#: Header naming a request so its progress can be followed.
REQUEST_ID_HEADER = "X-Request-Id"
#: Events kept per channel for subscribers that arrive late.
MAX_EVENTS = 256
#: How long a finished channel stays readable.
FINISHED_TTL_S = 120.0
#: How long a subscriber waits for a request that has not started yet.
WAIT_FOR_START_S = 60.0
#: Channels kept at most (oldest finished ones go first).
MAX_CHANNELS = 1024

TERMINAL = ("done", "error")


@dataclass
class _Channel:
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))
    seq: int = 0
    finished_at: float | None = None
    waiters: set[asyncio.Event] = field(default_factory=set)


class ProgressHub:
    """All progress channels of one process. Create it on the event loop."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._channels: dict[str, _Channel] = {}

    def _channel(self, request_id: str) -> _Channel:
        ch = self._channels.get(request_id)
        if ch is None:
            self._expire()
            ch = self._channels[request_id] = _Channel()
        return ch

    def _expire(self) -> None:
        now = time.monotonic()
        for rid, ch in list(self._channels.items()):
            if ch.finished_at is not None and now - ch.finished_at > FINISHED_TTL_S:
                del self._channels[rid]
        if len(self._channels) >= MAX_CHANNELS:
            finished = sorted(
                (ch.finished_at, rid)
                for rid, ch in self._channels.items()
                if ch.finished_at is not None
            )
            for _, rid in finished[: len(self._channels) - MAX_CHANNELS + 1]:
                del self._channels[rid]

    def publish(self, request_id: str, event: str, **data: Any) -> None:
        """Add an event; call on the loop thread (see ``publish_threadsafe``)."""
        ch = self._channel(request_id)
        ch.seq += 1
        ch.events.append(
            {"event": event, "request_id": request_id, "seq": ch.seq, "at": time.time(), **data}
        )
        if event in TERMINAL:
            ch.finished_at = time.monotonic()
        for w in ch.waiters:
            w.set()

    def publish_threadsafe(self, request_id: str, event: str, **data: Any) -> None:
        self._loop.call_soon_threadsafe(lambda: self.publish(request_id, event, **data))

    async def follow(self, request_id: str) -> AsyncIterator[dict[str, Any]]:
        """Every event of the request, from the first kept one, until it finishes."""
        ch = self._channel(request_id)
        wake = asyncio.Event()
        ch.waiters.add(wake)
        last = 0
        try:
            while True:
                for ev in list(ch.events):
                    if ev["seq"] > last:
                        last = ev["seq"]
                        yield ev
                        if ev["event"] in TERMINAL:
                            return
                wake.clear()
                if ch.finished_at is not None:
                    return
                try:
                    await asyncio.wait_for(wake.wait(), WAIT_FOR_START_S if not ch.seq else None)
                except TimeoutError:
                    yield {
                        "event": "error",
                        "request_id": request_id,
                        "seq": last + 1,
                        "at": time.time(),
                        "msg": "no request with this id arrived",
                    }
                    return
        finally:
            ch.waiters.discard(wake)


def sse(event: dict[str, Any]) -> bytes:
    """One Server-Sent Event frame."""
    return f"event: {event['event']}\ndata: {json.dumps(event)}\n\n".encode()
