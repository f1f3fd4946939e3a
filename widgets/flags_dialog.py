"""A model's optimisation flags (``optimization_flags`` in aiModels.json): one row per flag
Orchard applies (``core.optimizations.FLAGS``), checked with the runner's own rules as they
are edited. Flags Orchard does not apply (unknown names, Livepeer's ``SFAST``...) are shown
and kept in the file as they are.

The functions here are shared with the pages that write flags: :func:`summary` (a table
cell), :func:`describe` (its tooltip) and :func:`with_flags` (new flags, the others kept).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QGridLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from core.errors import BadRequest
from core.optimizations import COMPILE_MODES, FLAGS, IGNORED_FLAGS, parse, unknown_flag_message

#: Values offered for the flags that take one (any other can be typed). An empty value means
#: ``true``: the flag's default (COMPILE all, WARMUP the model's native size, BATCH 4).
CHOICES: dict[str, tuple[str, ...]] = {
    "COMPILE": ("", "all", "unet"),
    "COMPILE_MODE": ("reduce-overhead", *(m for m in COMPILE_MODES if m != "reduce-overhead")),
    "WARMUP": ("", "512x512", "1024x1024", "1024x576", "false"),
    "BATCH": ("", "2", "4", "8", "16"),
    "PNG_LEVEL": tuple(str(n) for n in range(10)),
}
PLACEHOLDERS = {
    "COMPILE": "all (the default) or unet",
    "WARMUP": "the model's native size",
    "BATCH": "4",
}
#: Flags that need a value: ticking one fills in the first choice.
NEEDS_VALUE = frozenset({"COMPILE_MODE", "PNG_LEVEL"})
SUMMARY_CHARS = 28
HELP_WIDTH = 440
PLAIN = "plain"


def _is_on(value: Any) -> bool:
    """Whether a flag's value asks for something (``false`` and ``""`` are the plain path)."""
    if value is None or value is False:
        return False
    return not (isinstance(value, str) and value.strip().lower() in ("", "false"))


def _part(name: str, value: Any) -> str:
    return name if value is True else f"{name}={value}"


