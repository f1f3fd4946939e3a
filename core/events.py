"""Typed events out of the core, and the small bus that carries them.

Payloads are frozen dataclasses; each carries ``at`` (``time.time()`` when it was made).
The bus lives on the asyncio loop thread: :meth:`EventBus.emit` is called there and runs
the subscribers synchronously, in the order they subscribed. A thread that has news calls
:meth:`EventBus.emit_threadsafe`, which hops to the loop with ``call_soon_threadsafe``.
Async consumers (an SSE endpoint, the GUI bridge) read :meth:`EventBus.stream`, a bounded
queue that drops its oldest event rather than ever blocking the emitter. The last events
are kept in :attr:`EventBus.history` for late subscribers (the GUI opening its jobs page).

Nothing here imports Qt; the app's bridge turns these events into Qt signals.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeAlias

log = logging.getLogger(__name__)

__all__ = [
    "EVENT_TYPES",
    "Event",
    "EventBus",
    "EventStream",
    "JobAssigned",
    "JobFailed",
    "JobFinished",
    "JobProgress",
    "JobQueued",
    "JobStarted",
    "ModelChanged",
    "NodeChanged",
    "RunnerChanged",
]


def _now() -> float:
    return time.time()


@dataclass(frozen=True, slots=True)
class JobQueued:
    job_id: str
    capability: str
    model_id: str
    queue_depth: int
    at: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class JobAssigned:
    job_id: str
    runner_id: str
    gpu: int | None
    at: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class JobStarted:
    job_id: str
    at: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class JobProgress:
    """``previews`` are small JPEG data URLs (``data:image/jpeg;base64,...``), maybe none."""

    job_id: str
    step: int
    steps: int
    previews: tuple[str, ...] = ()
    at: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class JobFinished:
    """``outputs`` are file paths; ``fee`` is a decimal string, ``"0"`` when free."""

    job_id: str
    outputs: tuple[str, ...]
    duration_s: float
    pixels: int
    fee: str = "0"
    at: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class JobFailed:
    """``status`` is the HTTP status the caller got; ``reason`` is for a person."""

    job_id: str
    status: int
    reason: str
    at: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class RunnerChanged:
    runner_id: str
    state: str
    detail: str = ""
    at: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class ModelChanged:
    """``state`` is one of ``loading``, ``warm``, ``unloaded``, ``failed``."""

    runner_id: str
    pipeline: str
    model_id: str
    state: str
    detail: str = ""
    at: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class NodeChanged:
    state: str
    detail: str = ""
    at: float = field(default_factory=_now)


Event: TypeAlias = (
    JobQueued
    | JobAssigned
    | JobStarted
    | JobProgress
    | JobFinished
    | JobFailed
    | RunnerChanged
    | ModelChanged
    | NodeChanged
)

EVENT_TYPES: tuple[type[Event], ...] = (
    JobQueued,
    JobAssigned,
    JobStarted,
    JobProgress,
    JobFinished,
    JobFailed,
    RunnerChanged,
    ModelChanged,
    NodeChanged,
)

Callback: TypeAlias = Callable[[Any], object]


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _Subscription:
    __slots__ = ("active", "callback", "types")

    def __init__(self, callback: Callback, types: tuple[type, ...]) -> None:
        self.callback = callback
        self.types = types
        self.active = True


class _Sink:
    """A stream's queue; the bus holds this, never the stream, so a dropped stream is freed."""

    __slots__ = ("bus", "dropped", "queue")

    def __init__(self, bus: EventBus, maxsize: int) -> None:
        self.bus = bus
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize)
        self.dropped = 0

    def put(self, event: Event) -> None:
        if self.queue.full():
            self.queue.get_nowait()  # drop the oldest: the emitter never waits
            self.dropped += 1
            self.bus.dropped += 1
        self.queue.put_nowait(event)


