"""A painted on/off switch: a checkable button that looks like a phone's switch."""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPaintEvent
from PySide6.QtWidgets import QAbstractButton, QSizePolicy, QWidget

ON_COLOR = QColor("#2e7d32")
OFF_COLOR = QColor("#9aa1ab")
DISABLED_COLOR = QColor("#d3d6db")
DISABLED_ON_COLOR = QColor("#a5c8a7")


class ToggleSwitch(QAbstractButton):
    """Checkable; ``toggled(bool)`` as any button. The text is drawn to the right."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setCheckable(True)
        self.setText(text)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:
        fm = self.fontMetrics()
        text_w = fm.horizontalAdvance(self.text()) + 10 if self.text() else 0
        return QSize(40 + text_w, max(22, fm.height() + 6))

    def paintEvent(self, _event: QPaintEvent) -> None:
        with QPainter(self) as p:
            self._paint(p)

    def _paint(self, p: QPainter) -> None:
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        h = 20.0
        y = (self.height() - h) / 2
        track = QRectF(1, y, 38, h)
        if not self.isEnabled():
            color = DISABLED_ON_COLOR if self.isChecked() else DISABLED_COLOR
        else:
            color = ON_COLOR if self.isChecked() else OFF_COLOR
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(color)
        p.drawRoundedRect(track, h / 2, h / 2)
        knob_x = track.right() - h + 2 if self.isChecked() else track.left() + 2
        p.setBrush(QColor("white"))
        p.drawEllipse(QRectF(knob_x, y + 2, h - 4, h - 4))
        if self.text():
            p.setPen(self.palette().windowText().color())
            text_rect = self.rect().adjusted(48, 0, 0, 0)
            p.drawText(text_rect, int(Qt.AlignmentFlag.AlignVCenter), self.text())
