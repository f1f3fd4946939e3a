"""A test generation: what to ask the node for, checked before anything is sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtGui import QImageReader
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from core.errors import BadRequest
from core.pipelines import Capability, module
from core.pipelines.common import DEFAULT_LIMITS, Limits, check_seed, check_steps

NEEDS_IMAGE = (Capability.IMAGE_TO_IMAGE.value, Capability.IMAGE_TO_VIDEO.value)
NEEDS_PROMPT = (Capability.TEXT_TO_IMAGE.value, Capability.IMAGE_TO_IMAGE.value)


@dataclass(frozen=True)
class GenerationRequest:
    """What the form asks for: ``params`` are the runner API's fields (image aside)."""

    capability: str
    model_id: str
    params: dict[str, Any] = field(default_factory=dict)
    image_path: str | None = None


class GenerateForm(QWidget):
    """Pipeline, model, prompt, size, steps, seed and input image. ``submitted`` carries a
    :class:`GenerationRequest` that passed the same validation the node applies; wrong input
    is shown inline, next to the field, and nothing is sent."""

    submitted = Signal(object)

    def __init__(self, limits: Limits = DEFAULT_LIMITS, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.limits = limits
        self.models: dict[str, list[str]] = {}
        self.pipeline = QComboBox()
        self.pipeline.addItems([c.value for c in Capability])
        self.model = QComboBox()
        self.model.setMinimumContentsLength(24)
        self.prompt = QLineEdit()
        self.prompt.setPlaceholderText("a red fox in the snow, golden hour")
        self.width_edit = QLineEdit("512")
        self.height_edit = QLineEdit("512")
        self.steps = QLineEdit("8")
        self.seed = QLineEdit()
        self.seed.setPlaceholderText("random")
        self.image = QLineEdit()
        self.image.setPlaceholderText("a PNG or JPEG file")
        self.browse = QPushButton("Browse…")
        self.browse.clicked.connect(self._on_browse_clicked)
        self.submit = QPushButton("Generate")
        self.submit.setObjectName("primary")
        self.submit.clicked.connect(self._on_submit_clicked)
        self.error = QLabel()
        self.error.setObjectName("formError")
        self.error.setWordWrap(True)
        self.error.hide()
        self.hint = QLabel()
        self.hint.setObjectName("muted")
        self.hint.setWordWrap(True)

        size = QHBoxLayout()
        size.addWidget(self.width_edit)
        size.addWidget(QLabel("×"))
        size.addWidget(self.height_edit)
        self.size_row = QWidget()
        self.size_row.setLayout(size)
        size.setContentsMargins(0, 0, 0, 0)
        image_row = QHBoxLayout()
        image_row.setContentsMargins(0, 0, 0, 0)
        image_row.addWidget(self.image, 1)
        image_row.addWidget(self.browse)
        self.image_row = QWidget()
        self.image_row.setLayout(image_row)

        self.form = QFormLayout()
        self.form.addRow("Pipeline", self.pipeline)
        self.form.addRow("Model", self.model)
        self.form.addRow("Prompt", self.prompt)
        self.form.addRow("Input image", self.image_row)
        self.form.addRow("Size (W × H)", self.size_row)
        self.form.addRow("Steps", self.steps)
        self.form.addRow("Seed", self.seed)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self.form)
        layout.addWidget(self.hint)
        layout.addWidget(self.error)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.submit)
        layout.addLayout(buttons)
        self.fields: dict[str, QWidget] = {
            "prompt": self.prompt,
            "width": self.width_edit,
            "height": self.height_edit,
            "steps": self.steps,
            "num_inference_steps": self.steps,
            "seed": self.seed,
            "image": self.image,
            "input image": self.image,
            "model": self.model,
            "strength": self.steps,
        }
        self.pipeline.currentTextChanged.connect(self._on_pipeline_changed)
        self._on_pipeline_changed(self.pipeline.currentText())

    # ----------------------------------------------------------------- state in
    def set_models(self, models: dict[str, list[str]]) -> None:
        """The models the node offers, per pipeline."""
        self.models = {k: list(v) for k, v in models.items()}
        self._on_pipeline_changed(self.pipeline.currentText())

    def set_busy(self, busy: bool) -> None:
        self.submit.setEnabled(not busy and self.model.count() > 0)
        self.submit.setText("Generating…" if busy else "Generate")

    def show_error(self, message: str) -> None:
        """Show ``message`` under the form (a refusal from the node, say)."""
        self.show_errors([message])

    def show_errors(self, messages: list[str]) -> None:
        """Show each problem under the form, and mark the fields they are about."""
        self._clear_marks()
        self.error.setText("\n".join(messages))
        self.error.show()
        for message in messages:
            target = self._field_in(message)
            if target is not None:
                target.setProperty("invalid", True)
                target.style().unpolish(target)
                target.style().polish(target)

    def invalid_fields(self) -> list[QWidget]:
        """The fields marked wrong now."""
        return [w for w in dict.fromkeys(self.fields.values()) if w.property("invalid")]

    def clear_error(self) -> None:
        self._clear_marks()
        self.error.hide()

    # ----------------------------------------------------------------- validation
    def check(self) -> tuple[GenerationRequest | None, list[str]]:
        """The request the form describes, or the problems with it: one sentence per wrong
        field, each starting with the field's name."""
        cap = self.pipeline.currentText()
        model_id = self.model.currentText()
        problems: list[str] = []
        params: dict[str, Any] = {"model_id": model_id}

        def attempt(fn: Any, *args: Any) -> Any:
            try:
                return fn(*args)
            except BadRequest as exc:
                problems.append(exc.msg)
                return None

        if not model_id:
            problems.append(f"model: no model offers {cap}; add one on the Models page")
        if cap in NEEDS_PROMPT:
            params["prompt"] = self.prompt.text().strip()
            if not params["prompt"]:
                problems.append("prompt: write what the image should show")
        image_path = None
        in_size = None
        if cap in NEEDS_IMAGE:
            image_path = self.image.text().strip()
            if not image_path:
                problems.append(f"input image: {cap} starts from an image; choose one")
            elif not Path(image_path).is_file():
                problems.append(f"input image: {image_path} does not exist")
            else:
                reader = QImageReader(image_path)
                if reader.canRead():
                    in_size = reader.size()
                else:
                    problems.append(f"input image: {image_path} is not an image Orchard can read")
        if cap != Capability.IMAGE_TO_IMAGE.value:
            width = attempt(_whole, "width", self.width_edit.text())
            height = attempt(_whole, "height", self.height_edit.text())
            for name, value in (("width", width), ("height", height)):
                if value is not None:
                    params[name] = value
                    attempt(_side, name, value, self.limits)
        steps = attempt(_whole, "steps", self.steps.text())
        if steps is not None:
            params["num_inference_steps"] = steps
            attempt(check_steps, steps, self.limits)
        if self.seed.text().strip():
            seed = attempt(_whole, "seed", self.seed.text())
            if seed is not None:
                params["seed"] = seed
                attempt(check_seed, seed)
        if problems:
            return None, [_sentence(p) for p in problems]
        mod = module(cap)
        try:  # everything else the node checks (pixels, guidance, strength x steps, ...)
            if cap == Capability.TEXT_TO_IMAGE.value:
                mod.validate(mod.TextToImageParams(**params), self.limits)
            elif cap == Capability.IMAGE_TO_IMAGE.value:
                assert in_size is not None
                w, h = in_size.width(), in_size.height()
                mod.validate(mod.ImageToImageParams(**params), w - w % 8, h - h % 8, self.limits)
            else:
                mod.validate(mod.ImageToVideoParams(**params), self.limits)
        except BadRequest as exc:
            msg = exc.msg
            if cap == Capability.IMAGE_TO_IMAGE.value and msg.startswith(("width", "height")):
                msg = f"input image: its {msg}"  # image-to-image takes the input's size
            return None, [_sentence(msg)]
        return GenerationRequest(cap, model_id, params, image_path), []

    def request(self) -> GenerationRequest:
        """The request; BadRequest with every problem when the form is wrong."""
        req, problems = self.check()
        if req is None:
            raise BadRequest("; ".join(problems))
        return req

    # ----------------------------------------------------------------- slots
    def _on_submit_clicked(self) -> None:
        req, problems = self.check()
        if req is None:
            self.show_errors(problems)
            return
        self.clear_error()
        self.submitted.emit(req)

    def _on_browse_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Input image", "", "Images (*.png *.jpg *.jpeg *.webp)"
        )
        if path:
            self.image.setText(path)

    def _on_pipeline_changed(self, cap: str) -> None:
        current = self.model.currentText()
        self.model.clear()
        offered = self.models.get(cap, [])
        self.model.addItems(offered)
        if current in offered:
            self.model.setCurrentText(current)
        self.form.setRowVisible(self.prompt, cap in NEEDS_PROMPT)
        self.form.setRowVisible(self.image_row, cap in NEEDS_IMAGE)
        self.form.setRowVisible(self.size_row, cap != Capability.IMAGE_TO_IMAGE.value)
        square = self.width_edit.text() == "512" and self.height_edit.text() == "512"
        if cap == Capability.IMAGE_TO_VIDEO.value and square:
            self.height_edit.setText("288")  # a 16:9 video
        hints = []
        if cap == Capability.IMAGE_TO_IMAGE.value:
            hints.append("The output keeps the input image's size.")
        if not offered:
            hints.append(
                f"No model offers {cap} now: start the node, or add a {cap} model on the "
                "Models page."
            )
        self.hint.setText(" ".join(hints))
        self.hint.setVisible(bool(hints))
        self.submit.setEnabled(bool(offered))
        self.clear_error()

    # ----------------------------------------------------------------- helpers
    def _field_in(self, message: str) -> QWidget | None:
        head = message.lower()
        for name in sorted(self.fields, key=len, reverse=True):
            if head.startswith(name):
                return self.fields[name]
        return None

    def _clear_marks(self) -> None:
        for w in set(self.fields.values()):
            if w.property("invalid"):
                w.setProperty("invalid", False)
                w.style().unpolish(w)
                w.style().polish(w)


def _whole(name: str, text: str) -> int:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        shown = f"'{text}'" if text else "nothing"
        raise BadRequest(f"{name} must be a whole number (got {shown})") from None


def _side(name: str, value: int, limits: Limits) -> None:
    """One side of the output, as check_size checks it (a multiple of 8, within limits)."""
    if value <= 0 or value % 8:
        raise BadRequest(
            f"{name} must be a positive multiple of 8 (got {value}); "
            f"try {max(8, round(value / 8) * 8)}"
        )
    if value < limits.min_side:
        raise BadRequest(f"{name} {value} is below the minimum of {limits.min_side}")
    if value > limits.max_side:
        raise BadRequest(f"{name} {value} is above the limit of {limits.max_side}")


def _sentence(message: str) -> str:
    """The message as the form says it: ``steps`` for the API's ``num_inference_steps``."""
    if message.startswith("num_inference_steps"):
        message = "steps" + message[len("num_inference_steps") :]
    return message[:1].upper() + message[1:]
