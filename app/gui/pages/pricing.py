"""Pricing & earnings: prices per capability and model, typical job fees, earnings."""

from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtGui import QShowEvent

from app.gui.bridge import CoreBridge
from app.gui.pages.base import Page
from app.gui.pricing import price_rows
from app.gui.session import NodeSession
from app.gui.tasks import spawn
from core.config import ModelsConfig
from widgets.earnings_panel import EarningsPanel


class PricingPage(Page):
    title = "Pricing & earnings"
    subtitle = (
        "Prices are wei per pixel, per capability and model, as in Livepeer's aiModels.json. "
        "A job's fee is its pixels times the price."
    )

    def __init__(self, session: NodeSession, bridge: CoreBridge) -> None:
        super().__init__()
        self.session = session
        self.panel = EarningsPanel()
        self.body.addWidget(self.panel, 1)
        self._stats = QTimer(self)
        self._stats.setSingleShot(True)
        self._stats.setInterval(1000)
        self._stats.timeout.connect(self.refresh_stats)
        session.config_changed.connect(self._on_config_changed)
        bridge.job_finished.connect(self._on_job_event)
        bridge.job_failed.connect(self._on_job_event)
        bridge.node_changed.connect(self._on_job_event)
        self._on_config_changed(session.config)

    def _on_config_changed(self, config: ModelsConfig) -> None:
        self.panel.set_prices(price_rows(config))

    def _on_job_event(self, _event: object) -> None:
        self._stats.start()

    def refresh_stats(self) -> None:
        async def run() -> None:
            self.panel.set_stats(await self.session.stats())

        spawn(run(), "earnings")

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.refresh_stats()
