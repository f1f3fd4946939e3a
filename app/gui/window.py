"""The main window: a sidebar of pages, a status bar, and a tray icon with the node's state."""

from __future__ import annotations

import logging
from collections.abc import Callable

from PySide6.QtCore import QSize, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMenu,
    QMessageBox,
    QStackedWidget,
    QSystemTrayIcon,
    QVBoxLayout,
    QWidget,
)

from app.gui.bridge import CoreBridge
from app.gui.downloads import Downloader
from app.gui.generation import GatewayGenerator, Generator
from app.gui.pages.base import Page
from app.gui.pages.bench import BenchPage
from app.gui.pages.generate import GeneratePage
from app.gui.pages.gpus import GpusPage
from app.gui.pages.jobs import JobsPage
from app.gui.pages.logs import LogsPage
from app.gui.pages.models import ModelsPage
from app.gui.pages.node import NodePage
from app.gui.pages.pricing import PricingPage
from app.gui.pages.setup import SetupPage
from app.gui.resources import icon_path
from app.gui.session import NodeSession
from app.gui.settings import AppSettings
from app.gui.tasks import spawn
from core import events as ev

log = logging.getLogger(__name__)

#: Page keys in sidebar order.
PAGE_KEYS = (
    "gpus",
    "models",
    "node",
    "jobs",
    "generate",
    "pricing",
    "bench",
    "setup",
    "logs",
)
STATE_COLORS = {
    "running": "#43a047",
    "starting": "#fb8c00",
    "stopping": "#fb8c00",
    "failed": "#e53935",
    "stopped": "#9e9e9e",
}

STATE_WORDS = {
    "running": "running",
    "starting": "starting…",
    "stopping": "stopping…",
    "failed": "failed to start",
    "stopped": "stopped",
}

#: What closing the window while the node runs does: keep it in the tray, quit, or nothing.
CloseChoice = str  # "tray" | "quit" | "cancel"


def status_icon(state: str) -> QIcon:
    """The app icon with a dot in the node's state colour."""
    base = QIcon(icon_path("orchard")).pixmap(64, 64)
    pix = QPixmap(base)
    p = QPainter(pix)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setPen(QColor("white"))
    p.setBrush(QColor(STATE_COLORS.get(state, "#9e9e9e")))
    p.drawEllipse(38, 38, 24, 24)
    p.end()
    return QIcon(pix)


