"""GPUs: one card per device with live telemetry, the node's models on it, and choices."""

from __future__ import annotations

from app.gui.bridge import CoreBridge
from app.gui.pages.base import Page
from app.gui.session import NodeSession
from core import events as ev
from widgets.gpu_panel import GpuPanel


class GpusPage(Page):
    title = "GPUs"
    subtitle = (
        "Memory, utilisation, temperature and power over the last five minutes. Choose the "
        "devices the node uses and how much memory to keep free on each."
    )

    def __init__(self, session: NodeSession, bridge: CoreBridge) -> None:
        super().__init__()
        self.session = session
        self.hint = self.banner()
        self.panel = GpuPanel(session.inventory, session.cpu, session.sampler)
        self.panel.set_choices(session.use_gpus, session.reserve)
        self.panel.use_toggled.connect(self._on_use_toggled)
        self.panel.reserve_changed.connect(self._on_reserve_changed)
        self.body.addWidget(self.hint)
        self.body.addWidget(self.panel, 1)
        bridge.model_changed.connect(self._on_model_changed)
        bridge.node_changed.connect(self._on_node_changed)

    def _on_use_toggled(self, index: int, on: bool) -> None:
        self.session.set_use(index, on)
        self._hint()

    def _on_reserve_changed(self, index: int, reserve: int) -> None:
        self.session.set_reserve(index, reserve)
        self._hint()

    def _hint(self) -> None:
        if self.session.running:
            self.hint.setText("The node uses these choices from its next start.")
            self.hint.show()

    def _on_model_changed(self, _event: ev.ModelChanged) -> None:
        self.refresh_models()

    def _on_node_changed(self, event: ev.NodeChanged) -> None:
        if event.state in ("running", "stopped", "failed"):
            self.hint.hide()
            self.refresh_models()

    def refresh_models(self) -> None:
        for index in self.panel.cards:
            self.panel.set_models(index, self.session.models_on(index))
