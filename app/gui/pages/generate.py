"""Test generation: send a job to the node and watch it like any other."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGroupBox, QLabel, QSplitter, QVBoxLayout, QWidget

from app.gui.bridge import CoreBridge
from app.gui.generation import GenerationError, Generator
from app.gui.pages.base import Page
from app.gui.session import NodeSession
from app.gui.tasks import spawn
from core import events as ev
from core.pipelines.common import DEFAULT_LIMITS
from widgets.generate_form import GenerateForm, GenerationRequest
from widgets.job_preview import JobPreview


class GeneratePage(Page):
    title = "Test generation"
    subtitle = (
        "Send a job to your node as an application would, and watch it run. The form is "
        "checked before anything is sent."
    )

    def __init__(self, session: NodeSession, bridge: CoreBridge, generator: Generator) -> None:
        super().__init__()
        self.session = session
        self.generator = generator
        self.form = GenerateForm(DEFAULT_LIMITS)  # the node's own limits (NodeSettings)
        self.route = QLabel()
        self.route.setObjectName("muted")
        self.route.setWordWrap(True)
        self.preview = JobPreview(session.bus, follow_latest=False)
        self.last_result: str | None = None
        form_box = QGroupBox("Request")
        fl = QVBoxLayout(form_box)
        fl.addWidget(self.form)
        fl.addWidget(self.route)
        fl.addStretch(1)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(form_box)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(self.preview)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        split.setChildrenCollapsible(False)
        self.body.addWidget(split, 1)
        self.form.submitted.connect(self._on_submitted)
        bridge.node_changed.connect(self._on_node_changed)
        bridge.job_finished.connect(self._on_job_finished)
        self._on_node_changed(None)

    def _on_node_changed(self, _event: ev.NodeChanged | None) -> None:
        self.form.set_models(self.session.offered())
        url = self.session.url()
        # TODO(lead): route through the in-process gateway when core/gateway lands.
        self.route.setText(
            f"Sent straight to this node's API at {url} (the gateway path comes later)."
            if url
            else "The node is not running: start it on the Node page first."
        )

    def _on_job_finished(self, event: ev.JobFinished) -> None:
        images = [p for p in event.outputs if p.lower().endswith(".png")]
        if images and not self.form.image.text().strip():
            self.form.image.setText(images[0])  # a ready input for image-to-image / -video

    def _on_submitted(self, request: GenerationRequest) -> None:
        self.preview.expect_job(request.capability, request.model_id)
        self.form.set_busy(True)
        spawn(self._generate(request), "test generation")

    async def _generate(self, request: GenerationRequest) -> None:
        try:
            result = await self.generator.generate(request)
            self.last_result = result.job_id
        except GenerationError as exc:
            hint = ""
            if "payment" in exc.msg.lower() and not self.session.free:
                hint = (
                    " Test generations are not paid yet: turn on Free mode on the Node page "
                    "and restart the node to try it."
                )
            self.form.show_error(f"The node refused the job: {exc.msg}.{hint}")
        except Exception as exc:  # httpx transport errors and the like
            self.form.show_error(f"Could not reach the node: {exc}")
        finally:
            self.form.set_busy(False)
