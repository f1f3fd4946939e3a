from __future__ import annotations

from pytestqt.qtbot import QtBot

from core.doctor import Check, Status
from widgets.doctor_view import EMPTY_TEXT, STATUS_COLORS, DoctorView

CHECKS = [
    Check("driver", Status.PASS, "NVIDIA driver 570.86"),
    Check("disk", Status.WARN, "12.0 GiB free", "free some space for models"),
    Check("port 8935", Status.FAIL, "in use by another program", "choose another port"),
]


def test_empty_until_checks_arrive(qtbot: QtBot) -> None:
    view = DoctorView()
    qtbot.addWidget(view)
    assert view.empty.text() == EMPTY_TEXT
    assert not view.empty.isHidden() and view.table.isHidden()
    view.set_checks(CHECKS)
    assert view.empty.isHidden() and not view.table.isHidden()
    view.set_checks([])
    assert not view.empty.isHidden()


def test_rows_show_each_check_with_its_status_colour(qtbot: QtBot) -> None:
    view = DoctorView()
    qtbot.addWidget(view)
    view.set_checks(CHECKS)
    assert view.table.rowCount() == 3
    assert view.row_texts(0) == ("driver", "✔ pass", "NVIDIA driver 570.86", "—")
    assert view.row_texts(1)[0] == "disk" and "warn" in view.row_texts(1)[1]
    assert view.row_texts(1)[3] == "free some space for models"
    assert "fail" in view.row_texts(2)[1]
    assert view.status_color(0) == STATUS_COLORS[Status.PASS]
    assert view.status_color(1) == STATUS_COLORS[Status.WARN]
    assert view.status_color(2) == STATUS_COLORS[Status.FAIL]
    assert view.summary.text() == "1 passed, 1 warnings, 1 failed"


def test_run_button_asks_and_shows_it_is_busy(qtbot: QtBot) -> None:
    view = DoctorView()
    qtbot.addWidget(view)
    with qtbot.waitSignal(view.run_requested, timeout=1000):
        view.run_button.click()
    view.set_running(True)
    assert not view.run_button.isEnabled()
    view.set_checks(CHECKS)
    assert view.run_button.isEnabled() and view.run_button.text() == "Run checks"
