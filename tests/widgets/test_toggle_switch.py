from __future__ import annotations

from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from widgets.toggle_switch import ToggleSwitch


def test_click_toggles_and_reports(qtbot: QtBot) -> None:
    switch = ToggleSwitch("Use for the node")
    qtbot.addWidget(switch)
    switch.show()
    assert switch.isCheckable() and not switch.isChecked()
    with qtbot.waitSignal(switch.toggled) as blocker:
        qtbot.mouseClick(switch, Qt.MouseButton.LeftButton)
    assert blocker.args == [True]
    assert switch.isChecked()
    assert switch.sizeHint().width() > switch.fontMetrics().horizontalAdvance("Use for the node")


def test_disabled_switch_ignores_clicks(qtbot: QtBot) -> None:
    switch = ToggleSwitch()
    qtbot.addWidget(switch)
    switch.setChecked(True)
    switch.setEnabled(False)
    with qtbot.assertNotEmitted(switch.toggled):
        qtbot.mouseClick(switch, Qt.MouseButton.LeftButton)
    assert switch.isChecked()
    assert not switch.grab().isNull()  # paints in every state
