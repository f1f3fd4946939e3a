"""One device metric over the last minutes, drawn with QPainter from TelemetrySampler history."""

from __future__ import annotations

from collections import deque
from enum import StrEnum

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from core.gpus import CPU_INDEX, GpuSample, TelemetrySampler
from widgets._format import GiB
from widgets._subscriptions import tie


class Metric(StrEnum):
    MEMORY = "memory"
    UTILIZATION = "utilization"
    TEMPERATURE = "temperature"
    POWER = "power"


_COLORS = {
    Metric.MEMORY: QColor("#2e7d32"),
    Metric.UTILIZATION: QColor("#1565c0"),
    Metric.TEMPERATURE: QColor("#e65100"),
    Metric.POWER: QColor("#6a1b9a"),
}


def metric_value(sample: GpuSample, metric: Metric) -> float | None:
    """The metric's value in its display unit (GiB, %, °C, W), None when not reported."""
    if metric is Metric.MEMORY:
        return sample.memory_used / GiB
    if metric is Metric.UTILIZATION:
        return None if sample.utilization_gpu is None else float(sample.utilization_gpu)
    if metric is Metric.TEMPERATURE:
        return None if sample.temperature_c is None else float(sample.temperature_c)
    return sample.power_w


class TelemetryChart(QWidget):
    """A line chart of ``metric`` for device ``index``, newest on the right.

    Seeds itself from ``sampler.history(index)`` and appends each new round's sample.
    ``window_s`` is the span shown.
    """

    def __init__(
        self,
        sampler: TelemetrySampler,
        index: int,
        metric: Metric,
        window_s: float = 300.0,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.sampler = sampler
        self.index = index
        self.kind = Metric(metric)
        self.window_s = window_s
        self.points: deque[tuple[float, float | None]] = deque(maxlen=3600)
        self.ceiling: float | None = None  # memory total / power limit, when known
        for sample in sampler.history(index):
            self._add(sample)
        tie(self, sampler.subscribe(self._on_samples))
        self.setMinimumSize(160, 140)
        self.setMaximumHeight(220)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    # ----------------------------------------------------------------- state
    @property
    def title(self) -> str:
        cpu = self.index == CPU_INDEX
        return {
            Metric.MEMORY: "RAM used" if cpu else "VRAM used",
            Metric.UTILIZATION: "CPU busy" if cpu else "Utilisation",
            Metric.TEMPERATURE: "Temperature",
            Metric.POWER: "Power",
        }[self.kind]

    @property
    def latest(self) -> float | None:
        return self.points[-1][1] if self.points else None

    def value_text(self) -> str:
        """The current value as shown in the chart's corner."""
        value = self.latest
        if not self.points:
            return "waiting…"
        if value is None:
            return "not reported"
        if self.kind is Metric.MEMORY:
            total = f" / {self.ceiling:.1f}" if self.ceiling else ""
            return f"{value:.1f}{total} GiB"
        if self.kind is Metric.UTILIZATION:
            return f"{value:.0f} %"
        if self.kind is Metric.TEMPERATURE:
            return f"{value:.0f} °C"
        limit = f" / {self.ceiling:.0f}" if self.ceiling else ""
        return f"{value:.0f}{limit} W"

    def _add(self, sample: GpuSample) -> None:
        if self.kind is Metric.MEMORY:
            self.ceiling = sample.memory_total / GiB
        elif self.kind is Metric.POWER and sample.power_limit_w:
            self.ceiling = sample.power_limit_w
        self.points.append((sample.at, metric_value(sample, self.kind)))

    def _on_samples(self, samples: tuple[GpuSample, ...]) -> None:
        for sample in samples:
            if sample.index == self.index:
                self._add(sample)
                self.update()

    # ----------------------------------------------------------------- drawing
    def sizeHint(self) -> QSize:
        return QSize(240, 90)

    def _y_range(self, values: list[float]) -> tuple[float, float]:
        if self.kind is Metric.UTILIZATION:
            return 0.0, 100.0
        if self.kind is Metric.TEMPERATURE:
            return 20.0, max(90.0, max(values, default=0) + 5)
        top = self.ceiling or max(values, default=1.0) * 1.2 or 1.0
        return 0.0, max(top, max(values, default=0.0))

    def paintEvent(self, _event: QPaintEvent) -> None:
        with QPainter(self) as p:
            self._paint(p)

    def _paint(self, p: QPainter) -> None:
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        p.setPen(QPen(QColor("#d9dde3"), 1))
        p.setBrush(QColor("#fbfcfd"))
        p.drawRoundedRect(rect, 6, 6)
        fm = self.fontMetrics()
        pad = 8.0
        text_h = fm.height()
        p.setPen(QColor("#5f6b7a"))
        p.drawText(
            QRectF(pad, 4, rect.width() - 2 * pad, text_h),
            int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
            self.title,
        )
        p.setPen(QColor("#1f2933"))
        p.drawText(
            QRectF(pad, 4, rect.width() - 2 * pad, text_h),
            int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter),
            self.value_text(),
        )
        plot = QRectF(pad, 8 + text_h, rect.width() - 2 * pad, rect.height() - text_h - 14)
        p.setPen(QPen(QColor("#eceff3"), 1))
        for i in range(1, 4):
            y = plot.top() + plot.height() * i / 4
            p.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
        known = [(t, v) for t, v in self.points if v is not None]
        if not known:
            p.setPen(QColor("#8a94a3"))
            message = "not reported by this device" if self.points else "waiting for samples…"
            p.drawText(plot, int(Qt.AlignmentFlag.AlignCenter), message)
            return
        now = self.points[-1][0]
        # the span grows with the data, from one minute up to ``window_s``
        span = min(self.window_s, max(60.0, now - self.points[0][0]))
        lo, hi = self._y_range([v for _, v in known])
        height = max(hi - lo, 1e-9)
        path = QPainterPath()
        first = True
        for t, v in known:
            age = now - t
            if age > span:
                continue
            x = plot.right() - plot.width() * age / span
            y = plot.bottom() - plot.height() * (min(max(v, lo), hi) - lo) / height
            if first:
                path.moveTo(x, y)
                first = False
            else:
                path.lineTo(x, y)
        if path.elementCount() == 0:
            return
        color = _COLORS[self.kind]
        fill = QPainterPath(path)
        fill.lineTo(path.currentPosition().x(), plot.bottom())
        fill.lineTo(path.elementAt(0).x, plot.bottom())
        fill.closeSubpath()
        shade = QColor(color)
        shade.setAlpha(40)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(shade)
        p.drawPath(fill)
        p.setPen(QPen(color, 1.6))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawPath(path)
        p.setPen(QColor("#8a94a3"))
        p.drawText(
            QRectF(plot.left(), plot.bottom() - fm.height(), plot.width(), fm.height()),
            int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignBottom),
            f"last {span / 60:.0f} min" if span >= 90 else f"last {span:.0f} s",
        )
