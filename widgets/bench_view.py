"""A benchmark of one model on one device (``orchard bench``): what to measure, the run's
output as it arrives, and its report (``widgets._bench_report``).

The view checks its fields (the flags with the runner's own rules) and emits a
:class:`BenchRequest`; running the benchmark is the page's business.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QTextCursor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from core.errors import BadRequest
from core.optimizations import FLAGS, parse_cli
from widgets._bench_report import ReportPanel, clean, mono_font
from widgets._format import fmt_duration

PIPELINES = ("text-to-image", "image-to-image", "image-to-video")
VIDEO = "image-to-video"
#: Width, height and steps a pipeline starts with (``orchard bench``'s own defaults).
DEFAULTS = {
    "text-to-image": (512, 512, 4),
    "image-to-image": (512, 512, 4),
    "image-to-video": (1024, 576, 25),
}
DEFAULT_FRAMES = 14
PATHS = ("direct", "runner", "node")
PATH_TIPS = {
    "direct": "The pipeline called in the benchmark's own process: the floor.",
    "runner": "Through a runner process's HTTP API, as the node calls it.",
    "node": "Through a whole node (orchestrator, queue, runner), as a gateway calls it.",
}
OUTPUT_LINES = 2000
FORM_WIDTH = 330
FORM_MIN_WIDTH = 280
WARN_STYLE = (
    "QLabel { background: #fff3e0; border: 1px solid #ffe0b2; border-radius: 6px; "
    "padding: 8px 10px; color: #8a4b00; }"
)


@dataclass(frozen=True)
class BenchRequest:
    """What to measure: ``orchard bench``'s options. ``flags`` is ``NAME[=VALUE],...``."""

    device: str
    pipeline: str
    model: str
    width: int
    height: int
    steps: int
    runs: int
    concurrency: tuple[int, ...] = (1,)
    through: tuple[str, ...] = ("direct",)
    frames: int | None = None
    compare: bool = False
    flags: str = ""


def _spin(low: int, high: int, value: int, step: int = 1) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setSingleStep(step)
    spin.setValue(value)
    spin.setAccelerated(True)
    return spin


def _row(*widgets: QWidget, stretch: bool = False) -> QWidget:
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    for w in widgets:
        layout.addWidget(w, 1 if isinstance(w, QSpinBox | QLineEdit) else 0)
    if stretch:
        layout.addStretch(1)
    return row


