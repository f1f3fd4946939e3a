from __future__ import annotations

import time

from pytestqt.qtbot import QtBot

from core import events as ev
from core.store import JobRecord, JobState
from widgets import job_list
from widgets.job_list import COLUMNS, JobList


def col(name: str) -> int:
    return COLUMNS.index(name)


def test_a_job_goes_through_its_states(qtbot: QtBot) -> None:
    bus = ev.EventBus()
    jobs = JobList(bus)
    qtbot.addWidget(jobs)
    bus.emit(ev.JobQueued("j1", "text-to-image", "stabilityai/sdxl-turbo", 1))
    assert jobs.cell_text(0, col("State")) == "queued"
    assert jobs.cell_text(0, col("Model")) == "stabilityai/sdxl-turbo"
    bus.emit(ev.JobAssigned("j1", "runner-gpu0", 0))
    bus.emit(ev.JobStarted("j1"))
    bus.emit(ev.JobProgress("j1", 3, 8))
    assert jobs.cell_text(0, col("Device")) == "GPU 0"
    assert jobs.cell_text(0, col("State")) == "running"
    assert jobs.cell_text(0, col("Step")) == "3/8"
    bus.emit(ev.JobFinished("j1", ("/o/j1-0.png",), 2.5, 262144, "1250000000000"))
    assert jobs.cell_text(0, col("State")) == "done"
    assert jobs.cell_text(0, col("Step")) == "8/8"
    assert jobs.cell_text(0, col("Duration")) == "2.50 s"
    assert jobs.cell_text(0, col("Fee")) == "1,250.0 gwei"
    assert jobs.row("j1").outputs == ("/o/j1-0.png",)


def test_newest_first_failures_and_cpu(qtbot: QtBot) -> None:
    bus = ev.EventBus()
    jobs = JobList(bus)
    qtbot.addWidget(jobs)
    bus.emit(ev.JobQueued("a", "text-to-image", "m", 1))
    bus.emit(ev.JobQueued("b", "image-to-video", "v", 1))
    bus.emit(ev.JobAssigned("b", "runner-cpu0", -1))
    bus.emit(ev.JobFailed("b", 503, "insufficient capacity"))
    assert [r.job_id for r in jobs.rows()] == ["b", "a"]
    assert jobs.cell_text(0, col("Device")) == "CPU"
    assert jobs.cell_text(0, col("State")) == "failed"
    assert jobs.row("b").error == "insufficient capacity (HTTP 503)"
    bus.emit(ev.JobProgress("zzz", 1, 2))  # a job it never saw queued: ignored


def test_history_from_the_store(qtbot: QtBot) -> None:
    jobs = JobList(ev.EventBus())
    qtbot.addWidget(jobs)
    now = time.time()
    records = [
        JobRecord(
            "old",
            "text-to-image",
            "m",
            JobState.DONE,
            created_at=now - 60,
            finished_at=now - 58,
            gpu=1,
            request={"num_inference_steps": 4},
            outputs=("/o/old-0.png",),
            fee="42",
        ),
        JobRecord("gone", "image-to-video", "v", JobState.INTERRUPTED, created_at=now - 30),
    ]
    jobs.add_records(records)
    assert [r.job_id for r in jobs.rows()] == ["gone", "old"]
    assert jobs.cell_text(1, col("Step")) == "4/4"
    assert jobs.cell_text(1, col("Duration")) == "2.00 s"
    assert jobs.cell_text(1, col("Fee")) == "42 wei"
    assert jobs.cell_text(0, col("State")) == "interrupted"
    with qtbot.waitSignal(jobs.job_selected) as got:
        jobs.select("old")
    assert got.args == ["old"]


def test_the_list_is_bounded(qtbot: QtBot, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(job_list, "MAX_ROWS", 5)
    bus = ev.EventBus()
    jobs = JobList(bus)
    qtbot.addWidget(jobs)
    for i in range(8):
        bus.emit(ev.JobQueued(f"j{i}", "text-to-image", "m", 1))
    assert [r.job_id for r in jobs.rows()] == ["j7", "j6", "j5", "j4", "j3"]
    assert jobs.model.rowCount() == 5
