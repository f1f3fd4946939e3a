"""Well-known models: which are on disk, downloading them, adding them to the node."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from widgets._format import fmt_bytes, fmt_speed

COLUMNS = ("Model", "Pipelines", "Family", "Download", "On disk", "")


@dataclass(frozen=True)
class CatalogueRow:
    """A catalogue model and whether its weights are on disk (``on_disk`` bytes, or None)."""

    repo_id: str
    name: str
    pipelines: tuple[str, ...]
    family: str
    size_bytes: int
    on_disk: int | None = None
    demo: bool = False
    notes: str = ""


class _Actions(QWidget):
    """The last cell of a row: Download (or Make) / progress + Cancel, and Add to node."""

    def __init__(self, owner: ModelCatalogue, row: CatalogueRow) -> None:
        super().__init__()
        self.repo_id = row.repo_id
        self.on_disk = row.on_disk is not None
        self.download = QPushButton("Make" if row.demo else "Download")
        self.download.setToolTip(
            "Build the tiny demo model locally (noise output)"
            if row.demo
            else "Download the fp16 weights from the Hugging Face Hub into the models directory"
        )
        self.download.clicked.connect(lambda: owner.download_requested.emit(row.repo_id))
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setMinimumWidth(150)
        self.progress.hide()
        self.cancel = QPushButton("Cancel")
        self.cancel.clicked.connect(lambda: owner.cancel_requested.emit(row.repo_id))
        self.cancel.hide()
        self.add = QToolButton()
        self.add.setText("Add to node")
        self.add.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.add)
        for pipeline in row.pipelines:
            action = menu.addAction(f"as {pipeline}")
            action.triggered.connect(
                lambda _=False, p=pipeline: owner.add_requested.emit(row.repo_id, p)
            )
        self.add.setMenu(menu)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 1, 4, 1)
        layout.addStretch(1)
        layout.addWidget(self.download)
        layout.addWidget(self.progress)
        layout.addWidget(self.cancel)
        layout.addWidget(self.add)

    def downloading(self, on: bool) -> None:
        self.download.setVisible(not on and not self.on_disk)
        self.progress.setVisible(on)
        self.cancel.setVisible(on)


class ModelCatalogue(QWidget):
    """The catalogue as rows (:meth:`set_rows`) with download state per repo id.

    ``download_requested(repo_id)``, ``cancel_requested(repo_id)``,
    ``add_requested(repo_id, pipeline)`` and ``refresh_requested()`` ask the app to act.
    """

    download_requested = Signal(str)
    cancel_requested = Signal(str)
    add_requested = Signal(str, str)
    refresh_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: dict[str, CatalogueRow] = {}
        self.row_actions: dict[str, _Actions] = {}
        self.downloading: set[str] = set()
        self.where = QLabel()
        self.where.setObjectName("muted")
        self.where.setWordWrap(True)
        self.refresh = QPushButton("Refresh")
        self.refresh.setToolTip("Look at the models directory again")
        self.refresh.clicked.connect(self.refresh_requested)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QTableWidget.SelectionMode.NoSelection)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.message = QLabel()
        self.message.setObjectName("formError")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message.hide()
        top = QHBoxLayout()
        top.addWidget(self.where, 1)
        top.addWidget(self.refresh)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.message)

    # ----------------------------------------------------------------- state in
    def set_models_dir(self, path: str) -> None:
        self.where.setText(
            f"Models directory: {path} (Hugging Face cache layout; other tools can share it)"
        )

    def set_rows(self, rows: list[CatalogueRow]) -> None:
        self.rows = {r.repo_id: r for r in rows}
        self.row_actions.clear()
        self.table.setRowCount(len(rows))
        for i, r in enumerate(rows):
            name = QTableWidgetItem(f"{r.name}\n{r.repo_id}")
            name.setToolTip(r.notes or r.repo_id)
            self.table.setItem(i, 0, name)
            self.table.setItem(i, 1, QTableWidgetItem("\n".join(r.pipelines)))
            self.table.setItem(i, 2, QTableWidgetItem(r.family))
            size = "built locally" if r.demo else f"≈ {fmt_bytes(r.size_bytes)}"
            self.table.setItem(i, 3, QTableWidgetItem(size))
            self.table.setItem(i, 4, QTableWidgetItem(self._disk_text(r)))
            actions = _Actions(self, r)
            actions.downloading(r.repo_id in self.downloading)
            self.row_actions[r.repo_id] = actions
            self.table.setCellWidget(i, 5, actions)
        self.table.resizeRowsToContents()

    def set_progress(self, repo_id: str, done: int, total: int, speed: float) -> None:
        self.downloading.add(repo_id)
        a = self.row_actions.get(repo_id)
        if a is None:
            return
        a.downloading(True)
        if total > 0:
            a.progress.setRange(0, 1000)
            a.progress.setValue(int(1000 * min(done, total) / total))
            a.progress.setFormat(f"{fmt_bytes(done)} of {fmt_bytes(total)} · {fmt_speed(speed)}")
        else:
            a.progress.setRange(0, 0)  # busy: size not known yet
            a.progress.setFormat("starting…")

    def set_failed(self, repo_id: str, message: str) -> None:
        self.downloading.discard(repo_id)
        a = self.row_actions.get(repo_id)
        if a is not None:
            a.downloading(False)
        name = self.rows[repo_id].name if repo_id in self.rows else repo_id
        self.message.setText(f"{name}: {message}")
        self.message.show()

    def set_finished(self, repo_id: str, on_disk: int | None) -> None:
        self.downloading.discard(repo_id)
        self.message.hide()
        r = self.rows.get(repo_id)
        if r is None:
            return
        from dataclasses import replace

        self.rows[repo_id] = r = replace(r, on_disk=on_disk)
        i = list(self.rows).index(repo_id)
        item = self.table.item(i, 4)
        if item is not None:
            item.setText(self._disk_text(r))
        self.row_actions[repo_id].on_disk = on_disk is not None
        self.row_actions[repo_id].downloading(False)

    # ----------------------------------------------------------------- queries
    def disk_text(self, repo_id: str) -> str:
        item = self.table.item(list(self.rows).index(repo_id), 4)
        return "" if item is None else item.text()

    @staticmethod
    def _disk_text(r: CatalogueRow) -> str:
        return "not on disk" if r.on_disk is None else f"✓ {fmt_bytes(r.on_disk)}"