class MainWindow(QMainWindow):
    """Composes the pages over ``session``. ``quit_requested`` asks the app to shut down
    (``await shutdown()``, then the loop ends)."""

    quit_requested = Signal()

    def __init__(
        self,
        session: NodeSession,
        settings: AppSettings,
        *,
        generator: Generator | None = None,
        downloader: Downloader | None = None,
        use_tray: bool = True,
    ) -> None:
        super().__init__()
        self.session = session
        self.settings = settings
        self.setWindowTitle("Orchard")
        self.setWindowIcon(QIcon(icon_path("orchard")))
        self.bridge = CoreBridge(session.bus, session.sampler, self)
        self.generator = generator or GatewayGenerator(
            lambda: session.node, session.data_dir / "keys" / "app-gateway.json"
        )
        self.downloader = downloader or Downloader(
            session.models_dir, session.catalogue, parent=self
        )
        self.ask_on_close: Callable[[], CloseChoice] = self._ask_on_close
        app = QApplication.instance()
        if isinstance(app, QApplication):
            app.setQuitOnLastWindowClosed(False)  # quitting goes through quit_requested
        self._quitting = False
        self._jobs_running = 0

        self.pages: dict[str, Page] = {
            "gpus": GpusPage(session, self.bridge),
            "models": ModelsPage(session, self.bridge, self.downloader),
            "node": NodePage(session, self.bridge),
            "jobs": JobsPage(session, self.bridge),
            "generate": GeneratePage(session, self.bridge, self.generator),
            "bench": BenchPage(session, self.bridge),
            "pricing": PricingPage(session, self.bridge),
            "setup": SetupPage(session),
            "logs": LogsPage(session),
        }
        self.sidebar = QListWidget()
        self.sidebar.setObjectName("sidebar")
        self.sidebar.setIconSize(QSize(20, 20))
        self.stack = QStackedWidget()
        for key in PAGE_KEYS:
            page = self.pages[key]
            item = QListWidgetItem(QIcon(icon_path(key)), page.title)
            item.setSizeHint(QSize(196, 40))
            self.sidebar.addItem(item)
            self.stack.addWidget(page)
        self.sidebar.currentRowChanged.connect(self._on_page_changed)
        brand = QLabel("Orchard")
        brand.setObjectName("brand")
        self.brand_node = QLabel("node stopped")
        self.brand_node.setObjectName("brandNode")
        side = QWidget()
        side.setFixedWidth(200)
        sl = QVBoxLayout(side)
        sl.setContentsMargins(0, 0, 0, 0)
        sl.setSpacing(0)
        sl.addWidget(brand)
        sl.addWidget(self.brand_node)
        sl.addWidget(self.sidebar, 1)
        central = QWidget()
        cl = QHBoxLayout(central)
        cl.setContentsMargins(0, 0, 0, 0)
        cl.setSpacing(0)
        cl.addWidget(side)
        cl.addWidget(self.stack, 1)
        self.setCentralWidget(central)

        self.node_status = QLabel()
        self.jobs_status = QLabel()
        self.statusBar().addWidget(self.node_status)
        self.statusBar().addPermanentWidget(self.jobs_status)

        self.tray: QSystemTrayIcon | None = None
        if use_tray and QSystemTrayIcon.isSystemTrayAvailable():
            self._make_tray()

        self.bridge.node_changed.connect(self._on_node_changed)
        self.bridge.job_event.connect(self._on_job_event)
        self._show_node_state(session.state, "")
        self.resize(1280, 800)
        geometry = settings.geometry
        if geometry is not None:
            self.restoreGeometry(geometry)
        self.sidebar.setCurrentRow(min(max(settings.page, 0), len(PAGE_KEYS) - 1))
        self.pages_loaded()

    # ----------------------------------------------------------------- pages
    def pages_loaded(self) -> None:
        jobs = self.pages["jobs"]
        assert isinstance(jobs, JobsPage)
        jobs.load_history()

    def show_page(self, key: str) -> None:
        self.sidebar.setCurrentRow(PAGE_KEYS.index(key))

    def _on_page_changed(self, row: int) -> None:
        self.stack.setCurrentIndex(row)
        self.settings.page = row

    # ----------------------------------------------------------------- status
    def _on_node_changed(self, event: ev.NodeChanged) -> None:
        self._show_node_state(event.state, event.detail)
        if event.state == "failed" and self.tray is not None:
            self.tray.showMessage("Orchard", f"The node could not start: {event.detail}")

    def _show_node_state(self, state: str, detail: str) -> None:
        text = {
            "running": f"Node running on {detail or self.session.url()}",
            "starting": "Node starting…",
            "stopping": "Node stopping…",
            "failed": "Node failed to start: see the Node page",
            "stopped": "Node stopped",
        }.get(state, state)
        self.node_status.setText(text)
        self.brand_node.setText(f"● Node {STATE_WORDS.get(state, state)}")
        self.brand_node.setStyleSheet(f"color: {STATE_COLORS.get(state, '#9e9e9e')};")
        if self.tray is not None:
            self.tray.setIcon(status_icon(state))
            self.tray.setToolTip(f"Orchard — {text}")
            self._tray_start.setEnabled(state in ("stopped", "failed"))
            self._tray_stop.setEnabled(state == "running")

    def _on_job_event(self, event: object) -> None:
        if isinstance(event, ev.JobStarted):
            self._jobs_running += 1
        elif isinstance(event, ev.JobFinished | ev.JobFailed):
            self._jobs_running = max(0, self._jobs_running - 1)
        self.jobs_status.setText(
            f"{self._jobs_running} job{'s' if self._jobs_running != 1 else ''} running"
            if self._jobs_running
            else ""
        )

    def notify(self, message: str) -> None:
        """A non-modal notice (unexpected errors): the status bar, and the tray if any."""
        self.statusBar().showMessage(message, 15000)
        if self.tray is not None and not self.isVisible():
            self.tray.showMessage("Orchard", message, QSystemTrayIcon.MessageIcon.Warning)

    # ----------------------------------------------------------------- tray
    def _make_tray(self) -> None:
        tray = QSystemTrayIcon(status_icon("stopped"), self)
        menu = QMenu(self)
        show = QAction("Show Orchard", menu)
        show.triggered.connect(self._on_tray_show)
        self._tray_start = QAction("Start node", menu)
        self._tray_start.triggered.connect(
            lambda: spawn(self.session.start_node(), "start the node")
        )
        self._tray_stop = QAction("Stop node", menu)
        self._tray_stop.triggered.connect(lambda: spawn(self.session.stop_node(), "stop the node"))
        quit_action = QAction("Quit Orchard", menu)
        quit_action.triggered.connect(self.request_quit)
        for action in (show, self._tray_start, self._tray_stop):
            menu.addAction(action)
        menu.addSeparator()
        menu.addAction(quit_action)
        tray.setContextMenu(menu)
        tray.activated.connect(self._on_tray_activated)
        tray.show()
        self.tray = tray

    def _on_tray_show(self) -> None:
        self.showNormal()
        self.raise_()
        self.activateWindow()

    def _on_tray_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:
            self._on_tray_show()

    # ----------------------------------------------------------------- closing
    def request_quit(self) -> None:
        self._quitting = True
        self.close()

    def _ask_on_close(self) -> CloseChoice:
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle("Orchard")
        if self.tray is not None:
            box.setText("The node is running. Keep it running in the tray?")
            box.setInformativeText(
                "Gateways can keep sending it jobs while the window is closed. Quit stops "
                "the node and its runners."
            )
            keep = box.addButton("Keep running in tray", QMessageBox.ButtonRole.AcceptRole)
        else:
            box.setText("The node is running. Stop it and quit?")
            keep = None
        quit_button = box.addButton("Stop node and quit", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        clicked = box.clickedButton()
        if keep is not None and clicked is keep:
            return "tray"
        if clicked is quit_button:
            return "quit"
        return "cancel"

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self._quitting and self.session.state in ("running", "starting"):
            choice = self.ask_on_close()
            if choice == "cancel":
                event.ignore()
                return
            if choice == "tray" and self.tray is not None:
                event.ignore()
                self.hide()
                self.tray.showMessage("Orchard", "The node keeps running here.")
                return
        self.settings.geometry = self.saveGeometry()
        event.accept()
        self._quitting = True
        # with the window as context: no call if it is deleted before the timer fires
        QTimer.singleShot(0, self, self.quit_requested.emit)

    async def shutdown(self) -> None:
        """Stop everything this window started; the caller then ends the event loop."""
        self.settings.geometry = self.saveGeometry()
        self.settings.sync()
        logs = self.pages["logs"]
        assert isinstance(logs, LogsPage)
        logs.shutdown()
        bench = self.pages["bench"]
        assert isinstance(bench, BenchPage)
        await bench.shutdown()
        self.bridge.close()
        await self.generator.aclose()
        await self.downloader.close()
        await self.session.close()
        if self.tray is not None:
            self.tray.hide()


def apply_style(app: QApplication) -> None:
    """The stylesheet from resources/style.qss (the app works without it)."""
    from app.gui.resources import STYLE

    app.setStyle("Fusion")  # the same look on every platform, under the stylesheet
    try:
        app.setStyleSheet(STYLE.read_text(encoding="utf-8"))
    except OSError as exc:
        log.warning("no stylesheet: %s", exc)
