"""Node: start and stop it, where it listens, its state, and what it advertises."""

from __future__ import annotations

from PySide6.QtCore import QTimer

from app.gui.bridge import CoreBridge
from app.gui.demo import DEMO_NOTE
from app.gui.pages.base import Page
from app.gui.session import NodeSession
from app.gui.tasks import spawn
from core import events as ev
from widgets.node_panel import NodePanel


class NodePage(Page):
    title = "Node"
    subtitle = (
        "The orchestrator runs inside this app, with one runner process per device. "
        "Gateways find it at the address below."
    )

    def __init__(self, session: NodeSession, bridge: CoreBridge) -> None:
        super().__init__()
        self.session = session
        self.demo_banner = self.banner()
        self.panel = NodePanel(session.bus, session.host, session.port)
        self.body.addWidget(self.demo_banner)
        self.body.addWidget(self.panel, 1)
        self.panel.start_requested.connect(self._on_start_requested)
        self.panel.stop_requested.connect(self._on_stop_requested)
        self.panel.set_free(session.free)
        self.panel.free_toggled.connect(session.set_free)
        self._info = QTimer(self)
        self._info.setSingleShot(True)
        self._info.setInterval(250)
        self._info.timeout.connect(self._on_info_due)
        bridge.node_changed.connect(self._on_node_changed)
        bridge.model_changed.connect(self._on_anything)
        bridge.job_queued.connect(self._on_anything)
        bridge.job_finished.connect(self._on_anything)
        bridge.job_failed.connect(self._on_anything)
        session.config_changed.connect(self._on_config_changed)
        self._on_config_changed()

    def _on_config_changed(self, *_args: object) -> None:
        self.panel.set_free(self.session.free)
        self.demo_banner.setText(f"{DEMO_NOTE} Add real models on the Models page.")
        self.demo_banner.setVisible(self.session.is_demo)

    def _on_start_requested(self, host: str, port: int) -> None:
        spawn(self.session.start_node(host, port), "start the node")

    def _on_stop_requested(self) -> None:
        spawn(self.session.stop_node(), "stop the node")

    def _on_node_changed(self, event: ev.NodeChanged) -> None:
        if event.state == "running":
            self.panel.set_address(self.session.host, self.session.port)
        self._info.start()

    def _on_anything(self, _event: object) -> None:
        self._info.start()

    def _on_info_due(self) -> None:
        self.panel.set_info(self.session.info())
