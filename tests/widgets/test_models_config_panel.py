from __future__ import annotations

import pytest
from pytestqt.qtbot import QtBot

from core import config
from core.config import ModelsConfig
from widgets.models_config_panel import FitInfo, ModelsConfigPanel, Need

TEXT = """[
  {"pipeline": "text-to-image", "model_id": "stabilityai/sdxl-turbo", "warm": true,
   "price_per_unit": 4768371},
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
    assert panel.cell_text(1, 6) == "cold: loads on demand"
    assert "Orchard does not run this pipeline" in panel.cell_text(2, 6)
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
    assert panel.cell_text(0, 4) == "10.4 GiB (estimate)"
    assert panel.cell_text(1, 4) == "not on disk: download it"
    assert panel.cell_text(0, 5).startswith("tight: 10.4 GiB")
    assert panel.table.item(0, 5).foreground().color().name() == "#e65100"
    assert panel.plan.text().startswith("The warm models do not fit")
    assert panel.plan.property("ok") is False
    panel.set_states({key: "loaded on GPU 0"})
    assert panel.cell_text(0, 6) == "loaded on GPU 0"


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
