"""What every page shares: a title, a subtitle, and a scroll-free content area."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget


class Page(QWidget):
    title = ""
    subtitle = ""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("page")
        self.heading = QLabel(self.title)
        self.heading.setObjectName("pageTitle")
        self.sub = QLabel(self.subtitle)
        self.sub.setObjectName("pageSubtitle")
        self.sub.setWordWrap(True)
        self.body = QVBoxLayout(self)
        self.body.setContentsMargins(22, 18, 22, 18)
        self.body.setSpacing(10)
        self.body.addWidget(self.heading)
        self.body.addWidget(self.sub)

    def banner(self, text: str = "") -> QLabel:
        label = QLabel(text)
        label.setObjectName("banner")
        label.setWordWrap(True)
        label.setVisible(bool(text))
        return label
