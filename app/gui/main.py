"""``orchard`` with no command: the desktop app.

The Qt thread runs the asyncio loop (qasync); the node, its HTTP server, telemetry and the
job store all live on it, and nothing blocking runs there. Without a display it says how to
run headless and returns 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

HEADLESS_HELP = """\
orchard: no display to open the window on (neither DISPLAY nor WAYLAND_DISPLAY is set).
To run the node without a window:

    orchard node --models aiModels.json

(see `orchard node --help`), or set QT_QPA_PLATFORM=offscreen to start the app unseen."""


def display_available(env: Mapping[str, str] | None = None, platform: str | None = None) -> bool:
    """Whether Qt can open a window: on Linux and the BSDs that needs X11 or Wayland, unless
    QT_QPA_PLATFORM names a platform (offscreen, vnc, ...)."""
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    if env.get("QT_QPA_PLATFORM"):
        return True
    if platform.startswith("linux") or "bsd" in platform:
        return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))
    return True


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="orchard", description="Orchard's desktop app.")
    p.add_argument("--data-dir", type=Path, default=None, help="history, outputs and logs")
    p.add_argument("--models-dir", type=Path, default=None, help="model weights")
    p.add_argument("--config", type=Path, default=None, metavar="aiModels.json")
    p.add_argument("--settings", type=Path, default=None, help="an INI file for the settings")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def setup_logging(verbose: bool = False) -> None:
    """INFO to stderr (and to the Logs page, which listens to the root logger); httpx's line
    per request (the node polls its runners each second) only when verbose."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not display_available():
        print(HEADLESS_HELP, file=sys.stderr)
        return 2
    setup_logging(args.verbose)
    import qasync
    from PySide6.QtWidgets import QApplication

    from app.cli import default_models_dir, user_data_dir
    from app.gui.session import NodeSession
    from app.gui.settings import AppSettings
    from app.gui.window import apply_style

    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setApplicationName("Orchard")
    app.setOrganizationName("Orchard")
    app.setQuitOnLastWindowClosed(False)
    apply_style(app)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    settings = AppSettings(args.settings)
    data_dir = args.data_dir or user_data_dir()
    from core.runtime import NoRuntime, runner_python

    try:
        python = runner_python(data_dir)  # the GPU runtime's Python (or this one, from source)
    except NoRuntime as exc:
        # a frozen app without its runtime: the window opens, the node cannot start until
        # `orchard runtime setup` (or `orchard runtime use PYTHON`) has run
        logging.getLogger(__name__).warning("%s", exc.msg)
        print(f"orchard: {exc.msg}", file=sys.stderr)
        python = sys.executable
    session = NodeSession(
        settings,
        data_dir,
        args.models_dir or default_models_dir(),
        args.config,
        runner_python=python,
    )
    try:
        return loop.run_until_complete(run(session, settings))
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
        asyncio.set_event_loop(None)


async def run(session: object, settings: object) -> int:
    """Open the session, show the window, and wait until it asks to quit."""
    from PySide6.QtCore import QTimer

    from app.gui.session import NodeSession
    from app.gui.settings import AppSettings
    from app.gui.tasks import drain
    from app.gui.window import MainWindow

    assert isinstance(session, NodeSession) and isinstance(settings, AppSettings)
    await session.open()
    window = MainWindow(session, settings)
    done = asyncio.Event()
    window.quit_requested.connect(done.set)
    loop = asyncio.get_running_loop()

    def on_signal(_sig: int, _frame: object) -> None:
        loop.call_soon_threadsafe(window.request_quit)

    previous = signal.signal(signal.SIGINT, on_signal)
    wake = QTimer()  # lets Python run its signal handlers while Qt waits
    wake.start(250)
    wake.timeout.connect(lambda: None)
    install_excepthook(window)
    window.show()
    if session.first_start:
        window.show_page("node")
    try:
        await done.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
        wake.stop()
        await window.shutdown()
        await drain()
    return 0


def install_excepthook(window: object) -> None:
    """Unexpected exceptions are logged with their traceback and shown as a notice."""
    from app.gui.window import MainWindow

    assert isinstance(window, MainWindow)
    default = sys.excepthook

    def hook(kind: type[BaseException], exc: BaseException, tb: object) -> None:
        if issubclass(kind, KeyboardInterrupt):
            default(kind, exc, tb)  # type: ignore[arg-type]
            return
        log.error("unexpected error", exc_info=(kind, exc, tb))  # type: ignore[arg-type]
        with contextlib.suppress(RuntimeError):  # the window is gone
            window.notify(f"Unexpected error: {kind.__name__}: {exc} (details on the Logs page)")

    sys.excepthook = hook


if __name__ == "__main__":
    sys.exit(main())
