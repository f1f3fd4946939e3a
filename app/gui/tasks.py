"""Fire-and-forget coroutines on the Qt thread's loop, kept referenced and logged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)

_TASKS: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, Any], what: str = "") -> asyncio.Task[Any]:
    """Run ``coro`` as a task; an exception it raises is logged with its traceback."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # built before the loop runs (tests, start-up): the loop Qt runs
        loop = asyncio.get_event_loop_policy().get_event_loop()
    task = loop.create_task(coro, name=what or None)
    _TASKS.add(task)
    task.add_done_callback(_done)
    return task


def _done(task: asyncio.Task[Any]) -> None:
    _TASKS.discard(task)
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("%s failed", task.get_name(), exc_info=exc)


async def drain(timeout: float = 10.0) -> None:
    """Wait for the spawned tasks (at shutdown), cancelling what is left after ``timeout``."""
    pending = [t for t in _TASKS if not t.done()]
    if not pending:
        return
    _, still = await asyncio.wait(pending, timeout=timeout)
    for task in still:
        task.cancel()
    if still:
        await asyncio.wait(still, timeout=2.0)
