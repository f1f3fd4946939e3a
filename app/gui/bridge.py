"""Core events as Qt signals, for the window and the pages.

The core's :class:`~core.events.EventBus` calls subscribers on the asyncio loop thread; with
qasync that is the Qt thread, so the signals below are emitted there and connected slots run
at once, in order. The telemetry sampler's rounds come out as ``samples``. Widgets subscribe
to the core objects themselves (see ``widgets/_subscriptions.py``); the app's own objects use
this bridge, whose connections Qt drops when a receiver goes away.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal

from core import events as ev
from core.gpus import GpuSample, TelemetrySampler


class CoreBridge(QObject):
    node_changed = Signal(object)  # ev.NodeChanged
    runner_changed = Signal(object)  # ev.RunnerChanged
    model_changed = Signal(object)  # ev.ModelChanged
    job_queued = Signal(object)  # ev.JobQueued
    job_assigned = Signal(object)  # ev.JobAssigned
    job_started = Signal(object)  # ev.JobStarted
    job_progress = Signal(object)  # ev.JobProgress
    job_finished = Signal(object)  # ev.JobFinished
    job_failed = Signal(object)  # ev.JobFailed
    #: Any job event (queued ... failed), for views that count or refresh on each.
    job_event = Signal(object)
    samples = Signal(object)  # tuple[GpuSample, ...]

    def __init__(
        self,
        bus: ev.EventBus,
        sampler: TelemetrySampler | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.bus = bus
        self._by_type: dict[type, Any] = {
            ev.NodeChanged: self.node_changed,
            ev.RunnerChanged: self.runner_changed,
            ev.ModelChanged: self.model_changed,
            ev.JobQueued: self.job_queued,
            ev.JobAssigned: self.job_assigned,
            ev.JobStarted: self.job_started,
            ev.JobProgress: self.job_progress,
            ev.JobFinished: self.job_finished,
            ev.JobFailed: self.job_failed,
        }
        self._unsubscribe: list[Callable[[], Any]] = [bus.subscribe(self._on_event)]
        if sampler is not None:
            self._unsubscribe.append(sampler.subscribe(self._on_samples))

    def close(self) -> None:
        """Stop relaying (the window calls this when it goes)."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()

    def _on_event(self, event: ev.Event) -> None:
        signal = self._by_type.get(type(event))
        if signal is None:
            return
        signal.emit(event)
        if type(event).__name__.startswith("Job"):
            self.job_event.emit(event)

    def _on_samples(self, samples: tuple[GpuSample, ...]) -> None:
        self.samples.emit(samples)
