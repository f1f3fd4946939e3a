from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel
from pytestqt.qtbot import QtBot

from core import config
from core.config import ModelsConfig
from widgets.models_config_panel import SPEED, FitInfo, ModelsConfigPanel, Need

TEXT = """[
  {"pipeline": "text-to-image", "model_id": "stabilityai/sdxl-turbo", "warm": true,
   "price_per_unit": 4768371,
   "optimization_flags": {"CHANNELS_LAST": true, "COMPILE": "unet", "MYSTERY": "1"}},
  {"pipeline": "image-to-video", "model_id": "stabilityai/svd", "gpus": [1]},
  {"pipeline": "upscale", "model_id": "stabilityai/stable-diffusion-x4-upscaler"}
]"""


@pytest.fixture
def cfg() -> ModelsConfig:
    return config.loads(TEXT, source="/n/aiModels.json")


@pytest.fixture
def panel(qtbot: QtBot, cfg: ModelsConfig) -> ModelsConfigPanel:
    p = ModelsConfigPanel(cfg)
    qtbot.addWidget(p)
    p.set_devices([(0, "GPU 0 (RTX 4090)"), (1, "GPU 1 (RTX 3070)")])
    return p


def test_entries_as_rows(panel: ModelsConfigPanel) -> None:
    assert panel.table.rowCount() == 3
    assert panel.cell_text(0, 1) == "stabilityai/sdxl-turbo"
    assert panel.cell_text(0, 2) == "warm" and panel.cell_text(1, 2) == "cold"
    assert panel.cell_text(0, 3) == "Any GPU"
    assert panel.cell_text(1, 3) == "GPU 1 (RTX 3070)"
    assert panel.cell_text(1, 7) == "cold: loads on demand"
    assert "Orchard does not run this pipeline" in panel.cell_text(2, 7)
    assert not panel.warm_box(2).isEnabled()
    assert panel.source.text() == "File: /n/aiModels.json"


def test_toggling_warm_edits_the_config(qtbot: QtBot, panel: ModelsConfigPanel) -> None:
    with qtbot.waitSignal(panel.config_edited) as got:
        panel.warm_box(0).setChecked(False)
    new = got.args[0]
    assert isinstance(new, ModelsConfig)
    assert [e.warm for e in new.entries] == [False, False, False]
    assert new.entries[0].price_per_unit == 4768371  # the rest of the entry is kept
    assert panel.cell_text(0, 2) == "cold"


def test_pinning_to_a_gpu(qtbot: QtBot, panel: ModelsConfigPanel) -> None:
    combo = panel.gpu_combo(0)
    with qtbot.waitSignal(panel.config_edited) as got:
        combo.setCurrentIndex(combo.findText("GPU 0 (RTX 4090)"))
    assert got.args[0].entries[0].gpus == (0,)
    combo = panel.gpu_combo(1)
    with qtbot.waitSignal(panel.config_edited) as got:
        combo.setCurrentIndex(combo.findText("Any GPU"))
    assert got.args[0].entries[1].gpus is None


def test_an_edit_the_config_refuses_is_shown_inline(qtbot: QtBot) -> None:
    # text-to-image listed twice for one model: one default entry, one for a gateway; making
    # the default cold is fine, but two default entries warm and cold at once is refused
    text = """[
      {"pipeline": "text-to-image", "model_id": "m/a", "warm": true},
      {"pipeline": "image-to-image", "model_id": "m/a", "warm": true},
      {"pipeline": "text-to-image", "model_id": "m/a", "warm": true,
       "gateway": "0x5bE44e23041E93CDF9bCd5A0968524e104e38ae1", "price_per_unit": 1}
    ]"""
    panel = ModelsConfigPanel(config.loads(text))
    qtbot.addWidget(panel)
    assert not panel.warm_box(2).isEnabled()  # a gateway's price entry
    with qtbot.assertNotEmitted(panel.config_edited):
        panel.gpu_combo(0)  # no devices: nothing to pin
    panel.set_devices([(-1, "CPU (AMD EPYC)")])
    assert panel.cell_text(0, 3) == "CPU" and not panel.gpu_combo(0).isEnabled()


def test_needs_fits_and_plan(panel: ModelsConfigPanel, cfg: ModelsConfig) -> None:
    key = cfg.entries[0].key
    vid = cfg.entries[1].key
    panel.set_estimates(
        {key: Need(int(10.4 * 2**30)), vid: Need(None, note="not on disk: download it")},
        {key: FitInfo("tight", "tight: 10.4 GiB of 11.0 GiB (0.6 GiB left) on GPU 1")},
        False,
        ["The warm models do not fit: cannot place warm model ..."],
    )
    assert panel.cell_text(0, 5) == "10.4 GiB (estimate)"
    assert panel.cell_text(1, 5) == "not on disk: download it"
    assert panel.cell_text(0, 6).startswith("tight: 10.4 GiB")
    assert panel.table.item(0, 6).foreground().color().name() == "#e65100"
    assert panel.plan.text().startswith("The warm models do not fit")
    assert panel.plan.property("ok") is False
    panel.set_states({key: "loaded on GPU 0"})
    assert panel.cell_text(0, 7) == "loaded on GPU 0"