class EventStream(AsyncIterator[Event]):
    """Events for one async consumer, from the moment :meth:`EventBus.stream` returned.

    ``async for event in bus.stream(JobProgress): ...``. It unsubscribes on :meth:`aclose`,
    at the end of ``async with``, or when it is garbage-collected. ``dropped`` counts the
    events this consumer lost because it fell more than ``maxsize`` events behind.
    """

    def __init__(self, bus: EventBus, types: tuple[type, ...], maxsize: int) -> None:
        self._sink = _Sink(bus, maxsize)
        self._unsubscribe = bus.subscribe(self._sink.put, *types)
        self._finalizer = weakref.finalize(self, self._unsubscribe)

    @property
    def dropped(self) -> int:
        return self._sink.dropped

    def qsize(self) -> int:
        return self._sink.queue.qsize()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        if not self._finalizer.alive and self._sink.queue.empty():
            raise StopAsyncIteration
        event = await self._sink.queue.get()
        if event is None:  # closed while a reader waited
            raise StopAsyncIteration
        return event

    async def aclose(self) -> None:
        """Unsubscribe; events already queued can still be read, then iteration stops."""
        if self._finalizer.alive:
            self._finalizer()
            if self._sink.queue.empty():  # wake a reader waiting on the empty queue
                self._sink.queue.put_nowait(None)

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class EventBus:
    """Subscribers, async streams and a history of the last ``history_size`` events.

    The bus belongs to one event loop: the running loop at construction, else the first
    :meth:`bind` (or the loop running at the first :meth:`emit`). In debug mode (no ``-O``)
    :meth:`emit` raises RuntimeError when called from anywhere but that loop's thread.
    """

    def __init__(self, history_size: int = 1000) -> None:
        self._subs: list[_Subscription] = []
        self._history: deque[Event] = deque(maxlen=history_size)
        #: Events lost by slow streams, all streams together.
        self.dropped = 0
        self._loop = _running_loop()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach the bus to ``loop``; the first loop is kept, another one is an error."""
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("this EventBus already belongs to another event loop")

    @property
    def history(self) -> tuple[Event, ...]:
        """The last events emitted, oldest first."""
        return tuple(self._history)

    def subscribe(self, callback: Callback, *types: type) -> Callable[[], None]:
        """Call ``callback(event)`` for each event of ``types`` (all events when none given).

        Returns a function that unsubscribes; calling it twice is harmless. A callback
        unsubscribed during an emit is not called for the rest of that emit.
        """
        sub = _Subscription(callback, types)
        self._subs.append(sub)

        def unsubscribe() -> None:
            if sub.active:
                sub.active = False
                self._subs.remove(sub)

        return unsubscribe

    def wants(self, event_type: type) -> bool:
        """Whether a subscriber (or an open stream) takes events of ``event_type``: work that
        only feeds such events can be skipped when none does."""
        return any(
            sub.active and (not sub.types or issubclass(event_type, sub.types))
            for sub in self._subs
        )

    def emit(self, event: Event) -> None:
        """Record ``event`` and call the subscribers now, in subscription order.

        Call it on the loop thread. A subscriber that raises is logged with its traceback;
        the others still run. Subscribers that emit are handled depth first.
        """
        if __debug__:
            self._check_thread()
        self._history.append(event)
        for sub in tuple(self._subs):
            if not sub.active or (sub.types and not isinstance(event, sub.types)):
                continue
            try:
                sub.callback(event)
            except Exception:
                log.exception("event subscriber %r failed on %r", sub.callback, event)

    def emit_threadsafe(self, event: Event) -> None:
        """Emit ``event`` on the loop thread, from any thread; returns at once.

        After the loop has closed the event is dropped (and logged at debug level).
        """
        if self._loop is None:
            raise RuntimeError("bind the EventBus to its event loop before emit_threadsafe")
        try:
            self._loop.call_soon_threadsafe(self.emit, event)
        except RuntimeError:  # the loop is closed: the node is shutting down
            log.debug("event loop closed; dropped %r", event)

    def stream(self, *types: type, maxsize: int = 1000, replay: bool = False) -> EventStream:
        """An async iterator of the events of ``types`` (all when none) from now on.

        It subscribes at once, so nothing emitted after this call is missed. With
        ``replay`` it starts with the matching events still in :attr:`history`. When the
        consumer falls ``maxsize`` events behind, the oldest queued event is dropped and
        counted (``stream.dropped``, ``bus.dropped``); the emitter never blocks.
        """
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._bind_running()
        stream = EventStream(self, types, maxsize)
        if replay:
            for event in self._history:
                if not types or isinstance(event, types):
                    stream._sink.put(event)
        return stream

    def _bind_running(self) -> None:
        if self._loop is None:
            self._loop = _running_loop()

    def _check_thread(self) -> None:
        running = _running_loop()
        if self._loop is None:
            self._loop = running  # no loop anywhere yet: plain synchronous use is fine
        elif running is not self._loop:
            raise RuntimeError(
                "EventBus.emit called off its event loop thread; use emit_threadsafe"
            )
