"""The event bus: order, filters, failures, threads, slow streams, history."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import threading

import pytest

from core.events import (
    EVENT_TYPES,
    Event,
    EventBus,
    JobFailed,
    JobFinished,
    JobProgress,
    JobQueued,
    JobStarted,
    ModelChanged,
    NodeChanged,
)


def progress(step: int, job_id: str = "j1") -> JobProgress:
    return JobProgress(job_id, step, 10, ())


async def test_subscribers_run_in_subscription_order_with_filters() -> None:
    bus = EventBus()
    seen: list[tuple[str, Event]] = []
    bus.subscribe(lambda e: seen.append(("all", e)))
    bus.subscribe(lambda e: seen.append(("progress", e)), JobProgress)
    bus.subscribe(lambda e: seen.append(("end", e)), JobFinished, JobFailed)
    started, step, failed = JobStarted("j1"), progress(1), JobFailed("j1", 500, "boom")
    for event in (started, step, failed):
        bus.emit(event)
    assert seen == [
        ("all", started),
        ("all", step),
        ("progress", step),
        ("all", failed),
        ("end", failed),
    ]


async def test_unsubscribe_stops_delivery_and_is_idempotent() -> None:
    bus = EventBus()
    a: list[Event] = []
    b: list[Event] = []
    off_a = bus.subscribe(a.append)
    bus.subscribe(b.append)
    bus.emit(progress(1))
    off_a()
    off_a()
    bus.emit(progress(2))
    assert [e.step for e in a if isinstance(e, JobProgress)] == [1]
    assert len(b) == 2


async def test_unsubscribed_during_emit_is_not_called() -> None:
    bus = EventBus()
    calls: list[str] = []

    def first(event: Event) -> None:
        calls.append("first")
        off_second()

    bus.subscribe(first)
    off_second = bus.subscribe(lambda e: calls.append("second"))
    bus.emit(progress(1))
    assert calls == ["first"]


async def test_a_failing_subscriber_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    seen: list[Event] = []

    def broken(event: Event) -> None:
        raise ValueError("subscriber bug")

    bus.subscribe(seen.append)
    bus.subscribe(broken)
    bus.subscribe(seen.append)
    with caplog.at_level(logging.ERROR, logger="core.events"):
        bus.emit(progress(1))
    assert len(seen) == 2
    [record] = caplog.records
    assert record.exc_info is not None and "subscriber bug" in str(record.exc_info[1])
    assert "broken" in record.getMessage()


async def test_emit_threadsafe_from_a_thread_arrives_on_the_loop_thread() -> None:
    bus = EventBus()
    loop_thread = threading.get_ident()
    arrived: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
    bus.subscribe(lambda e: arrived.put_nowait((threading.get_ident(), e)))
    sent: list[Event] = [
        ModelChanged("r0", "text-to-image", "org/m", "warm"),
        NodeChanged("up", ""),
    ]

    def worker() -> None:
        for event in sent:
            bus.emit_threadsafe(event)

    thread = threading.Thread(target=worker)
    thread.start()
    await asyncio.to_thread(thread.join)
    got = [await asyncio.wait_for(arrived.get(), 5) for _ in sent]
    assert [e for _, e in got] == sent
    assert {ident for ident, _ in got} == {loop_thread}
    assert thread.ident != loop_thread


@pytest.mark.skipif(not __debug__, reason="the thread check is a debug-mode assertion")
async def test_emit_off_the_loop_thread_is_refused() -> None:
    bus = EventBus()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            bus.emit(progress(1))
        except RuntimeError as e:
            errors.append(e)

    await asyncio.to_thread(worker)
    assert len(errors) == 1 and "emit_threadsafe" in str(errors[0])
    assert bus.history == ()


def test_a_bus_binds_to_one_loop() -> None:
    bus = EventBus()  # no loop running: unbound
    with pytest.raises(RuntimeError, match="bind"):
        bus.emit_threadsafe(progress(1))
    bus.emit(progress(1))  # plain synchronous use, no loop anywhere, is allowed
    loop = asyncio.new_event_loop()
    other = asyncio.new_event_loop()
    try:
        bus.bind(loop)
        bus.bind(loop)
        with pytest.raises(RuntimeError, match="another event loop"):
            bus.bind(other)
        seen: list[Event] = []
        bus.subscribe(seen.append)
        bus.emit_threadsafe(progress(2))
        loop.run_until_complete(asyncio.sleep(0))
        assert [getattr(e, "step", None) for e in seen] == [2]
    finally:
        loop.close()
        other.close()
    bus.emit_threadsafe(progress(3))  # after the loop closed: dropped, not raised


async def test_slow_stream_drops_the_oldest_and_counts() -> None:
    bus = EventBus()
    stream = bus.stream(JobProgress, maxsize=3)
    other = bus.stream(maxsize=100)
    for step in range(10):
        bus.emit(progress(step))  # never blocks, however far behind the stream is
    bus.emit(JobStarted("j2"))  # filtered out of the first stream
    got = [await anext(stream) for _ in range(3)]
    assert [e.step for e in got if isinstance(e, JobProgress)] == [7, 8, 9]
    assert stream.dropped == 7
    assert other.dropped == 0 and other.qsize() == 11
    assert bus.dropped == 7
    await stream.aclose()
    await other.aclose()


async def test_stream_sees_events_emitted_before_its_first_read() -> None:
    bus = EventBus()
    async with bus.stream() as stream:
        bus.emit(progress(1))
        assert await asyncio.wait_for(anext(stream), 1) == bus.history[-1]


async def test_stream_in_a_consumer_task_and_close_wakes_it() -> None:
    bus = EventBus()
    stream = bus.stream(JobProgress)
    received: list[int] = []

    async def consume() -> None:
        async for event in stream:
            assert isinstance(event, JobProgress)
            received.append(event.step)

    task = asyncio.create_task(consume())
    for step in range(5):
        bus.emit(progress(step))
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    await stream.aclose()
    await asyncio.wait_for(task, 1)
    assert received == [0, 1, 2, 3, 4]
    bus.emit(progress(6))
    assert stream.qsize() == 0  # unsubscribed


async def test_a_dropped_stream_unsubscribes() -> None:
    bus = EventBus()
    stream = bus.stream()
    bus.emit(progress(1))
    del stream
    gc.collect()
    assert bus._subs == []


async def test_stream_replay_starts_with_history() -> None:
    bus = EventBus()
    bus.emit(JobQueued("j1", "text-to-image", "org/m", 1))
    bus.emit(progress(1))
    async with bus.stream(JobProgress, replay=True) as stream:
        bus.emit(progress(2))
        steps = [getattr(await anext(stream), "step", None) for _ in range(2)]
    assert steps == [1, 2]


async def test_history_keeps_the_last_n_for_late_subscribers() -> None:
    bus = EventBus(history_size=5)
    for step in range(12):
        bus.emit(progress(step))
    assert [e.step for e in bus.history if isinstance(e, JobProgress)] == [7, 8, 9, 10, 11]
    assert isinstance(bus.history, tuple)


def test_events_are_frozen_and_stamped() -> None:
    for cls in EVENT_TYPES:
        assert dataclasses.is_dataclass(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        assert names[-1] == "at"
    event = JobFinished("j1", ("/tmp/a.png",), 1.5, 512 * 512, "0.25")
    assert event.at > 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.fee = "1"  # type: ignore[misc]
    assert ModelChanged("r0", "text-to-image", "org/m", "loading").detail == ""


def test_wants_tells_whether_anyone_takes_an_event_type() -> None:
    bus = EventBus()
    assert not bus.wants(JobProgress)
    stop = bus.subscribe(lambda e: None, JobFinished)
    assert not bus.wants(JobProgress) and bus.wants(JobFinished)
    stop_all = bus.subscribe(lambda e: None)  # every event
    assert bus.wants(JobProgress)
    stop_all()
    stop()
    assert not bus.wants(JobFinished)
