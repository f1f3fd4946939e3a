"""Subscriptions to core objects that end with the widget.

The core calls subscribers synchronously on the asyncio loop thread, which in the app is the
Qt thread (qasync), so a widget may update itself in the callback. The subscription is
dropped when the Qt object is destroyed, so a closed widget is never called again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject

from core.events import EventBus


def tie(owner: QObject, unsubscribe: Callable[[], Any]) -> Callable[[], Any]:
    """Call ``unsubscribe`` when ``owner`` is destroyed; returns it for an earlier call."""
    owner.destroyed.connect(lambda *_: unsubscribe())
    return unsubscribe


def subscribe(
    owner: QObject, bus: EventBus, callback: Callable[[Any], object], *types: type
) -> Callable[[], Any]:
    """``bus.subscribe(callback, *types)`` for the lifetime of ``owner``."""
    return tie(owner, bus.subscribe(callback, *types))
