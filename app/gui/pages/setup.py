"""Setup: the doctor's checks, and setting up (or choosing) the GPU runtime runners use."""

from __future__ import annotations

import asyncio
import logging

from PySide6.QtGui import QShowEvent

from app.gui.pages.base import Page
from app.gui.session import NodeSession
from app.gui.tasks import spawn
from core import doctor, runtime
from core.errors import OrchardError
from widgets.doctor_view import DoctorView
from widgets.runtime_setup_view import RuntimeSetupView

log = logging.getLogger(__name__)


class SetupPage(Page):
    title = "Setup"
    subtitle = (
        "Whether this machine is ready to serve, and the Python environment (PyTorch for "
        "its GPU) that the runners start from."
    )

    def __init__(self, session: NodeSession) -> None:
        super().__init__()
        self.session = session
        self.doctor = DoctorView()
        self.runtime = RuntimeSetupView()
        self.body.addWidget(self.doctor)
        self.body.addSpacing(8)
        self.body.addWidget(self.runtime)
        self.body.addStretch(1)
        self.doctor.run_requested.connect(self.run_checks)
        self.runtime.setup_requested.connect(self.start_setup)
        self.runtime.retry_requested.connect(self.start_setup)
        self.runtime.cancel_requested.connect(self.cancel_setup)
        self.runtime.use_existing_requested.connect(self.use_existing)
        self.proposal: runtime.Proposal | None = None
        self.checks_task: asyncio.Task[None] | None = None
        self.setup_task: asyncio.Task[None] | None = None
        self._shown_once = False
        self.runtime.set_current(runtime.runtime_python(session.data_dir))

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not self._shown_once:
            self._shown_once = True
            self.run_checks()

    # ------------------------------------------------------------------ doctor
    def run_checks(self) -> None:
        if self.checks_task is not None and not self.checks_task.done():
            return
        self.doctor.set_running(True)
        self.checks_task = spawn(self._checks(), "run the setup checks")

    async def _checks(self) -> None:
        s = self.session
        settings = doctor.DoctorSettings(
            data_dir=s.data_dir, models_dir=s.models_dir, node_port=s.port, host=s.host
        )
        try:
            checks = await doctor.run_checks(settings)
        except Exception as exc:  # the checks catch their own errors; this is a last resort
            log.exception("the setup checks failed")
            checks = [doctor.Check("doctor", doctor.Status.FAIL, f"could not run: {exc}")]
        self.doctor.set_checks(checks)
        self.runtime.set_current(runtime.runtime_python(s.data_dir))
        if self.proposal is None:
            try:
                self.proposal = await runtime.propose()
            except Exception as exc:
                log.warning("no runtime proposal: %s", exc)
                return
            self.runtime.set_proposal(self.proposal)

    # ------------------------------------------------------------------ runtime
    def start_setup(self) -> None:
        if self.setup_task is not None and not self.setup_task.done():
            return
        self.runtime.set_running()
        self.setup_task = spawn(self._setup(), "set up the runtime")

    async def _setup(self) -> None:
        try:
            if self.proposal is None:
                self.proposal = await runtime.propose()
                self.runtime.set_proposal(self.proposal)
            installer = runtime.RuntimeInstaller(self.session.data_dir, self.proposal.backend)
            async for progress in installer.run():
                self.runtime.update(progress)
        except asyncio.CancelledError:
            self.runtime.set_stopped()
            raise
        except OrchardError as exc:
            self.runtime.show_error(str(exc))
            return
        except Exception as exc:
            log.exception("runtime setup failed")
            self.runtime.show_error(f"The setup failed unexpectedly: {exc}")
            return
        self.runtime.set_current(runtime.runtime_python(self.session.data_dir))
        self.run_checks()

    def cancel_setup(self) -> None:
        if self.setup_task is not None and not self.setup_task.done():
            self.setup_task.cancel()

    def use_existing(self, path: str) -> None:
        spawn(self._use_existing(path), "use an existing Python")

    async def _use_existing(self, path: str) -> None:
        self.runtime.clear_error()
        self.runtime.step.setText(f"checking {path}…")
        self.runtime.step.setVisible(True)
        try:
            info = await runtime.use_existing(self.session.data_dir, path)
        except OrchardError as exc:
            self.runtime.show_error(str(exc))
            return
        self.runtime.set_current(info.python)
        self.runtime.step.setText(f"Runners now start from {info.python} (torch {info.torch}).")
        self.run_checks()

    def shutdown(self) -> None:
        for task in (self.checks_task, self.setup_task):
            if task is not None and not task.done():
                task.cancel()
