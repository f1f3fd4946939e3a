"""App tests: the real window over a real node (CPU, tiny models) on a qasync loop."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from PySide6.QtCore import QEvent
from PySide6.QtWidgets import QApplication

from app.gui.session import NodeSession
from app.gui.settings import AppSettings
from app.gui.window import MainWindow
from tests.widgets.conftest import qloop, run

T = TypeVar("T")

__all__ = ["TINY_CONFIG", "Env", "pid_alive", "qloop", "run", "wait_until"]

TINY_CONFIG: list[dict[str, Any]] = [
    {
        "pipeline": "text-to-image",
        "model_id": "orchard-tiny/sdxl",
        "warm": True,
        "price_per_unit": 4768371,
    },
    {
        "pipeline": "image-to-video",
        "model_id": "orchard-tiny/svd",
        "warm": True,
        "price_per_unit": 3390842,
    },
]


async def wait_until(cond: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.02)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is as good as gone
        return f.read().split(")")[-1].split()[0] != "Z"


class Env:
    """A user's files in a temp dir: settings, data dir, aiModels.json, models dir."""

    def __init__(self, root: Path, models_dir: Path, loop: asyncio.AbstractEventLoop) -> None:
        self.root = root
        self.models_dir = models_dir
        self.loop = loop
        self.settings_path = root / "settings.ini"
        self.data_dir = root / "data"
        self.config_path = root / "aiModels.json"
        self.windows: list[MainWindow] = []

    def write_config(self, entries: list[dict[str, Any]]) -> Path:
        self.config_path.write_text(json.dumps(entries))
        return self.config_path

    def settings(self) -> AppSettings:
        return AppSettings(self.settings_path)

    async def window(self, *, telemetry_interval: float = 1.0, show: bool = True) -> MainWindow:
        """The app's start: open the session, build and show the window (in the loop, as
        ``app.gui.main.run`` does, so every Qt event is handled with the loop running)."""
        settings = self.settings()
        session = NodeSession(
            settings,
            self.data_dir,
            self.models_dir,
            self.config_path,
            telemetry_interval=telemetry_interval,
        )
        await session.open()
        window = MainWindow(session, settings, use_tray=False)
        if show:
            window.show()
        self.windows.append(window)
        return window

    async def close(self, window: MainWindow) -> None:
        """What quitting does: stop the node and everything the window started."""
        if window in self.windows:
            self.windows.remove(window)
            window.request_quit()
            await window.shutdown()
            window.deleteLater()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 180) -> T:
        """Run a test's body on the Qt-driven loop: everything Qt does happens inside it."""
        return run(self.loop, coro, timeout)


@pytest.fixture
def env(
    qapp: QApplication, qloop: asyncio.AbstractEventLoop, tmp_path: Path, tiny_models: Path
) -> Iterator[Env]:
    e = Env(tmp_path, tiny_models, qloop)
    yield e
    from app.gui.tasks import drain

    async def leftovers() -> None:
        for window in list(e.windows):
            await e.close(window)
        await drain()

    run(qloop, leftovers())
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)  # deleteLater, here
    gc.collect()
