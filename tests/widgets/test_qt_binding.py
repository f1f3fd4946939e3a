"""The Qt binding itself: PySide6-Essentials 6.12.0 drops a reference to None on every
call of a method that returns nothing (QPainter.drawPath, QLabel.setText, ...). On Python
3.11, where None is not immortal, the interpreter aborts ("none_dealloc") after a few
thousand such calls, i.e. within minutes of live charts. 6.11.3 is pinned for that reason."""

from __future__ import annotations

import sys

from PySide6.QtCore import QPointF, QRectF
from PySide6.QtGui import QColor, QImage, QPainter, QPainterPath
from PySide6.QtWidgets import QApplication, QLabel


def test_void_calls_keep_none_alive(qapp: QApplication) -> None:
    path = QPainterPath()
    image = QImage(32, 32, QImage.Format.Format_ARGB32)
    label = QLabel()
    before = sys.getrefcount(None)
    with QPainter(image) as p:
        for _ in range(200):
            path.lineTo(QPointF(1.0, 2.0))
            p.setPen(QColor("red"))
            p.drawRect(QRectF(0, 0, 4, 4))
            label.setText("x")
    assert abs(sys.getrefcount(None) - before) < 50
