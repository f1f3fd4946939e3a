"""Blocking work (decoding files, reading a video) off the Qt thread, answered on it.

``run_in_thread(owner, fn, on_done)`` runs ``fn()`` on a small worker pool and calls
``on_done(result_or_exception)`` on the Qt thread, unless ``owner`` was destroyed meanwhile.
The relay object lives as long as the application, so a worker never emits on a deleted one.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

import shiboken6
from PySide6.QtCore import QCoreApplication, QObject, Signal

_POOL = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="orchard-gui-io")


class _Relay(QObject):
    done = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.done.connect(self._on_done)

    def _on_done(self, item: tuple[QObject, Callable[[Any], None], Any]) -> None:
        owner, callback, result = item
        if shiboken6.isValid(owner):
            callback(result)


_relay: _Relay | None = None


def _get_relay() -> _Relay:
    global _relay
    if _relay is None or not shiboken6.isValid(_relay):
        _relay = _Relay()
        app = QCoreApplication.instance()
        if app is not None:
            _relay.moveToThread(app.thread())
    return _relay


def run_in_thread(
    owner: QObject, fn: Callable[[], Any], on_done: Callable[[Any], None]
) -> concurrent.futures.Future[Any]:
    """Run ``fn`` off the Qt thread; ``on_done`` gets its result, or the exception it raised."""
    relay = _get_relay()

    def work() -> None:
        try:
            result: Any = fn()
        except Exception as exc:  # handed to on_done, which shows it
            result = exc
        relay.done.emit((owner, on_done, result))

    return _POOL.submit(work)
