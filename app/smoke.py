"""A smoke test of the desktop app that a frozen build can run on itself: open the main window
through the app's own entry point, let it paint, save a screenshot if asked, then quit the way
the window's Quit does. Exit status 0 when the window opened and closed cleanly.

    ORCHARD_SMOKE=window orchard [--data-dir D --settings S.ini --config aiModels.json]

(the PyInstaller entry script, packaging/orchard_main.py, dispatches here on ORCHARD_SMOKE;
from source: ``python -m app.smoke ...``). ``ORCHARD_SMOKE_SHOT=path.png`` saves the window.
Exit status 3 when this build has no GUI, 4 when the window never appeared.
"""

from __future__ import annotations

import os
import sys
import time

NO_GUI = 3
NO_WINDOW = 4


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        from app.gui import main as gui_main
    except ImportError as exc:
        print(f"orchard smoke: this build has no GUI ({exc})", file=sys.stderr)
        return NO_GUI
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.gui.window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    delay_ms = int(float(os.environ.get("ORCHARD_SMOKE_DELAY_S", "1.5")) * 1000)
    deadline = time.monotonic() + float(os.environ.get("ORCHARD_SMOKE_TIMEOUT_S", "60"))
    seen: list[MainWindow] = []

    def poll() -> None:
        windows = [w for w in app.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        if windows:
            seen.append(windows[0])
            QTimer.singleShot(delay_ms, close)
        elif time.monotonic() > deadline:
            print("orchard smoke: the main window did not appear", file=sys.stderr)
            os._exit(NO_WINDOW)
        else:
            QTimer.singleShot(100, poll)

    def close() -> None:
        window = seen[0]
        shot = os.environ.get("ORCHARD_SMOKE_SHOT")
        if shot:
            window.grab().save(shot)
        print(f"orchard smoke: window '{window.windowTitle()}' opened; closing", flush=True)
        window.request_quit()

    QTimer.singleShot(0, poll)
    code = gui_main.main(argv)
    if not seen:
        return NO_WINDOW
    print(f"orchard smoke: closed, exit status {code}", flush=True)
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