def test_remove_needs_a_selection(qtbot: QtBot, panel: ModelsConfigPanel) -> None:
    with qtbot.assertNotEmitted(panel.config_edited):
        panel.remove.click()
    assert "Select a model" in panel.message.text()
    panel.table.selectRow(1)
    with qtbot.waitSignal(panel.config_edited) as got:
        panel.remove.click()
    assert [e.model_id for e in got.args[0].entries] == [
        "stabilityai/sdxl-turbo",
        "stabilityai/stable-diffusion-x4-upscaler",
    ]


def test_the_speed_column_shows_each_entrys_flags(panel: ModelsConfigPanel) -> None:
    header = panel.table.horizontalHeaderItem(SPEED)
    assert header is not None and header.text() == "Speed"
    assert panel.cell_text(0, SPEED) == "CHANNELS_LAST, COMPILE=unet · 1 not applied"
    assert panel.cell_text(1, SPEED) == "plain"
    tip = panel.table.cellWidget(0, SPEED).findChild(QLabel).toolTip()
    assert "COMPILE=unet: torch.compile" in tip
    assert "MYSTERY=1: unknown optimization flag 'MYSTERY'" in tip
    assert panel.flags_button(0).isEnabled() and panel.flags_button(1).isEnabled()
    assert not panel.flags_button(2).isEnabled()  # a pipeline Orchard does not run
    assert panel.edit_flags(2) is None


def test_a_double_click_on_the_flags_edits_them(qtbot: QtBot, panel: ModelsConfigPanel) -> None:
    label = panel.table.cellWidget(1, SPEED).findChild(QLabel)
    qtbot.mouseDClick(label, Qt.MouseButton.LeftButton)
    assert panel.flags_dialog is not None
    assert panel.flags_dialog.windowTitle() == "Speed flags · stabilityai/svd (image-to-video)"


def test_editing_flags_edits_the_config(
    qtbot: QtBot, panel: ModelsConfigPanel, cfg: ModelsConfig, tmp_path: Path
) -> None:
    panel.flags_button(0).click()
    dialog = panel.flags_dialog
    assert dialog is not None and dialog.isVisible()
    assert dialog.values["COMPILE"].currentText() == "unet"
    assert "MYSTERY=1" in dialog.kept.text()
    dialog.boxes["CHANNELS_LAST"].setChecked(False)
    dialog.values["BATCH"].setCurrentText("80")
    assert dialog.error.text() == (
        "optimization flag BATCH must be a whole number from 1 to 64 (got '80')"
    )
    assert not dialog.ok_button.isEnabled()
    dialog.values["BATCH"].setCurrentText("8")
    with qtbot.waitSignal(panel.config_edited) as got:
        dialog.ok_button.click()
    new = got.args[0]
    assert isinstance(new, ModelsConfig)
    assert new.entries[0].optimization_flags == {"COMPILE": "unet", "BATCH": "8", "MYSTERY": "1"}
    assert new.entries[0].price_per_unit == 4768371  # the rest of the entry is kept
    assert new.entries[1:] == cfg.entries[1:]
    assert panel.cell_text(0, SPEED) == "COMPILE=unet, BATCH=8 · 1 not applied"
    assert panel.message.text().startswith(
        "Speed flags of stabilityai/sdxl-turbo (text-to-image): COMPILE=unet, BATCH=8"
    )
    assert "apply when the node starts" in panel.message.text()
    # what the app saves: the file has the flags, the unknown one as it was
    path = tmp_path / "aiModels.json"
    config.save(new, path)
    first = json.loads(path.read_text())[0]
    assert first["optimization_flags"] == {"COMPILE": "unet", "BATCH": "8", "MYSTERY": "1"}
    assert config.load(path).entries[0].optimization_flags == first["optimization_flags"]


def test_a_cold_model_gets_flags_and_a_note(qtbot: QtBot, panel: ModelsConfigPanel) -> None:
    dialog = panel.edit_flags(1)
    assert dialog is not None
    assert "This model is cold" in dialog.notes.text()
    dialog.boxes["CHANNELS_LAST"].setChecked(True)
    with qtbot.waitSignal(panel.config_edited) as got:
        dialog.ok_button.click()
    assert got.args[0].entries[1].optimization_flags == {"CHANNELS_LAST": True}
    assert panel.cell_text(1, SPEED) == "CHANNELS_LAST"
    dialog = panel.edit_flags(1)
    assert dialog is not None
    dialog.boxes["CHANNELS_LAST"].setChecked(False)
    with qtbot.waitSignal(panel.config_edited) as got:
        dialog.ok_button.click()
    assert got.args[0].entries[1].optimization_flags is None  # no key left in the file
    with qtbot.assertNotEmitted(panel.config_edited):
        dialog = panel.edit_flags(1)
        assert dialog is not None
        dialog.boxes["FUSE_QKV"].setChecked(True)
        dialog.reject()  # Cancel: nothing changes
    assert panel.cell_text(1, SPEED) == "plain"


def test_rows_follow_the_width(qtbot: QtBot) -> None:
    text = '[{"pipeline": "text-to-image", "model_id": "stabilityai/sdxl-turbo", "warm": true}]'
    panel = ModelsConfigPanel(config.loads(text))
    qtbot.addWidget(panel)
    panel.resize(420, 300)
    panel.show()
    qtbot.waitUntil(lambda: panel.table.rowHeight(0) > 0)
    narrow = panel.table.rowHeight(0)  # the model id wraps
    panel.resize(1200, 300)
    qtbot.waitUntil(lambda: panel.table.rowHeight(0) < narrow, timeout=2000)
