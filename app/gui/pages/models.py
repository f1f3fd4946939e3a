"""Models: the node's aiModels.json (warm, GPU, VRAM fit) and the catalogue (download, add)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QGroupBox, QVBoxLayout

from app.gui import catalogue as cat
from app.gui.bridge import CoreBridge
from app.gui.demo import DEMO_NOTE
from app.gui.downloads import Downloader
from app.gui.pages.base import Page
from app.gui.session import NodeSession
from app.gui.tasks import spawn
from core import events as ev
from core.config import ModelsConfig
from widgets.model_catalogue import ModelCatalogue
from widgets.models_config_panel import ModelsConfigPanel

#: Budgets follow free memory: estimates are refreshed this often while the page shows.
REFRESH_MS = 5000


class ModelsPage(Page):
    title = "Models"
    subtitle = (
        "What the node serves (its aiModels.json): warm or cold, GPU, speed flags, how each "
        "model fits in memory; and a catalogue of well-known models to download. Changes "
        "apply when the node starts."
    )

    def __init__(self, session: NodeSession, bridge: CoreBridge, downloader: Downloader) -> None:
        super().__init__()
        self.session = session
        self.downloader = downloader
        self.demo_banner = self.banner()
        self.error = self.banner()
        self.error.setObjectName("errorBanner")
        self.config_panel = ModelsConfigPanel(session.config)
        self.config_panel.set_devices(session.devices())
        self.catalogue = ModelCatalogue()
        self.catalogue.set_models_dir(str(session.models_dir))
        configured = QGroupBox("Configured models")
        QVBoxLayout(configured).addWidget(self.config_panel)
        catalogue_box = QGroupBox("Catalogue")
        QVBoxLayout(catalogue_box).addWidget(self.catalogue)
        self.body.addWidget(self.demo_banner)
        self.body.addWidget(self.error)
        self.body.addWidget(configured)
        self.body.addWidget(catalogue_box, 1)

        self.config_panel.config_edited.connect(self._on_config_edited)
        self.config_panel.import_requested.connect(self._on_import_requested)
        self.config_panel.export_requested.connect(self._on_export_requested)
        self.catalogue.download_requested.connect(self._on_download_requested)
        self.catalogue.cancel_requested.connect(self.downloader.cancel)
        self.catalogue.add_requested.connect(self._on_add_requested)
        self.catalogue.refresh_requested.connect(self.refresh_disk)
        downloader.progress.connect(self.catalogue.set_progress)
        downloader.failed.connect(self.catalogue.set_failed)
        downloader.finished.connect(self._on_download_finished)
        session.config_changed.connect(self._on_config_changed)
        session.choices_changed.connect(self.schedule_estimates)
        session.demo_status.connect(self._on_demo_status)
        bridge.node_changed.connect(self._on_node_changed)
        bridge.model_changed.connect(self._on_model_changed)

        self._estimates = QTimer(self)
        self._estimates.setSingleShot(True)
        self._estimates.setInterval(150)
        self._estimates.timeout.connect(self._on_estimates_due)
        self._periodic = QTimer(self)
        self._periodic.setInterval(REFRESH_MS)
        self._periodic.timeout.connect(self._on_periodic)
        self._periodic.start()
        self._on_config_changed(session.config)
        self.refresh_disk()

    # ----------------------------------------------------------------- refreshes
    def schedule_estimates(self) -> None:
        self._estimates.start()

    def refresh_disk(self) -> None:
        spawn(self._scan(), "scan models directory")

    async def _scan(self) -> None:
        import asyncio

        rows = await asyncio.to_thread(cat.scan, self.session.models_dir, self.session.catalogue)
        self.catalogue.set_rows(rows)

    async def _refresh_estimates(self) -> None:
        r = await self.session.fit_report()
        self.config_panel.set_estimates(r.needs, r.fits, r.plan_ok, r.plan_lines)

    def _on_estimates_due(self) -> None:
        spawn(self._refresh_estimates(), "estimate model memory")

    def _on_periodic(self) -> None:
        if self.isVisible():
            self.schedule_estimates()

    def _states(self) -> None:
        node = self.session.node
        states: dict[tuple[str, str], str] = {}
        if node is not None and self.session.running:
            labels = {
                d.runner.runner_id: ("CPU" if i < 0 else f"GPU {i}")
                for i, d in node.devices.items()
            }
            for sl in node.slots:
                where = ", ".join(sorted(labels.get(r, r) for r in sl.runners))
                states[sl.key] = f"loaded on {where}" if where else "cold: loads on demand"
        self.config_panel.set_states(states)

    # ----------------------------------------------------------------- slots
    def _on_config_changed(self, config: ModelsConfig) -> None:
        self.config_panel.set_config(config)
        self.demo_banner.setText(f"{DEMO_NOTE} Add real models from the catalogue below.")
        self.demo_banner.setVisible(self.session.is_demo)
        if self.session.config_error:
            self.error.setText(
                f"The configuration file cannot be used: {self.session.config_error}"
            )
            self.error.show()
        else:
            self.error.hide()
        self.schedule_estimates()

    def _on_config_edited(self, config: ModelsConfig) -> None:
        spawn(self.session.set_config(config), "save aiModels.json")

    def _on_import_requested(self, path: str) -> None:
        async def run() -> None:
            if await self.session.load_config(Path(path)):
                self.config_panel.show_message(f"Imported {path}; it is now the node's file.")

        spawn(run(), "import aiModels.json")

    def _on_export_requested(self, path: str) -> None:
        async def run() -> None:
            await self.session.export_config(Path(path))
            self.config_panel.show_message(f"Exported to {path}.")

        spawn(run(), "export aiModels.json")

    def _on_download_requested(self, repo_id: str) -> None:
        self.downloader.start(repo_id)

    def _on_download_finished(self, repo_id: str, size: object) -> None:
        self.catalogue.set_finished(repo_id, size if isinstance(size, int) else None)
        self.schedule_estimates()

    def _on_add_requested(self, repo_id: str, pipeline: str) -> None:
        async def run() -> None:
            why = await self.session.add_model(pipeline, repo_id)
            if why:
                self.config_panel.show_message(why, error=True)
            else:
                self.config_panel.show_message(
                    f"Added {repo_id} for {pipeline} (cold). Tick Warm to load it at start."
                )

        spawn(run(), "add model")

    def _on_demo_status(self, message: str, busy: bool) -> None:
        self.demo_banner.setText(f"{DEMO_NOTE}\n{message}")  # the build's progress
        self.demo_banner.show()
        if not busy:
            self.refresh_disk()
            self.schedule_estimates()

    def _on_node_changed(self, event: ev.NodeChanged) -> None:
        if event.state in ("running", "stopped", "failed"):
            self._states()
            self.schedule_estimates()

    def _on_model_changed(self, event: ev.ModelChanged) -> None:
        self._states()
        if event.state in ("warm", "unloaded"):
            self.schedule_estimates()
