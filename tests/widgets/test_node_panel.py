from __future__ import annotations

from typing import Any

from pytestqt.qtbot import QtBot

from core import events as ev
from widgets.node_panel import NodePanel, action_for

INFO: dict[str, Any] = {
    "state": "running",
    "capabilities": {
        "per_capability": {
            "27": {
                "name": "text-to-image",
                "models": {
                    "stabilityai/sdxl-turbo": {
                        "warm": True,
                        "capacity": 2,
                        "capacity_in_use": 1,
                        "loaded": True,
                        "gpus": [0],
                    }
                },
            },
            "29": {
                "name": "image-to-video",
                "models": {
                    "stabilityai/svd": {"warm": False, "capacity": 1, "loaded": False, "gpus": []}
                },
            },
        }
    },
    "capabilities_prices": [
        {
            "capability": 27,
            "constraint": "stabilityai/sdxl-turbo",
            "price_per_unit": "4768371",
            "pixels_per_unit": 1,
            "currency": "WEI",
        }
    ],
    "payment": {"free": False, "recipient": "0xabc", "ledger": "off-chain"},
    "hardware": [
        {
            "gpu": 0,
            "name": "RTX 4090",
            "memory_total": 24 * 2**30,
            "memory_free": 12 * 2**30,
            "runner": "runner-gpu0",
            "runner_state": "ready",
            "pid": 4242,
        }
    ],
}


def test_node_states_drive_the_panel(qtbot: QtBot) -> None:
    bus = ev.EventBus()
    panel = NodePanel(bus, "127.0.0.1", 8935)
    qtbot.addWidget(panel)
    assert panel.status.text() == "Stopped"
    assert panel.start_button.isEnabled() and not panel.stop_button.isEnabled()
    assert panel.offers_empty.isVisibleTo(panel) and "Start node" in panel.offers_empty.text()
    bus.emit(ev.NodeChanged("starting"))
    assert panel.status.text() == "Starting…"
    assert not panel.start_button.isEnabled() and not panel.port.isEnabled()
    bus.emit(ev.RunnerChanged("runner-gpu0", "starting"))
    bus.emit(ev.RunnerChanged("runner-gpu0", "ready", "ready"))
    assert panel.runner_tree.topLevelItemCount() == 1
    assert panel.runner_tree.topLevelItem(0).text(1) == "ready"
    bus.emit(ev.NodeChanged("running", "http://127.0.0.1:8935"))
    assert panel.status.text() == "Running"
    assert panel.status_detail.text() == "Serving on http://127.0.0.1:8935"
    assert panel.stop_button.isEnabled() and not panel.host.isEnabled()


def test_capabilities_from_info(qtbot: QtBot) -> None:
    panel = NodePanel(ev.EventBus())
    qtbot.addWidget(panel)
    panel.set_info(INFO)
    top = panel.offers.topLevelItem(0)
    assert top.text(0) == "text-to-image (capability 27)"
    row = top.child(0)
    assert [row.text(i) for i in range(5)] == [
        "stabilityai/sdxl-turbo",
        "warm",
        "1 of 2 in use",
        "GPU 0",
        "4768371 wei / 1 px",
    ]
    video = panel.offers.topLevelItem(1).child(0)
    assert video.text(3) == "not loaded (cold)" and video.text(4) == "node default"
    assert "RTX 4090: 12.0 GiB free of 24.0 GiB, runner ready (pid 4242)" in panel.hardware.text()
    assert "tickets to 0xabc" in panel.payment.text()
    panel.set_info(None)
    assert panel.offers.topLevelItemCount() == 0 and not panel.offers_empty.isHidden()


def test_a_failed_start_shows_the_error_and_what_to_do(qtbot: QtBot) -> None:
    bus = ev.EventBus()
    panel = NodePanel(bus)
    qtbot.addWidget(panel)
    assert panel.error_box.isHidden()
    msg = "warm model org/x (text-to-image): model 'org/x' is not on disk (looked in: /m/org/x)"
    bus.emit(ev.NodeChanged("failed", msg))
    assert not panel.error_box.isHidden()
    assert msg in panel.error_text.text()
    assert "Download the model on the Models page" in panel.error_action.text()
    assert panel.start_button.isEnabled()
    bus.emit(ev.NodeChanged("starting"))
    assert panel.error_box.isHidden()


def test_actions_for_common_failures() -> None:
    assert "another port" in action_for("could not serve on http://127.0.0.1:8935: address in use?")
    assert "reserve" in action_for("cannot place warm model a/b (text-to-image): needs 10.4 GiB")
    assert "Free mode" in action_for("no price is set for a/b (text-to-image)")
    assert "Logs page" in action_for("runner runner-cpu0 failed to start: boom")


def test_start_asks_with_the_address_and_refuses_an_empty_one(qtbot: QtBot) -> None:
    panel = NodePanel(ev.EventBus(), "127.0.0.1", 8935)
    qtbot.addWidget(panel)
    panel.port.setValue(9001)
    with qtbot.waitSignal(panel.start_requested) as got:
        panel.start_button.click()
    assert got.args == ["127.0.0.1", 9001]
    panel.host.setText("  ")
    with qtbot.assertNotEmitted(panel.start_requested):
        panel.start_button.click()
    assert not panel.error_box.isHidden() and "address is empty" in panel.error_text.text()


def test_free_mode_switch(qtbot: QtBot) -> None:
    panel = NodePanel(ev.EventBus())
    qtbot.addWidget(panel)
    with qtbot.assertNotEmitted(panel.free_toggled):
        panel.set_free(True)
    assert "Free mode" in panel.payment.text()
    with qtbot.waitSignal(panel.free_toggled) as got:
        panel.free.setChecked(False)
    assert got.args == [False]
