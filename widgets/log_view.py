"""The node's and the runners' logs: Python logging records and runner output lines.

Records reach a logging handler from any thread; they are queued and drawn in batches by a
timer on the Qt thread. At most ``max_entries`` are kept, the oldest dropped first.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from dataclasses import dataclass

from PySide6.QtCore import QTimer
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from widgets._subscriptions import tie

LEVELS = {
    "Debug": logging.DEBUG,
    "Info": logging.INFO,
    "Warning": logging.WARNING,
    "Error": logging.ERROR,
}
ALL_SOURCES = "All sources"
_RUNNER_LEVEL = re.compile(r"\b(CRITICAL|ERROR|WARNING|INFO|DEBUG)\b")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def clean_line(line: str) -> str:
    """What a terminal would show of an output line: the last carriage-return segment
    (progress bars redraw with ``\\r``), without ANSI escape codes."""
    parts = [p for p in _ANSI.sub("", line).split("\r") if p.strip()]
    return parts[-1].rstrip() if parts else ""


@dataclass(frozen=True)
class LogEntry:
    at: float
    level: int
    source: str
    text: str

    def line(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.at))
        return f"{stamp} {logging.getLevelName(self.level):<7} {self.source}: {self.text}"


def source_of(logger_name: str) -> str:
    """``core.orchestrator.node`` -> ``node``; ``app.gui.session`` -> ``app``."""
    parts = logger_name.split(".")
    if parts[0] == "core":
        return "node" if len(parts) < 2 or parts[1] != "runners" else "runners"
    if parts[0] in ("app", "widgets"):
        return "app"
    return parts[0] or "root"


def level_of_line(line: str) -> int:
    """A runner output line's level, read from the line (INFO when it names none)."""
    if line.startswith("Traceback") or line.startswith("  File "):
        return logging.ERROR
    m = _RUNNER_LEVEL.search(line[:80])
    return int(logging.getLevelName(m.group(1))) if m else logging.INFO


class _Handler(logging.Handler):
    def __init__(self, sink: deque[LogEntry]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self.sink.append(LogEntry(record.created, record.levelno, source_of(record.name), text))
        except Exception:  # a logging handler must never raise
            self.handleError(record)


class LogView(QWidget):
    """Listens to ``logger`` (and its children) and shows runner lines given with
    :meth:`add_lines`; filter by level, source and text."""

    def __init__(
        self,
        logger: logging.Logger,
        max_entries: int = 5000,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.logger = logger
        self.entries: deque[LogEntry] = deque(maxlen=max_entries)
        self._incoming: deque[LogEntry] = deque(maxlen=max_entries)
        self.sources: set[str] = set()
        self.level = QComboBox()
        self.level.addItems(list(LEVELS))
        self.level.setCurrentText("Info")
        self.source = QComboBox()
        self.source.addItem(ALL_SOURCES)
        self.source.setMinimumContentsLength(14)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter text")
        self.clear_button = QPushButton("Clear")
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(max_entries)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        mono = QFont("DejaVu Sans Mono")
        mono.setStyleHint(QFont.StyleHint.Monospace)
        mono.setPointSizeF(max(self.font().pointSizeF() - 1, 8))
        self.text.setFont(mono)
        self.text.setPlaceholderText(
            "Nothing logged yet. Start the node: its messages and each runner's output appear here."
        )
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Level"))
        bar.addWidget(self.level)
        bar.addWidget(QLabel("Source"))
        bar.addWidget(self.source)
        bar.addWidget(self.search, 1)
        bar.addWidget(self.clear_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.text, 1)
        self.level.currentTextChanged.connect(self._on_filter_changed)
        self.source.currentTextChanged.connect(self._on_filter_changed)
        self.search.textChanged.connect(self._on_filter_changed)
        self.clear_button.clicked.connect(self._on_clear_clicked)

        self.handler = _Handler(self._incoming)
        logger.addHandler(self.handler)
        tie(self, lambda: logger.removeHandler(self.handler))
        self._timer = QTimer(self)
        self._timer.setInterval(200)
        self._timer.timeout.connect(self._on_timer)
        self._timer.start()

    # ----------------------------------------------------------------- state in
    def add_lines(self, source: str, lines: list[str]) -> None:
        """Output lines of ``source`` (a runner), newest last."""
        now = time.time()
        for raw in lines:
            line = clean_line(raw)
            if line:
                self._incoming.append(LogEntry(now, level_of_line(line), source, line))

    def flush(self) -> None:
        """Draw what arrived (the timer does this five times a second)."""
        self._on_timer()

    def close_handler(self) -> None:
        self.logger.removeHandler(self.handler)

    # ----------------------------------------------------------------- queries
    def visible_lines(self) -> list[str]:
        return self.text.toPlainText().splitlines()

    # ----------------------------------------------------------------- slots
    def _on_timer(self) -> None:
        if not self._incoming:
            return
        batch = []
        while self._incoming:
            batch.append(self._incoming.popleft())
        self.entries.extend(batch)
        for e in batch:
            if e.source not in self.sources:
                self.sources.add(e.source)
                self.source.addItem(e.source)
        shown = [e.line() for e in batch if self._matches(e)]
        if shown:
            bar = self.text.verticalScrollBar()
            at_end = bar.value() >= bar.maximum() - 4
            self.text.appendPlainText("\n".join(shown))
            if at_end:
                bar.setValue(bar.maximum())

    def _on_filter_changed(self, *_args: object) -> None:
        self.text.setPlainText("\n".join(e.line() for e in self.entries if self._matches(e)))
        bar = self.text.verticalScrollBar()
        bar.setValue(bar.maximum())

    def _on_clear_clicked(self) -> None:
        self.entries.clear()
        self.text.clear()

    def _matches(self, e: LogEntry) -> bool:
        if e.level < LEVELS[self.level.currentText()]:
            return False
        src = self.source.currentText()
        if src != ALL_SOURCES and e.source != src:
            return False
        needle = self.search.text().strip().lower()
        return not needle or needle in e.text.lower()