class BenchView(QWidget):
    """Signals: ``run_requested(BenchRequest)`` (the fields passed their checks),
    ``stop_requested``, ``device_changed(str)`` with a device id (``cpu``, ``cuda:N``), and
    ``use_flags_requested(pipeline, model, flags)``: write a report's flags into the model's
    entries of aiModels.json (offered when its output matched the plain one, faster)."""

    run_requested = Signal(object)
    stop_requested = Signal()
    device_changed = Signal(str)
    use_flags_requested = Signal(str, str, object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.models: dict[str, list[str]] = {}
        self.running = False
        self._started = 0.0
        self._transient = False  # the output's last line is a progress bar being redrawn

        self.device = QComboBox()
        self.pipeline = QComboBox()
        self.pipeline.addItems(PIPELINES)
        self.model = QComboBox()
        self.model.setEditable(True)
        self.model.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        if (line := self.model.lineEdit()) is not None:
            line.setPlaceholderText("org/name")
        self.width_spin = _spin(64, 2048, 512, step=8)
        self.height_spin = _spin(64, 2048, 512, step=8)
        self.steps = _spin(1, 150, 4)
        self.frames = _spin(1, 64, DEFAULT_FRAMES)
        self.runs = _spin(1, 200, 5)
        self.runs.setToolTip("Timed runs, after a first request that is reported on its own.")
        self.concurrency = QLineEdit("1")
        self.concurrency.setPlaceholderText("1,2,4")
        self.concurrency.setToolTip(
            "Jobs in flight at once for the throughput columns, e.g. 1,2,4 (the direct path "
            "runs one at a time)."
        )
        self.paths = {name: QCheckBox(name) for name in PATHS}
        for name, box in self.paths.items():
            box.setToolTip(PATH_TIPS[name])
        self.paths["direct"].setChecked(True)
        self.flags = QLineEdit()
        self.flags.setPlaceholderText("none (plain)")
        self.flags.setToolTip(
            "Optimisation flags of the optimised variant: NAME or NAME=VALUE, separated by "
            "commas (as in aiModels.json's optimization_flags)."
        )
        self.flags_menu = QMenu(self)
        self.flags_menu.setToolTipsVisible(True)
        self.flag_actions: dict[str, QAction] = {}
        for name, what in FLAGS.items():
            action = self.flags_menu.addAction(name)
            action.setCheckable(True)
            action.setToolTip(what)
            action.toggled.connect(lambda on, n=name: self._on_flag_toggled(n, on))
            self.flag_actions[name] = action
        self.flags_menu.aboutToShow.connect(self._on_flags_menu)
        self.flags_button = QToolButton()
        self.flags_button.setText("Add")
        self.flags_button.setToolTip("Tick flags to add them; edit a value in the field")
        self.flags_button.setMenu(self.flags_menu)
        self.flags_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.compare = QCheckBox("Compare with the plain pipeline")
        self.compare.setToolTip(
            "Also runs the pipeline without flags, and reports the speed-up and whether the "
            "output is the same."
        )
        self.size_row = _row(self.width_spin, QLabel("×"), self.height_spin)
        self.through_row = _row(*self.paths.values(), stretch=True)
        self.flags_row = _row(self.flags, self.flags_button)
        self.form = QFormLayout()
        self.form.addRow("Device", self.device)
        self.form.addRow("Pipeline", self.pipeline)
        self.form.addRow("Model", self.model)
        self.form.addRow("Size (W × H)", self.size_row)
        self.form.addRow("Steps", self.steps)
        self.form.addRow("Frames", self.frames)
        self.form.addRow("Timed runs", self.runs)
        self.form.addRow("Concurrency", self.concurrency)
        self.form.addRow("Through", self.through_row)
        self.form.addRow("Flags", self.flags_row)
        self.form.addRow("", self.compare)

        self.warning = QLabel()
        self.warning.setStyleSheet(WARN_STYLE)
        self.warning.setWordWrap(True)
        self.warning.hide()
        self.form_error = QLabel()
        self.form_error.setObjectName("formError")
        self.form_error.setWordWrap(True)
        self.form_error.hide()
        self.run_button = QPushButton("Run")
        self.run_button.setObjectName("primary")
        self.run_button.clicked.connect(self._on_run_clicked)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop_requested.emit)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.run_button)
        self.bar = QProgressBar()
        self.bar.setRange(0, 0)  # busy: a benchmark says nothing of how far it is
        self.bar.setTextVisible(False)
        self.bar.setMaximumHeight(8)
        self.status = QLabel()
        self.status.setObjectName("muted")
        self.status.setWordWrap(True)
        settings = QGroupBox("Benchmark")
        sl = QVBoxLayout(settings)
        sl.addLayout(self.form)
        sl.addWidget(self.warning)
        sl.addWidget(self.form_error)
        sl.addLayout(buttons)
        sl.addWidget(self.bar)
        sl.addWidget(self.status)
        settings.setMinimumWidth(FORM_MIN_WIDTH)  # narrower only when the window is small
        settings.setMaximumWidth(FORM_WIDTH)

        self.result = ReportPanel()
        self.result.use_flags_requested.connect(self.use_flags_requested)
        result = QGroupBox("Result")
        QVBoxLayout(result).addWidget(self.result)
        self.output = QPlainTextEdit()
        self.output.setReadOnly(True)
        self.output.setMaximumBlockCount(OUTPUT_LINES)
        self.output.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.output.setFont(mono_font(self.font()))
        self.output.setPlaceholderText("The benchmark's output appears here while it runs.")
        output = QGroupBox("Output")
        QVBoxLayout(output).addWidget(self.output)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(result)
        right.addWidget(output)
        right.setStretchFactor(0, 3)
        right.setStretchFactor(1, 1)
        right.setChildrenCollapsible(False)
        right.setSizes([540, 160])
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(settings, 0, Qt.AlignmentFlag.AlignTop)
        layout.addWidget(right, 1)

        self._tick = QTimer(self)
        self._tick.setInterval(1000)
        self._tick.timeout.connect(self._on_tick)
        self.pipeline.currentTextChanged.connect(self._on_pipeline_changed)
        self.device.currentIndexChanged.connect(self._on_device_index_changed)
        self._on_pipeline_changed(self.pipeline.currentText())
        self.set_running(False)

    # ----------------------------------------------------------------- state in
    def set_devices(self, devices: Sequence[tuple[str, str]], current: str | None = None) -> None:
        """``(device id, label)`` pairs; the choice is kept when it is still offered."""
        keep = current or self.device_id()
        self.device.blockSignals(True)
        self.device.clear()
        for device, label in devices:
            self.device.addItem(label, device)
        self.device.setCurrentIndex(max(self.device.findData(keep), 0))
        self.device.blockSignals(False)
        self._on_device_index_changed(self.device.currentIndex())

    def device_id(self) -> str:
        data = self.device.currentData()
        return str(data) if data is not None else ""

    def set_models(self, models: Mapping[str, Sequence[str]]) -> None:
        """The models to offer, per pipeline (any other id can be typed in)."""
        self.models = {k: list(v) for k, v in models.items()}
        self._fill_models(self.pipeline.currentText())

    def set_supported(self, options: Iterable[str]) -> None:
        """The optional ``orchard bench`` options the runtime's Orchard has (``frames``,
        ``flags``, ``compare``); the control of a missing one is turned off, and says why."""
        have = set(options)
        for name, control in (
            ("frames", self.frames),
            ("flags", self.flags_row),
            ("compare", self.compare),
        ):
            control.setEnabled(name in have)
            if name not in have:
                control.setToolTip(
                    f"The Orchard in the GPU runtime has no bench --{name}: update the runtime "
                    "on the Setup page."
                )

    def set_warning(self, text: str) -> None:
        """A warning that does not block the run (the node uses the chosen device, say)."""
        self.warning.setText(text)
        self.warning.setVisible(bool(text))

    # ----------------------------------------------------------------- the request
    def check(self) -> tuple[BenchRequest | None, list[str]]:
        """The request the fields describe, or one sentence per problem."""
        problems = []
        device = self.device_id()
        if not device:
            problems.append("Device: there is no device to run on.")
        model = self.model.currentText().strip()
        if not model:
            problems.append("Model: choose a model, or type its id (org/name).")
        through = tuple(name for name, box in self.paths.items() if box.isChecked())
        if not through:
            problems.append("Through: tick at least one of direct, runner and node.")
        concurrency: list[int] = []
        for part in filter(None, (p.strip() for p in self.concurrency.text().split(","))):
            if not (part.isdigit() and 1 <= int(part) <= 64):
                problems.append(f"Concurrency: {part!r} is not a number from 1 to 64 (e.g. 1,2,4).")
                break
            concurrency.append(int(part))
        flags = self.flag_text() if self.flags_row.isEnabled() else ""
        if flags:
            try:
                parse_cli(flags)  # the runner's own checks and messages
            except BadRequest as exc:
                problems.append(f"Flags: {exc.msg}.")
        if problems:
            return None, problems
        pipeline = self.pipeline.currentText()
        video = pipeline == VIDEO and self.frames.isEnabled()
        return BenchRequest(
            device=device,
            pipeline=pipeline,
            model=model,
            width=self.width_spin.value(),
            height=self.height_spin.value(),
            steps=self.steps.value(),
            runs=self.runs.value(),
            concurrency=tuple(dict.fromkeys(concurrency or [1])),
            through=through,
            frames=self.frames.value() if video else None,
            compare=self.compare.isChecked() and self.compare.isEnabled(),
            flags=flags,
        ), []

    def flag_text(self) -> str:
        """The flags as typed, tidied: ``CHANNELS_LAST,COMPILE=unet``."""
        return ",".join(p.strip() for p in self.flags.text().split(",") if p.strip())

    def _on_flags_menu(self) -> None:
        names = {p.partition("=")[0].strip().upper() for p in self.flag_text().split(",")}
        for name, action in self.flag_actions.items():
            action.blockSignals(True)
            action.setChecked(name in names)
            action.blockSignals(False)

    def _on_flag_toggled(self, name: str, on: bool) -> None:
        parts = [p for p in self.flag_text().split(",") if p]
        kept = [p for p in parts if p.partition("=")[0].strip().upper() != name]
        self.flags.setText(",".join([*kept, name] if on else kept))

    def _on_run_clicked(self) -> None:
        request, problems = self.check()
        self.form_error.setText("\n".join(problems))
        self.form_error.setVisible(bool(problems))
        if request is not None:
            self.run_requested.emit(request)

    # ----------------------------------------------------------------- a run
    def set_running(self, running: bool) -> None:
        """While running: Run disabled, Stop enabled, a busy bar and the time so far; a new
        run clears the output and the last error."""
        self.running = running
        self.stop_button.setEnabled(running)
        self.bar.setVisible(running)
        self._update_run_button()
        if running:
            self._started = time.monotonic()
            self.result.clear_error()
            self.output.clear()
            self._transient = False
            self.status.setText("Starting…")
            self._tick.start()
        else:
            self._tick.stop()

    def finish(self, outcome: str) -> None:
        """The run ended: ``finished``, ``stopped`` or ``failed``."""
        elapsed = fmt_duration(time.monotonic() - self._started) if self._started else "a moment"
        self.set_running(False)
        words = {
            "finished": f"Finished in {elapsed}.",
            "stopped": f"Stopped after {elapsed}.",
            "failed": f"Failed after {elapsed}.",
        }
        self.status.setText(words.get(outcome, outcome))

    def set_status(self, text: str) -> None:
        self.status.setText(text)

    def _on_tick(self) -> None:
        self.status.setText(f"Running for {fmt_duration(time.monotonic() - self._started)}…")

    def _update_run_button(self) -> None:
        self.run_button.setEnabled(not self.running and bool(self.device_id()))
        self.run_button.setText("Running…" if self.running else "Run")

    def append_output(self, text: str, transient: bool = False) -> None:
        """One line of the benchmark's output. A ``transient`` line (a progress bar redrawn
        after a carriage return) is replaced by the next line."""
        text = clean(text)
        if not text and not self._transient:
            return
        if self._transient:
            cursor = QTextCursor(self.output.document().lastBlock())
            cursor.movePosition(
                QTextCursor.MoveOperation.EndOfBlock, QTextCursor.MoveMode.KeepAnchor
            )
            cursor.insertText(text)
        else:
            self.output.appendPlainText(text)
        self._transient = transient
        bar = self.output.verticalScrollBar()
        bar.setValue(bar.maximum())

    def output_lines(self) -> list[str]:
        return self.output.toPlainText().splitlines()

    # ----------------------------------------------------------------- the result
    @property
    def report(self) -> dict[str, Any] | None:
        return self.result.report

    def set_report(self, report: Mapping[str, Any] | None, chart: str | None = None) -> None:
        """Show ``report`` (``orchard bench --json`` as a dict) and the chart PNG at
        ``chart``."""
        self.result.set_report(report, chart)

    def show_error(self, message: str, tail: Sequence[str] = ()) -> None:
        """Why the run failed, with the last lines it wrote (its stderr)."""
        self.result.show_error(message, tail)

    def set_configured(self, flags: Mapping[tuple[str, str], Mapping[str, Any]]) -> None:
        """The node's models as ``(pipeline, model)`` with their flags: "Use these flags for
        <model>" is enabled for those only (and not when they already have the flags)."""
        self.result.set_configured(flags)

    def show_flags_saved(self, text: str, error: bool = False) -> None:
        """The outcome of ``use_flags_requested``: a confirmation line, or why not."""
        self.result.show_flags_saved(text, error)

    # ----------------------------------------------------------------- choices
    def _on_pipeline_changed(self, pipeline: str) -> None:
        untouched = {tuple(v) for v in DEFAULTS.values()}
        now = (self.width_spin.value(), self.height_spin.value(), self.steps.value())
        if now in untouched:  # the last pipeline's defaults: this one's instead
            width, height, steps = DEFAULTS.get(pipeline, now)
            self.width_spin.setValue(width)
            self.height_spin.setValue(height)
            self.steps.setValue(steps)
        self.form.setRowVisible(self.frames, pipeline == VIDEO)
        self._fill_models(pipeline)

    def _fill_models(self, pipeline: str) -> None:
        current = self.model.currentText()
        offered = self.models.get(pipeline, [])
        self.model.clear()
        self.model.addItems(offered)
        typed = current and not any(current in ids for ids in self.models.values())
        if current in offered or typed:
            self.model.setCurrentText(current)  # kept, or an id typed by hand

    def select(self, pipeline: str, model: str) -> None:
        """Choose ``pipeline`` and ``model`` (any id)."""
        self.pipeline.setCurrentText(pipeline)
        self.model.setCurrentText(model)

    def _on_device_index_changed(self, _index: int) -> None:
        self._update_run_button()
        self.device_changed.emit(self.device_id())
