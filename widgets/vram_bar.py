"""A device's memory as one bar: each model's footprint, other use, free, and the reserve."""

from __future__ import annotations

import html
from dataclasses import dataclass

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QBrush, QColor, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from core.gpus import GpuSample, TelemetrySampler
from widgets._format import fmt_bytes
from widgets._subscriptions import tie

PALETTE = ("#2e7d32", "#1565c0", "#6a1b9a", "#00838f", "#ad1457", "#f9a825", "#4e342e")
OTHER_COLOR = "#9aa1ab"
FREE_COLOR = "#eef1f4"
RESERVE_COLOR = "#f2b8b5"


@dataclass(frozen=True)
class ModelUse:
    """One model's share of a device: ``label`` (``model (pipeline)``), bytes, measured?"""

    label: str
    bytes: int
    measured: bool = False


class _Bar(QWidget):
    def __init__(self, owner: VramBar) -> None:
        super().__init__(owner)
        self.owner = owner
        self.setMinimumHeight(22)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:
        return QSize(240, 22)

    def paintEvent(self, _event: QPaintEvent) -> None:
        with QPainter(self) as p:
            self._paint(p)

    def _paint(self, p: QPainter) -> None:
        o = self.owner
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(FREE_COLOR))
        p.drawRoundedRect(rect, 4, 4)
        total = o.total
        if total > 0:
            x = rect.left()
            for i, (_label, size, color) in enumerate(o.segments()):
                w = rect.width() * size / total
                if w <= 0:
                    continue
                p.setBrush(QColor(color))
                p.drawRect(QRectF(x, rect.top(), w, rect.height()))
                if i:  # a thin separator between segments
                    p.setPen(QPen(QColor("white"), 1))
                    p.drawLine(QPointF(x, rect.top()), QPointF(x, rect.bottom()))
                    p.setPen(Qt.PenStyle.NoPen)
                x += w
            if o.reserve > 0:
                w = rect.width() * min(o.reserve, total) / total
                brush = QBrush(QColor(RESERVE_COLOR), Qt.BrushStyle.BDiagPattern)
                p.setBrush(brush)
                p.drawRect(QRectF(rect.right() - w, rect.top(), w, rect.height()))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.setPen(QPen(QColor("#c5cbd3"), 1))
        p.drawRoundedRect(rect, 4, 4)


class VramBar(QWidget):
    """Device ``index``'s memory from the latest sample, split by the models placed on it.

    Models come from the node's footprints (:meth:`set_models`); what the sample shows used
    beyond them is "other" (the desktop, other programs, runner overhead).
    """

    def __init__(
        self, sampler: TelemetrySampler, index: int, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.sampler = sampler
        self.index = index
        self.sample: GpuSample | None = sampler.latest(index)
        self.models: tuple[ModelUse, ...] = ()
        self.reserve = 0
        self.bar = _Bar(self)
        self.legend = QLabel(self)
        self.legend.setObjectName("vramLegend")
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addWidget(self.bar)
        layout.addWidget(self.legend)
        tie(self, sampler.subscribe(self._on_samples))
        self._refresh()

    @property
    def total(self) -> int:
        return self.sample.memory_total if self.sample else 0

    @property
    def used(self) -> int:
        return self.sample.memory_used if self.sample else 0

    def segments(self) -> list[tuple[str, int, str]]:
        """``(label, bytes, colour)`` left to right: models, then other use."""
        out = [(m.label, m.bytes, PALETTE[i % len(PALETTE)]) for i, m in enumerate(self.models)]
        other = self.used - sum(m.bytes for m in self.models)
        if other > 0:
            out.append(("other", other, OTHER_COLOR))
        return out

    def set_models(self, models: list[ModelUse] | tuple[ModelUse, ...]) -> None:
        self.models = tuple(models)
        self._refresh()

    def set_reserve(self, reserve: int) -> None:
        self.reserve = max(0, int(reserve))
        self._refresh()

    def legend_text(self) -> str:
        """The legend as plain text (what the rich text shows)."""
        return self.legend.text()

    def _on_samples(self, samples: tuple[GpuSample, ...]) -> None:
        for s in samples:
            if s.index == self.index:
                self.sample = s
                self._refresh()

    def _refresh(self) -> None:
        if self.sample is None:
            self.legend.setText("waiting for the first sample…")
            self.bar.update()
            return
        parts = []
        for label, size, color in self.segments():
            parts.append(
                f'<span style="color:{color}">■</span>&nbsp;{html.escape(label)} {fmt_bytes(size)}'
            )
        free = self.sample.memory_free
        parts.append(f'<span style="color:#c5cbd3">■</span>&nbsp;free {fmt_bytes(free)}')
        if self.reserve:
            parts.append(
                f'<span style="color:{RESERVE_COLOR}">▨</span>&nbsp;reserved '
                f"{fmt_bytes(self.reserve)}"
            )
        self.legend.setText(" &nbsp; ".join(parts))
        measured = [m for m in self.models if m.measured]
        tip = [f"{fmt_bytes(self.used)} of {fmt_bytes(self.total)} used"]
        tip += [
            f"{m.label}: {fmt_bytes(m.bytes)} ({'measured' if m in measured else 'estimated'})"
            for m in self.models
        ]
        self.setToolTip("\n".join(tip))
        self.bar.update()
