"""Jobs as they happen (from the event bus) and recent history (from the job store)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView, QVBoxLayout, QWidget

from core import events as ev
from core.store import JobRecord
from widgets._format import fmt_duration, fmt_wei
from widgets._subscriptions import subscribe

#: Rows kept; the oldest go first.
MAX_ROWS = 500

COLUMNS = ("Started", "Capability", "Model", "Device", "State", "Step", "Duration", "Fee")
_STATE_COLORS = {
    "queued": "#8a94a3",
    "running": "#1565c0",
    "done": "#2e7d32",
    "failed": "#c62828",
    "interrupted": "#e65100",
}


@dataclass
class JobRow:
    job_id: str
    capability: str
    model_id: str
    created_at: float
    state: str = "queued"
    gpu: int | None = None
    runner_id: str | None = None
    step: int = 0
    steps: int = 0
    duration_s: float | None = None
    fee: str = "0"
    pixels: int = 0
    outputs: tuple[str, ...] = ()
    error: str = ""
    request: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> str:
        if self.gpu is None:
            return self.runner_id or "—"
        return "CPU" if self.gpu < 0 else f"GPU {self.gpu}"

    @property
    def step_text(self) -> str:
        if not self.steps:
            return "—"
        return f"{self.step}/{self.steps}"

    def duration(self, now: float) -> float | None:
        if self.duration_s is not None:
            return self.duration_s
        if self.state in ("queued", "running"):
            return max(0.0, now - self.created_at)
        return None

    @classmethod
    def from_record(cls, r: JobRecord) -> JobRow:
        end = r.finished_at
        steps = int(r.request.get("num_inference_steps") or 0)
        return cls(
            job_id=r.job_id,
            capability=r.capability,
            model_id=r.model_id,
            created_at=r.created_at,
            state=str(r.state),
            gpu=r.gpu,
            runner_id=r.runner_id,
            step=steps if str(r.state) == "done" else 0,
            steps=steps,
            duration_s=None if end is None else end - r.created_at,
            fee=r.fee,
            pixels=r.pixels,
            outputs=tuple(r.outputs),
            error=r.error or "",
            request=dict(r.request),
        )


class _JobModel(QAbstractTableModel):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[JobRow] = []  # newest first
        self.by_id: dict[str, JobRow] = {}

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = 0) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def text(self, row: JobRow, column: int, now: float) -> str:
        if column == 0:
            return time.strftime("%H:%M:%S", time.localtime(row.created_at))
        if column == 1:
            return row.capability
        if column == 2:
            return row.model_id
        if column == 3:
            return row.device
        if column == 4:
            return row.state
        if column == 5:
            return row.step_text
        if column == 6:
            return fmt_duration(row.duration(now))
        return fmt_wei(row.fee)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = 0) -> Any:
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return self.text(row, index.column(), time.time())
        if role == Qt.ItemDataRole.ForegroundRole and index.column() == 4:
            return QColor(_STATE_COLORS.get(row.state, "#1f2933"))
        if role == Qt.ItemDataRole.ToolTipRole:
            return row.error or row.job_id
        if role == Qt.ItemDataRole.UserRole:
            return row.job_id
        return None

    def upsert(self, row: JobRow) -> None:
        if row.job_id in self.by_id:
            self.changed(row.job_id)
            return
        self.beginInsertRows(QModelIndex(), 0, 0)
        self.rows.insert(0, row)
        self.by_id[row.job_id] = row
        self.endInsertRows()
        if len(self.rows) > MAX_ROWS:
            last = len(self.rows) - 1
            self.beginRemoveRows(QModelIndex(), last, last)
            gone = self.rows.pop()
            self.by_id.pop(gone.job_id, None)
            self.endRemoveRows()

    def changed(self, job_id: str, first: int = 0, last: int = len(COLUMNS) - 1) -> None:
        row = self.by_id.get(job_id)
        if row is None:
            return
        i = self.rows.index(row)
        self.dataChanged.emit(self.index(i, first), self.index(i, last))


class JobList(QWidget):
    """A live table of jobs from ``bus`` (JobQueued ... JobFinished/JobFailed).

    :meth:`add_records` adds history from the job store. ``job_selected(job_id)`` fires when
    the operator picks a row.
    """

    job_selected = Signal(str)

    def __init__(self, bus: ev.EventBus, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bus = bus
        self.model = _JobModel()
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        header.setMinimumSectionSize(60)
        self.table.selectionModel().currentRowChanged.connect(self._on_current_row_changed)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table)
        self._ticker = QTimer(self)
        self._ticker.setInterval(1000)
        self._ticker.timeout.connect(self._on_tick)
        subscribe(
            self,
            bus,
            self._on_job_event,
            ev.JobQueued,
            ev.JobAssigned,
            ev.JobStarted,
            ev.JobProgress,
            ev.JobFinished,
            ev.JobFailed,
        )

    # ----------------------------------------------------------------- queries
    def row(self, job_id: str) -> JobRow | None:
        return self.model.by_id.get(job_id)

    def rows(self) -> list[JobRow]:
        """Newest first."""
        return list(self.model.rows)

    def cell_text(self, row: int, column: int) -> str:
        return self.model.text(self.model.rows[row], column, time.time())

    # ----------------------------------------------------------------- state in
    def add_records(self, records: list[JobRecord]) -> None:
        """History from the store, any order; jobs already shown are left as they are."""
        for r in sorted(records, key=lambda r: r.created_at):
            if r.job_id not in self.model.by_id:
                self.model.upsert(JobRow.from_record(r))
        self._update_ticker()

    def select(self, job_id: str) -> None:
        row = self.model.by_id.get(job_id)
        if row is not None:
            self.table.selectRow(self.model.rows.index(row))

    # ----------------------------------------------------------------- slots
    def _on_job_event(self, event: ev.Event) -> None:
        m = self.model
        if isinstance(event, ev.JobQueued):
            m.upsert(JobRow(event.job_id, event.capability, event.model_id, event.at))
            self._update_ticker()
            return
        row = m.by_id.get(getattr(event, "job_id", ""))
        if row is None:
            return
        if isinstance(event, ev.JobAssigned):
            row.gpu, row.runner_id = event.gpu, event.runner_id
        elif isinstance(event, ev.JobStarted):
            row.state = "running"
        elif isinstance(event, ev.JobProgress):
            row.state = "running"
            row.step, row.steps = event.step, event.steps
            m.changed(row.job_id, 4, 6)
            return
        elif isinstance(event, ev.JobFinished):
            row.state = "done"
            row.step = row.steps or row.step
            row.duration_s = event.duration_s
            row.fee, row.pixels, row.outputs = event.fee, event.pixels, event.outputs
        elif isinstance(event, ev.JobFailed):
            row.state = "failed"
            row.duration_s = event.at - row.created_at
            row.error = f"{event.reason} (HTTP {event.status})"
        m.changed(row.job_id)
        self._update_ticker()

    def _on_current_row_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if current.isValid():
            self.job_selected.emit(self.model.rows[current.row()].job_id)

    def _on_tick(self) -> None:
        for row in self.model.rows:
            if row.state in ("queued", "running"):
                self.model.changed(row.job_id, 6, 6)
        self._update_ticker()

    def _update_ticker(self) -> None:
        live = any(r.state in ("queued", "running") for r in self.model.rows[:50])
        if live and not self._ticker.isActive():
            self._ticker.start()
        elif not live and self._ticker.isActive():
            self._ticker.stop()
