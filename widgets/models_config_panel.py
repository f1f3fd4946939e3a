"""The node's aiModels.json: pipelines and models, warm or cold, GPU pins, speed flags, and
VRAM fit."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QMouseEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from core.config import ConfigError, ModelEntry, ModelsConfig
from widgets._format import fmt_bytes
from widgets.flags_dialog import FlagsDialog, describe, summary

COLUMNS = (
    "Pipeline",
    "Model",
    "Warm",
    "GPU",
    "Speed",
    "Memory need",
    "Fit before warming",
    "State",
)
SPEED = COLUMNS.index("Speed")
#: Pipelines whose entries of one model share its weights (and so its flags).
SHARED_WEIGHTS = frozenset({"text-to-image", "image-to-image"})
FIT_COLORS = {"fits": "#2e7d32", "tight": "#e65100", "does_not_fit": "#c62828"}
ANY_GPU = "Any GPU"
#: The Speed column's edit button: small, so the model ids keep their room.
EDIT_STYLE = "QToolButton { padding: 0px 5px; }"


@dataclass(frozen=True)
class Need:
    """A model's memory need: ``measured`` after a runner warmed it, else estimated."""

    bytes: int | None
    measured: bool = False
    note: str = ""

    def text(self) -> str:
        if self.bytes is None:
            return self.note or "unknown"
        how = "measured" if self.measured else "estimate"
        note = f", {self.note}" if self.note else ""
        return f"{fmt_bytes(self.bytes)} ({how}{note})"


@dataclass(frozen=True)
class FitInfo:
    """``fit`` is ``fits``, ``tight`` or ``does_not_fit``; ``text`` is describe_fit's."""

    fit: str
    text: str


def _pins_text(gpus: tuple[int, ...] | None) -> str:
    return ",".join(str(g) for g in gpus) if gpus else ""


class _FlagsLabel(QLabel):
    """The Speed cell's text; a double click edits the flags, as ✎ does."""

    def __init__(self, text: str, on_double_click: Callable[[], object]) -> None:
        super().__init__(text)
        self._on_double_click = on_double_click

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        self._on_double_click()
        event.accept()


