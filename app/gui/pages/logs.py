"""Logs: the app's and the node's logging records, and each runner's output."""

from __future__ import annotations

import logging

from PySide6.QtCore import QTimer

from app.gui.pages.base import Page
from app.gui.session import NodeSession
from widgets.log_view import LogView


def new_lines(previous: list[str], current: list[str]) -> list[str]:
    """The lines of ``current`` (a log's tail now) that follow ``previous`` (its tail
    before); all of ``current`` when the two do not overlap."""
    if not previous:
        return current
    if len(current) > len(previous) and current[: len(previous)] == previous:
        return current[len(previous) :]  # the tail grew (it holds fewer lines than its cap)
    last = previous[-1]
    for i in range(len(current) - 1, -1, -1):
        if current[i] == last:
            n = min(i + 1, len(previous))
            if current[i + 1 - n : i + 1] == previous[len(previous) - n :]:
                return current[i + 1 :]
    return current


class LogsPage(Page):
    title = "Logs"
    subtitle = "The node's messages and each runner's output (the newest 5,000 lines)."

    def __init__(self, session: NodeSession, logger: logging.Logger | None = None) -> None:
        super().__init__()
        self.session = session
        self.view = LogView(logger or logging.getLogger())
        self.body.addWidget(self.view, 1)
        self._tails: dict[str, list[str]] = {}
        self._poll = QTimer(self)
        self._poll.setInterval(1000)
        self._poll.timeout.connect(self.poll_runners)
        self._poll.start()

    def poll_runners(self) -> None:
        for runner_id, tail in self.session.runner_logs().items():
            fresh = new_lines(self._tails.get(runner_id, []), tail)
            self._tails[runner_id] = tail
            if fresh:
                self.view.add_lines(runner_id, fresh)

    def shutdown(self) -> None:
        """Stop polling and detach the logging handler (the window is going)."""
        self._poll.stop()
        self.view.close_handler()
