"""Is this machine ready? The doctor's checks (``core.doctor.Check``) as a table."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor, QResizeEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.doctor import Check, Status

EMPTY_TEXT = "Run the checks to see whether this machine is ready"
COLUMNS = ("Check", "Status", "Found", "What to do")
#: Past this the table scrolls (the runtime section stays in view under it).
MAX_TABLE_HEIGHT = 420
STATUS_COLORS = {
    Status.PASS: "#43a047",
    Status.WARN: "#fb8c00",
    Status.FAIL: "#e53935",
}
STATUS_TEXT = {Status.PASS: "✔ pass", Status.WARN: "▲ warn", Status.FAIL: "✖ fail"}


class DoctorView(QWidget):
    """A table of checks from :meth:`set_checks`; ``run_requested`` when "Run checks" is
    pressed (the page runs them and calls :meth:`set_running` then :meth:`set_checks`)."""

    run_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.checks: list[Check] = []
        title = QLabel("Is this machine ready?")
        title.setObjectName("sectionTitle")
        self.summary = QLabel("")
        self.summary.setObjectName("muted")
        self.run_button = QPushButton("Run checks")
        self.run_button.clicked.connect(self.run_requested.emit)
        head = QHBoxLayout()
        head.addWidget(title)
        head.addWidget(self.summary, 1)
        head.addWidget(self.run_button)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setWordWrap(True)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.empty = QLabel(EMPTY_TEXT)
        self.empty.setObjectName("muted")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(head)
        layout.addWidget(self.empty)
        layout.addWidget(self.table)
        self._show_empty(True)

    def _show_empty(self, empty: bool) -> None:
        self.empty.setVisible(empty)
        self.table.setVisible(not empty)

    def set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.run_button.setText("Checking…" if running else "Run checks")
        if running:
            self.summary.setText("checking…")

    def set_checks(self, checks: Sequence[Check]) -> None:
        self.checks = list(checks)
        self.set_running(False)
        self.table.setRowCount(len(self.checks))
        for row, check in enumerate(self.checks):
            status = Status(check.status)
            cells = (check.name, STATUS_TEXT[status], check.detail, check.action or "—")
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                if col == 1:
                    item.setForeground(QBrush(QColor(STATUS_COLORS[status])))
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                self.table.setItem(row, col, item)
        self._fit()
        self._show_empty(not self.checks)
        counts = {s: sum(1 for c in self.checks if c.status == s) for s in Status}
        self.summary.setText(
            f"{counts[Status.PASS]} passed, {counts[Status.WARN]} warnings, "
            f"{counts[Status.FAIL]} failed"
            if self.checks
            else ""
        )

    def _fit(self) -> None:
        """Rows as tall as their wrapped text, the table as tall as its rows (no blank)."""
        self.table.resizeRowsToContents()
        rows = sum(self.table.rowHeight(r) for r in range(self.table.rowCount()))
        frame = 2 * self.table.frameWidth()
        height = self.table.horizontalHeader().sizeHint().height() + rows + frame
        self.table.setFixedHeight(min(height, MAX_TABLE_HEIGHT))

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if self.checks:
            self._fit()

    # for tests and the page
    def row_texts(self, row: int) -> tuple[str, ...]:
        items = [self.table.item(row, c) for c in range(len(COLUMNS))]
        return tuple(i.text() if i is not None else "" for i in items)

    def status_color(self, row: int) -> str:
        item = self.table.item(row, 1)
        return item.foreground().color().name() if item is not None else ""