class ModelsConfigPanel(QWidget):
    """Shows a :class:`~core.config.ModelsConfig` and edits it: warm on/off, GPU pin, speed
    flags (:class:`~widgets.flags_dialog.FlagsDialog`), remove. Each edit that the config
    accepts is emitted as ``config_edited(new_config)``; one it refuses is shown inline.
    Needs, fits and states come from the app."""

    config_edited = Signal(object)
    import_requested = Signal(str)
    export_requested = Signal(str)

    def __init__(self, config: ModelsConfig, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.config = config
        self.devices: list[tuple[int, str]] = []
        self.needs: dict[tuple[str, str], Need] = {}
        self.fits: dict[tuple[str, str], FitInfo] = {}
        self.states: dict[tuple[str, str], str] = {}
        self.flags_dialog: FlagsDialog | None = None
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        speed = self.table.horizontalHeaderItem(SPEED)
        assert speed is not None
        speed.setToolTip(
            "Optimisation flags (optimization_flags): plain, or the flags the runner applies. "
            "✎ (or a double click) edits them; they apply when the node starts."
        )
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self._refit = QTimer(self)  # once the columns have their new widths: the model id
        self._refit.setSingleShot(True)  # rewraps, and the rows take its height
        self._refit.setInterval(0)
        self._refit.timeout.connect(self._fit_rows)
        header.sectionResized.connect(lambda *_: self._refit.start())
        self.empty = QLabel(
            "No models configured. Add one from the catalogue below (Add to node), or "
            "import an aiModels.json."
        )
        self.empty.setObjectName("emptyState")
        self.empty.setWordWrap(True)
        self.plan = QLabel()
        self.plan.setObjectName("planVerdict")
        self.plan.setWordWrap(True)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.hide()
        self.source = QLabel()
        self.source.setObjectName("muted")
        self.source.setWordWrap(True)
        self.remove = QPushButton("Remove")
        self.remove.clicked.connect(self._on_remove_clicked)
        self.import_button = QPushButton("Import aiModels.json…")
        self.import_button.clicked.connect(self._on_import_clicked)
        self.export_button = QPushButton("Export…")
        self.export_button.clicked.connect(self._on_export_clicked)
        buttons = QHBoxLayout()
        buttons.addWidget(self.source, 1)
        buttons.addWidget(self.remove)
        buttons.addWidget(self.import_button)
        buttons.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.empty)
        layout.addWidget(self.table)
        layout.addWidget(self.plan)
        layout.addWidget(self.message)
        layout.addLayout(buttons)
        self._fill()

    # ----------------------------------------------------------------- state in
    def set_config(self, config: ModelsConfig) -> None:
        self.config = config
        self._fill()

    def set_devices(self, devices: list[tuple[int, str]]) -> None:
        """GPUs a model may be pinned to, as ``(index, label)``; CPU runners are negative."""
        self.devices = list(devices)
        self._fill()

    def set_estimates(
        self,
        needs: dict[tuple[str, str], Need],
        fits: dict[tuple[str, str], FitInfo],
        plan_ok: bool,
        plan_lines: list[str],
    ) -> None:
        self.needs, self.fits = dict(needs), dict(fits)
        self.plan.setText("\n".join(plan_lines))
        self.plan.setProperty("ok", plan_ok)
        self.plan.style().unpolish(self.plan)
        self.plan.style().polish(self.plan)
        self._fill()

    def set_states(self, states: dict[tuple[str, str], str]) -> None:
        self.states = dict(states)
        self._fill()

    def show_message(self, text: str, error: bool = False) -> None:
        self.message.setText(text)
        self.message.setObjectName("formError" if error else "muted")
        self.message.style().unpolish(self.message)
        self.message.style().polish(self.message)
        self.message.setVisible(bool(text))

    # ----------------------------------------------------------------- queries
    def cell_text(self, row: int, column: int) -> str:
        item = self.table.item(row, column)
        if item is not None:
            return item.text()
        w = self.table.cellWidget(row, column)
        if isinstance(w, QComboBox):
            return w.currentText()
        if isinstance(w, QWidget) and (label := w.findChild(QLabel)) is not None:
            return label.text()
        if isinstance(w, QWidget):
            box = w.findChild(QCheckBox)
            return "warm" if box is not None and box.isChecked() else "cold"
        return ""

    def warm_box(self, row: int) -> QCheckBox:
        box = self.table.cellWidget(row, 2).findChild(QCheckBox)
        assert box is not None
        return box

    def gpu_combo(self, row: int) -> QComboBox:
        combo = self.table.cellWidget(row, 3)
        assert isinstance(combo, QComboBox)
        return combo

    def flags_button(self, row: int) -> QToolButton:
        button = self.table.cellWidget(row, SPEED).findChild(QToolButton)
        assert button is not None
        return button

    # ----------------------------------------------------------------- drawing
    def _fill(self) -> None:
        entries = self.config.entries
        self.table.setRowCount(len(entries))
        gpus = [(i, label) for i, label in self.devices if i >= 0]
        for row, e in enumerate(entries):
            editable = e.supported and e.gateway_key is None
            self.table.setItem(row, 0, QTableWidgetItem(e.pipeline))
            model = QTableWidgetItem(e.model_id)
            model.setToolTip(e.model_id)
            self.table.setItem(row, 1, model)
            box = QCheckBox()
            box.setChecked(e.warm)
            box.setEnabled(editable)
            box.setToolTip("Warm: loaded at start and never evicted; gateways prefer it")
            box.toggled.connect(lambda on, r=row: self._on_warm_toggled(r, on))
            holder = QWidget()
            hl = QHBoxLayout(holder)
            hl.setContentsMargins(0, 0, 0, 0)
            hl.setAlignment(Qt.AlignmentFlag.AlignCenter)
            hl.addWidget(box)
            self.table.setCellWidget(row, 2, holder)
            combo = QComboBox()
            # item data are strings ("" any GPU, "0,1" pins): PySide6 returns a stored None
            # without a reference, which corrupts None's refcount on Python 3.11
            if gpus:
                combo.addItem(ANY_GPU, "")
                for index, label in gpus:
                    combo.addItem(label, str(index))
                wanted = _pins_text(e.gpus)
                if e.gpus and wanted not in [str(i) for i, _ in gpus]:
                    combo.addItem(", ".join(f"GPU {g}" for g in e.gpus), wanted)
                found = [i for i in range(combo.count()) if combo.itemData(i) == wanted]
                combo.setCurrentIndex(found[0] if found else 0)
                combo.setEnabled(editable and not e.url)
            else:
                combo.addItem("CPU" if self.devices else ANY_GPU, "")
                combo.setEnabled(False)
            combo.currentIndexChanged.connect(lambda _i, r=row, c=combo: self._on_gpu_changed(r, c))
            self.table.setCellWidget(row, 3, combo)
            self.table.setCellWidget(row, SPEED, self._speed_cell(row, e, editable))
            need = self.needs.get(e.key)
            self.table.setItem(row, SPEED + 1, QTableWidgetItem(need.text() if need else "—"))
            fit = self.fits.get(e.key)
            fit_item = QTableWidgetItem(fit.text if fit else "—")
            if fit:
                fit_item.setForeground(QColor(FIT_COLORS.get(fit.fit, "#1f2933")))
            self.table.setItem(row, SPEED + 2, fit_item)
            self.table.setItem(row, SPEED + 3, QTableWidgetItem(self._state(e)))
        self._fit_rows()
        self.table.setVisible(bool(entries))
        self.empty.setVisible(not entries)
        self.remove.setEnabled(bool(entries))
        self.export_button.setEnabled(bool(entries))
        self.source.setText(f"File: {self.config.source}")

    def _fit_rows(self) -> None:
        """Rows as tall as their text at the columns' widths now (a model id wraps in a
        narrow window), and the table as tall as its rows."""
        self.table.resizeRowsToContents()
        rows = sum(self.table.rowHeight(i) for i in range(self.table.rowCount()))
        height = self.table.horizontalHeader().sizeHint().height() + rows + 6
        self.table.setFixedHeight(min(max(height, 90), 320))

    def _speed_cell(self, row: int, e: ModelEntry, editable: bool) -> QWidget:
        """The flags, compactly (all of them in the tooltip), and Edit…."""
        label = _FlagsLabel(summary(e.optimization_flags), lambda: self.edit_flags(row))
        label.setToolTip(describe(e.optimization_flags))
        button = QToolButton()
        button.setText("✎")
        button.setAccessibleName("Edit speed flags")
        button.setStyleSheet(EDIT_STYLE)
        button.setEnabled(editable)
        button.setToolTip(
            "Edit the speed flags of this model (they apply when the node starts)"
            if editable
            else "Kept as the file has it (a pipeline Orchard does not run, or a gateway's price)"
        )
        button.clicked.connect(lambda _=False, r=row: self.edit_flags(r))
        holder = QWidget()
        hl = QHBoxLayout(holder)
        hl.setContentsMargins(4, 0, 4, 0)
        hl.setSpacing(4)
        hl.addWidget(label, 1)
        hl.addWidget(button)
        return holder

    def _state(self, e: ModelEntry) -> str:
        if not e.supported:
            return "kept in the file; Orchard does not run this pipeline"
        if e.gateway_key is not None:
            return f"price for gateway {e.gateway}"
        if e.url:
            return f"external runner {e.url}"
        return self.states.get(e.key, "warm at start" if e.warm else "cold: loads on demand")

    # ----------------------------------------------------------------- edits
    def _replace(self, row: int, entry: ModelEntry | None) -> bool:
        entries = list(self.config.entries)
        if entry is None:
            del entries[row]
        else:
            entries[row] = entry
        try:
            new = ModelsConfig.from_entries(entries, source=self.config.source)
        except ConfigError as exc:
            self.show_message(exc.msg, error=True)
            self._fill()
            return False
        self.show_message("")
        self.config = new
        self._fill()
        self.config_edited.emit(new)
        return True

    def _on_warm_toggled(self, row: int, on: bool) -> None:
        self._replace(row, dataclasses.replace(self.config.entries[row], warm=on))

    def _on_gpu_changed(self, row: int, combo: QComboBox) -> None:
        text = str(combo.currentData() or "")
        pins = tuple(int(g) for g in text.split(",")) if text else None
        self._replace(row, dataclasses.replace(self.config.entries[row], gpus=pins))

    def edit_flags(self, row: int) -> FlagsDialog | None:
        """Open the flags of ``row``'s entry in a dialog (window-modal); Save edits the
        config. Returns the dialog, or None for an entry that is kept as it is."""
        e = self.config.entries[row]
        if not (e.supported and e.gateway_key is None):
            return None
        notes = []
        if not e.warm:
            notes.append(
                "This model is cold: Orchard applies its flags whenever it loads it, but "
                "go-livepeer applies them only to warm models."
            )
        if e.pipeline in SHARED_WEIGHTS and any(
            o.model_id == e.model_id and o.pipeline in SHARED_WEIGHTS - {e.pipeline}
            for o in self.config.entries
        ):
            notes.append(
                "Text-to-image and image-to-image of one model share its weights: the flags of "
                "the one loaded first apply to both."
            )
        dialog = FlagsDialog(
            e.optimization_flags, f"{e.model_id} ({e.pipeline})", notes, parent=self
        )
        dialog.accepted.connect(lambda: self._on_flags_accepted(e, dialog))
        dialog.finished.connect(lambda _result: self._on_flags_finished(dialog))
        self.flags_dialog = dialog
        dialog.open()
        return dialog

    def _on_flags_accepted(self, entry: ModelEntry, dialog: FlagsDialog) -> None:
        flags = dialog.flags()
        rows = [
            i
            for i, e in enumerate(self.config.entries)
            if e.key == entry.key and e.gateway_key is None
        ]
        if not rows:  # the entry went while the dialog was open
            self.show_message(f"{entry.model_id} is no longer configured.", error=True)
            return
        new = dataclasses.replace(self.config.entries[rows[0]], optimization_flags=flags)
        if self._replace(rows[0], new):
            self.show_message(
                f"Speed flags of {entry.model_id} ({entry.pipeline}): {summary(flags)}. They "
                "apply when the node starts (restart it if it is running)."
            )

    def _on_flags_finished(self, dialog: FlagsDialog) -> None:
        if self.flags_dialog is dialog:
            self.flags_dialog = None
        dialog.deleteLater()

    def _on_remove_clicked(self) -> None:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        if rows:
            self._replace(rows[0], None)
        else:
            self.show_message("Select a model in the table first, then press Remove.")

    def _on_import_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Import aiModels.json", "", "aiModels.json (*.json);;All files (*)"
        )
        if path:
            self.import_requested.emit(path)

    def _on_export_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export aiModels.json", "aiModels.json")
        if path:
            self.export_requested.emit(path)
