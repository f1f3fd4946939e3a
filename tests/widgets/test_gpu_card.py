from __future__ import annotations

from pytestqt.qtbot import QtBot

from core.gpus import CPU_INDEX, CpuDevice
from tests.widgets.conftest import FedSampler, GiB, gpu_info, sample
from widgets.gpu_card import GpuCard
from widgets.telemetry_chart import Metric
from widgets.vram_bar import ModelUse


def test_gpu_card_shows_the_board_and_four_charts(qtbot: QtBot, sampler: FedSampler) -> None:
    card = GpuCard(gpu_info(1, "RTX 3070", 8 * GiB), sampler)
    qtbot.addWidget(card)
    assert card.title.text() == "GPU 1 · RTX 3070"
    assert "8.0 GiB VRAM" in card.details.text() and "CUDA 12.4" in card.details.text()
    assert set(card.charts) == set(Metric)
    sampler.feed(sample(1, used=3 * GiB, total=8 * GiB, temp=66))
    assert card.charts[Metric.TEMPERATURE].value_text() == "66 °C"
    card.set_models([ModelUse("org/a (text-to-image)", 2 * GiB)])
    assert "org/a (text-to-image) 2.0 GiB" in card.vram.legend_text()


def test_choices_are_reported_in_bytes(qtbot: QtBot, sampler: FedSampler) -> None:
    card = GpuCard(gpu_info(0), sampler)
    qtbot.addWidget(card)
    sampler.feed(sample(0))
    with qtbot.waitSignal(card.reserve_changed) as got:
        card.reserve.setValue(1.5)
    assert got.args == [0, int(1.5 * GiB)]
    with qtbot.waitSignal(card.use_toggled) as used:
        card.use_switch.setChecked(False)
    assert used.args == [0, False]
    # saved choices are shown without being echoed back
    with qtbot.assertNotEmitted(card.reserve_changed), qtbot.assertNotEmitted(card.use_toggled):
        card.set_choices(True, 2 * GiB)
    assert card.use_switch.isChecked() and card.reserve.value() == 2.0
    assert "reserved 2.0 GiB" in card.vram.legend_text()


def test_cpu_card_cannot_be_turned_off(qtbot: QtBot, sampler: FedSampler) -> None:
    card = GpuCard(CpuDevice(CPU_INDEX, "AMD EPYC", 32 * GiB, 16), sampler)
    qtbot.addWidget(card)
    assert card.title.text() == "CPU · AMD EPYC"
    assert card.use_switch.isChecked() and not card.use_switch.isEnabled()
    assert set(card.charts) == {Metric.MEMORY, Metric.UTILIZATION}  # no sensors on a CPU
    assert card.charts[Metric.MEMORY].title == "RAM used"
