"""The GPU runtime: what Orchard proposes for this machine, what is set up, and a setup's
progress (``core.runtime.SetupProgress`` values) with Cancel, Retry and its error."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from core.runtime import Proposal, SetupProgress
from widgets._format import fmt_bytes, fmt_duration


def progress_text(p: SetupProgress) -> str:
    """``Step 4 of 7: installing PyTorch — torch-2.8.whl 1.2 GiB of 2.5 GiB, 1 min 05 s
    left``."""
    text = f"Step {p.index} of {p.steps}: {p.message}"
    if p.skipped:
        text += " (already done)"
    if p.finished:
        return p.message[:1].upper() + p.message[1:]
    if p.bytes_done is not None:
        what = f"{p.file} " if p.file else ""
        total = f" of {fmt_bytes(p.bytes_total)}" if p.bytes_total else ""
        text += f" — {what}{fmt_bytes(p.bytes_done)}{total}"
        if p.eta_s is not None:
            text += f", {fmt_duration(p.eta_s)} left"
    return text


class RuntimeSetupView(QWidget):
    """Signals: ``setup_requested``, ``cancel_requested``, ``retry_requested``, and
    ``use_existing_requested(path)`` with a Python chosen in a file dialog."""

    setup_requested = Signal()
    cancel_requested = Signal()
    retry_requested = Signal()
    use_existing_requested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        title = QLabel("GPU runtime")
        title.setObjectName("sectionTitle")
        intro = QLabel(
            "Runners start from a Python environment with PyTorch and diffusers. Orchard "
            "sets one up in its data folder, or uses one you already have."
        )
        intro.setObjectName("muted")
        intro.setWordWrap(True)
        self.proposed = QLabel("—")
        self.proposed.setWordWrap(True)
        self.current = QLabel("none")
        self.current.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Proposed:", self.proposed)
        form.addRow("Current:", self.current)

        self.setup_button = QPushButton("Set up runtime")
        self.setup_button.clicked.connect(self.setup_requested.emit)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_requested.emit)
        self.retry_button = QPushButton("Retry")
        self.retry_button.clicked.connect(self.retry_requested.emit)
        self.existing_button = QPushButton("Use an existing Python…")
        self.existing_button.clicked.connect(self._choose_python)
        buttons = QHBoxLayout()
        for b in (self.setup_button, self.cancel_button, self.retry_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.existing_button)

        self.bar = QProgressBar()
        self.bar.setTextVisible(True)
        self.step = QLabel("")
        self.step.setWordWrap(True)
        self.error_box = QFrame()
        self.error_box.setObjectName("errorBox")
        self.error_text = QLabel("")
        self.error_text.setWordWrap(True)
        eb = QVBoxLayout(self.error_box)
        eb.setContentsMargins(10, 8, 10, 8)
        eb.addWidget(self.error_text)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(title)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.bar)
        layout.addWidget(self.step)
        layout.addWidget(self.error_box)
        self.last: SetupProgress | None = None
        self.set_idle()

    # ------------------------------------------------------------------ what is there
    def set_proposal(self, proposal: Proposal | None) -> None:
        if proposal is None:
            self.proposed.setText("checking this machine…")
            return
        self.proposed.setText(f"{proposal.backend} — {proposal.reason}")

    def set_current(self, python: str | None) -> None:
        self.current.setText(python or "none")

    # ------------------------------------------------------------------ states
    def set_idle(self) -> None:
        """Nothing running: Set up enabled, no bar."""
        self.setup_button.setEnabled(True)
        self.existing_button.setEnabled(True)
        self.cancel_button.setVisible(False)
        self.retry_button.setVisible(False)
        self.bar.setVisible(False)
        self.step.setVisible(bool(self.step.text()))
        self.error_box.setVisible(bool(self.error_text.text()))

    def set_running(self) -> None:
        self.error_text.setText("")
        self.error_box.setVisible(False)
        self.setup_button.setEnabled(False)
        self.existing_button.setEnabled(False)
        self.cancel_button.setVisible(True)
        self.cancel_button.setEnabled(True)
        self.retry_button.setVisible(False)
        self.bar.setVisible(True)
        self.bar.setRange(0, 0)  # busy until the first value
        self.step.setText("starting…")
        self.step.setVisible(True)

    def set_stopped(self, text: str = "Cancelled: Retry resumes where it stopped.") -> None:
        """Cancelled (or failed): Retry offered."""
        self.setup_button.setEnabled(False)
        self.existing_button.setEnabled(True)
        self.cancel_button.setVisible(False)
        self.retry_button.setVisible(True)
        self.bar.setVisible(self.last is not None)
        if self.last is not None:
            self.bar.setRange(0, 1000)
        self.step.setText(text)
        self.step.setVisible(True)

    def update(self, progress: SetupProgress | None = None) -> None:  # type: ignore[override]
        """Show one value of a setup's progress (with none, QWidget's repaint request)."""
        if progress is None:
            super().update()
            return
        self.last = progress
        self.bar.setVisible(True)
        self.bar.setRange(0, 1000)
        done = progress.index - (0 if progress.skipped or progress.finished else 1)
        frac = progress.fraction or 0.0
        overall = min(1.0, (done + frac) / max(progress.steps, 1))
        self.bar.setValue(round(overall * 1000))
        self.bar.setFormat(f"{overall:.0%}")
        self.step.setText(progress_text(progress))
        self.step.setVisible(True)
        if progress.finished:
            self.cancel_button.setVisible(False)
            self.retry_button.setVisible(False)
            self.setup_button.setEnabled(True)
            self.existing_button.setEnabled(True)

    def show_error(self, msg: str) -> None:
        self.error_text.setText(msg)
        self.error_box.setVisible(True)
        self.set_stopped("The setup stopped: fix what the message says, then Retry.")

    def clear_error(self) -> None:
        self.error_text.setText("")
        self.error_box.setVisible(False)

    # ------------------------------------------------------------------ existing Python
    def _choose_python(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a Python executable")
        if path:
            self.use_existing_requested.emit(path)
