"""Jobs and fees per day, drawn with QPainter from ``JobStore.stats()``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from widgets._format import fmt_wei, to_decimal

BAR_COLOR = QColor("#90caf9")
FEE_COLOR = QColor("#2e7d32")


class EarningsChart(QWidget):
    """Bars: jobs per day; line: fees per day (their own scale, on the right)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.days: list[str] = []
        self.jobs: list[int] = []
        self.fees: list[Decimal] = []
        self.setMinimumHeight(180)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def sizeHint(self) -> QSize:
        return QSize(520, 220)

    def set_stats(self, stats: dict[str, Any]) -> None:
        per_day: dict[str, int] = stats.get("jobs_per_day", {})
        fees: dict[str, str] = stats.get("fees_per_day", {})
        self.days = list(per_day)
        self.jobs = [int(per_day[d]) for d in self.days]
        self.fees = [to_decimal(fees.get(d, "0")) for d in self.days]
        self.update()

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
        th = fm.height()
        p.setPen(QColor("#5f6b7a"))
        legend = f"■ jobs per day   — fees per day (last {len(self.days)} days)"
        p.drawText(QRectF(10, 4, rect.width() - 20, th), int(Qt.AlignmentFlag.AlignLeft), legend)
        plot = QRectF(40, 10 + th, rect.width() - 50 - 70, rect.height() - 2 * th - 22)
        if not self.days or not any(self.jobs):
            p.drawText(
                plot,
                int(Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap),
                "No jobs yet. Jobs the node runs are counted here per day.",
            )
            return
        top_jobs = max(self.jobs) or 1
        top_fees = max(self.fees) or Decimal(1)
        n = len(self.days)
        slot = plot.width() / n
        p.setPen(QPen(QColor("#eceff3"), 1))
        for i in range(5):
            y = plot.bottom() - plot.height() * i / 4
            p.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(BAR_COLOR)
        for i, count in enumerate(self.jobs):
            h = plot.height() * count / top_jobs
            p.drawRect(
                QRectF(plot.left() + i * slot + slot * 0.15, plot.bottom() - h, slot * 0.7, h)
            )
        if any(self.fees):
            path = QPainterPath()
            for i, fee in enumerate(self.fees):
                x = plot.left() + (i + 0.5) * slot
                y = plot.bottom() - plot.height() * float(fee / top_fees)
                if i == 0:
                    path.moveTo(x, y)
                else:
                    path.lineTo(x, y)
            p.setPen(QPen(FEE_COLOR, 2))
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawPath(path)
        p.setPen(QColor("#5f6b7a"))
        left = QRectF(0, plot.top() - th / 2, 36, th)
        p.drawText(left, int(Qt.AlignmentFlag.AlignRight), str(top_jobs))
        p.drawText(QRectF(0, plot.bottom() - th / 2, 36, th), int(Qt.AlignmentFlag.AlignRight), "0")
        if any(self.fees):
            right = QRectF(plot.right() + 4, plot.top() - th / 2, 70, th)
            p.setPen(FEE_COLOR)
            p.drawText(right, int(Qt.AlignmentFlag.AlignLeft), fmt_wei(top_fees))
        p.setPen(QColor("#5f6b7a"))
        step = max(1, n // 6)
        for i in range(0, n, step):
            x = plot.left() + (i + 0.5) * slot
            p.drawText(
                QRectF(x - 30, plot.bottom() + 4, 60, th),
                int(Qt.AlignmentFlag.AlignHCenter),
                self.days[i][5:],
            )