def _split(flags: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(applied, others)``: the flags Orchard applies (by their upper-case name) and the
    rest as written (unknown names, and the ones Orchard knows but does not apply)."""
    applied: dict[str, Any] = {}
    others: dict[str, Any] = {}
    for key, value in (flags or {}).items():
        if key.upper() in FLAGS:
            applied[key.upper()] = value
        else:
            others[key] = value
    return applied, others


def _why_not(name: str) -> str:
    if name.upper() in IGNORED_FLAGS:
        return f"not applied: {IGNORED_FLAGS[name.upper()]}"
    return unknown_flag_message(name).partition(";")[0] + "; kept in the file, not applied"


def summary(flags: Mapping[str, Any] | None, limit: int = SUMMARY_CHARS) -> str:
    """``CHANNELS_LAST, COMPILE=unet``, ``plain``, ``… +2`` past ``limit`` characters, and
    how many flags are kept but not applied."""
    applied, others = _split(flags)
    parts = [_part(k, v) for k, v in applied.items() if _is_on(v)]
    shown: list[str] = []
    for i, part in enumerate(parts):
        rest = len(parts) - i - 1
        if shown and len(", ".join([*shown, part])) + (len(f", +{rest}") if rest else 0) > limit:
            break
        shown.append(part)
    text = ", ".join(shown) if shown else PLAIN
    if len(shown) < len(parts):
        text += f", +{len(parts) - len(shown)}"
    kept = [k for k, v in others.items() if _is_on(v)]
    if kept:
        text += f" · {len(kept)} not applied"
    return text


def describe(flags: Mapping[str, Any] | None) -> str:
    """One line per flag with what it does (a tooltip)."""
    applied, others = _split(flags)
    lines = [f"{_part(k, v)}: {FLAGS[k]}" for k, v in applied.items() if _is_on(v)]
    lines += [f"{_part(k, v)}: {_why_not(k)}" for k, v in others.items()]
    return "\n".join(lines) or "No optimisation flags: the plain diffusers path."


def with_flags(old: Mapping[str, Any] | None, applied: Mapping[str, Any]) -> dict[str, Any] | None:
    """``applied`` (flags Orchard applies) in place of ``old``'s; the others of ``old`` kept
    as they are. None when nothing is left (no ``optimization_flags`` key)."""
    _, others = _split(old)
    return {**applied, **others} or None


def _value_text(value: Any) -> str:
    if value is True:
        return ""
    if value is False:
        return "false"
    return str(value)


def _text_value(text: str) -> Any:
    text = text.strip()
    if text.lower() in ("", "true"):
        return True
    if text.lower() == "false":
        return False
    return text


class FlagsDialog(QDialog):
    """Edits ``flags``; :meth:`flags` is the result once accepted. OK is off while the
    runner would refuse a value, and :attr:`error` says why in the runner's words."""

    def __init__(
        self,
        flags: Mapping[str, Any] | None,
        what: str = "",
        notes: list[str] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Speed flags" + (f" · {what}" if what else ""))
        applied, self.others = _split(flags)
        self._values_in = applied
        #: each flag of the file as loaded: ticked, and its value's text (WARMUP false, no
        #: warm-up, is a choice; another flag's false is the flag off)
        self._state_in: dict[str, tuple[bool, str]] = {}
        for k, v in applied.items():
            on = _is_on(v) or (k == "WARMUP" and v is not None)
            self._state_in[k] = (on, _value_text(v) if on and k in CHOICES else "")

        title = QLabel(f"Optimisation flags of {what}" if what else "Optimisation flags")
        title.setObjectName("sectionTitle")
        title.setWordWrap(True)
        intro = QLabel(
            "Each flag keeps the outputs of the plain path up to floating-point noise. The "
            "Benchmark page measures them against the plain path (Compare)."
        )
        intro.setObjectName("muted")
        intro.setWordWrap(True)
        self.boxes: dict[str, QCheckBox] = {}
        self.values: dict[str, QComboBox] = {}
        grid = QGridLayout()
        grid.setHorizontalSpacing(12)
        grid.setColumnStretch(2, 1)
        for row, (name, what_it_does) in enumerate(FLAGS.items()):
            box = QCheckBox(name)
            box.setToolTip(what_it_does)
            box.setChecked(self._state_in.get(name, (False, ""))[0])
            grid.addWidget(box, row, 0)
            self.boxes[name] = box
            if name in CHOICES:
                combo = QComboBox()
                combo.setEditable(True)
                combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
                combo.addItems(list(CHOICES[name]))
                combo.setMinimumWidth(170)
                combo.setToolTip(what_it_does)
                if (line := combo.lineEdit()) is not None:
                    line.setPlaceholderText(PLACEHOLDERS.get(name, ""))
                combo.setCurrentText(self._state_in.get(name, (False, ""))[1])
                combo.editTextChanged.connect(lambda text, n=name: self._on_value_edited(n, text))
                grid.addWidget(combo, row, 1)
                self.values[name] = combo
            help_text = QLabel(what_it_does)
            help_text.setObjectName("muted")
            help_text.setWordWrap(True)
            help_text.setFixedWidth(HELP_WIDTH)  # wrapped labels in a grid: their height
            help_text.ensurePolished()  # set by hand, in the style sheet's font
            help_text.setMinimumHeight(help_text.heightForWidth(HELP_WIDTH))
            grid.addWidget(help_text, row, 2)
            box.toggled.connect(lambda on, n=name: self._on_box_toggled(n, on))

        self.kept = QLabel(
            "Kept in the file as they are:\n"
            + "\n".join(f"• {_part(k, v)}: {_why_not(k)}" for k, v in self.others.items())
        )
        self.kept.setWordWrap(True)
        self.kept.setVisible(bool(self.others))
        self.notes = QLabel("\n".join(notes or []))
        self.notes.setObjectName("muted")
        self.notes.setWordWrap(True)
        self.notes.setVisible(bool(notes))
        self.error = QLabel()
        self.error.setObjectName("formError")
        self.error.setWordWrap(True)
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error.hide()
        when = QLabel(
            "Saved in aiModels.json when you press Save; the flags apply when the node starts "
            "(restart it if it is running)."
        )
        when.setObjectName("muted")
        when.setWordWrap(True)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        assert isinstance(ok, QPushButton)
        ok.setText("Save")
        ok.setObjectName("primary")
        self.ok_button = ok
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(intro)
        layout.addLayout(grid)
        layout.addWidget(self.kept)
        layout.addWidget(self.notes)
        layout.addWidget(self.error)
        layout.addWidget(when)
        layout.addWidget(self.buttons)
        self._check()

    # ----------------------------------------------------------------- the result
    def applied(self) -> dict[str, Any]:
        """The ticked flags Orchard applies; a flag left as it was keeps the file's value."""
        out: dict[str, Any] = {}
        order = [*self._values_in, *(n for n in FLAGS if n not in self._values_in)]
        for name in order:
            on = self.boxes[name].isChecked()
            combo = self.values.get(name)
            text = combo.currentText().strip() if combo is not None else ""
            if self._state_in.get(name) == (on, text):
                out[name] = self._values_in[name]  # untouched: as the file has it
            elif on:
                out[name] = _text_value(text)
        return out

    def flags(self) -> dict[str, Any] | None:
        """The entry's new ``optimization_flags`` (None: none), the others kept as they are."""
        return with_flags(self.others, self.applied())

    def problem(self) -> str:
        """Why the runner would refuse the flags ("" when it would not), in its words."""
        ignored = {k: v for k, v in self.others.items() if k.upper() in IGNORED_FLAGS}
        try:
            parse({**self.applied(), **ignored})
        except BadRequest as exc:
            return exc.msg
        return ""

    # ----------------------------------------------------------------- edits
    def _on_box_toggled(self, name: str, on: bool) -> None:
        combo = self.values.get(name)
        if on and combo is not None and name in NEEDS_VALUE and not combo.currentText().strip():
            combo.setCurrentText(CHOICES[name][0])
        self._check()

    def _on_value_edited(self, name: str, text: str) -> None:
        if text.strip() and not self.boxes[name].isChecked():
            self.boxes[name].setChecked(True)  # a value typed: the flag is wanted
        self._check()

    def _check(self) -> None:
        problem = self.problem()
        self.error.setText(problem)
        self.error.setVisible(bool(problem))
        self.ok_button.setEnabled(not problem)
