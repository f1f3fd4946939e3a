"""Widget tests: each widget is built from core state objects (an EventBus, a
TelemetrySampler, a ModelsConfig, JobRecords) and driven by changing that state."""

from __future__ import annotations

import asyncio
import gc
import time
from collections import deque
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import qasync
from PySide6.QtWidgets import QApplication

from core.gpus import GpuInfo, GpuSample, TelemetrySampler

GiB = 2**30
T = TypeVar("T")


class FedSampler(TelemetrySampler):
    """A real TelemetrySampler whose rounds the test hands in (no NVML, no thread): the
    history and the subscribers' calls are the sampler's own."""

    def feed(self, *samples: GpuSample) -> None:
        for s in samples:
            self._history.setdefault(s.index, deque(maxlen=self._maxlen)).append(s)
        self._publish(tuple(samples))


def sample(
    index: int = 0,
    used: int = 2 * GiB,
    total: int = 24 * GiB,
    util: int | None = 50,
    temp: int | None = 60,
    power: float | None = 120.0,
    limit: float | None = 450.0,
    at: float | None = None,
) -> GpuSample:
    return GpuSample(
        index=index,
        at=time.time() if at is None else at,
        memory_total=total,
        memory_used=used,
        memory_free=total - used,
        utilization_gpu=util,
        temperature_c=temp,
        power_w=power,
        power_limit_w=limit,
    )


def gpu_info(index: int = 0, name: str = "RTX 4090", total: int = 24 * GiB) -> GpuInfo:
    return GpuInfo(index, name, f"GPU-{index}", total, (8, 9), "550.54.14", "12.4")


@pytest.fixture(autouse=True)
def collect_on_the_qt_thread() -> Iterator[None]:
    """Collect garbage here, on the Qt thread, after each test: a cycle holding a Qt object
    that the collector happens to free on a worker thread deletes a QObject from the wrong
    thread, and Qt's timer list then crashes later, far from the cause."""
    yield
    gc.collect()


@pytest.fixture
def sampler() -> FedSampler:
    return FedSampler()


@pytest.fixture
def qloop(qapp: QApplication) -> Iterator[asyncio.AbstractEventLoop]:
    """The app's arrangement: an asyncio loop run by Qt (qasync)."""
    loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(loop)
    try:
        yield loop
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
        asyncio.set_event_loop(None)
        del loop
        gc.collect()  # the loop's Qt timers go here, on the Qt thread


def run(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
    """Run ``coro`` on the Qt-driven loop (Qt events are processed meanwhile)."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))
