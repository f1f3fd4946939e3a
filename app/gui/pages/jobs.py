"""Jobs: the live list and the preview of the selected (or newest) job."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QSplitter

from app.gui.bridge import CoreBridge
from app.gui.pages.base import Page
from app.gui.session import NodeSession
from app.gui.tasks import spawn
from core import events as ev
from widgets.job_list import JobList
from widgets.job_preview import JobPreview


class JobsPage(Page):
    title = "Jobs"
    subtitle = (
        "Every job the node runs, live, and the history. The preview follows the newest job; "
        "pick a row to see another."
    )

    def __init__(self, session: NodeSession, bridge: CoreBridge) -> None:
        super().__init__()
        self.session = session
        self.list = JobList(session.bus)
        self.preview = JobPreview(session.bus, follow_latest=True)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.list)
        split.addWidget(self.preview)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([640, 420])
        split.setChildrenCollapsible(False)
        self.body.addWidget(split, 1)
        self.list.job_selected.connect(self._on_job_selected)
        bridge.node_changed.connect(self._on_node_changed)

    def load_history(self) -> None:
        async def run() -> None:
            self.list.add_records(await self.session.recent_jobs())

        spawn(run(), "load job history")

    def _on_node_changed(self, event: ev.NodeChanged) -> None:
        if event.state == "stopped":
            self.load_history()

    def _on_job_selected(self, job_id: str) -> None:
        row = self.list.row(job_id)
        if row is None or job_id == self.preview.job_id:
            return
        self.preview.show_job(
            row.job_id,
            row.capability,
            row.model_id,
            row.state,
            row.outputs,
            row.error,
            row.step,
            row.steps,
        )
