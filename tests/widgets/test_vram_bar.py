from __future__ import annotations

from pytestqt.qtbot import QtBot

from tests.widgets.conftest import FedSampler, GiB, sample
from widgets.vram_bar import ModelUse, VramBar


def test_memory_is_split_by_model_then_other(qtbot: QtBot, sampler: FedSampler) -> None:
    bar = VramBar(sampler, 0)
    qtbot.addWidget(bar)
    assert "waiting" in bar.legend_text()
    sampler.feed(sample(0, used=16 * GiB, total=24 * GiB))
    bar.set_models(
        [
            ModelUse("stabilityai/sdxl-turbo (text-to-image)", 10 * GiB, measured=True),
            ModelUse("stabilityai/sd-turbo (text-to-image)", 4 * GiB),
        ]
    )
    segments = bar.segments()
    assert [(label, size) for label, size, _ in segments] == [
        ("stabilityai/sdxl-turbo (text-to-image)", 10 * GiB),
        ("stabilityai/sd-turbo (text-to-image)", 4 * GiB),
        ("other", 2 * GiB),
    ]
    legend = bar.legend_text()
    assert "sdxl-turbo (text-to-image) 10.0 GiB" in legend
    assert "other 2.0 GiB" in legend and "free 8.0 GiB" in legend
    assert "measured" in bar.toolTip() and "estimated" in bar.toolTip()


def test_reserve_shows_in_the_legend(qtbot: QtBot, sampler: FedSampler) -> None:
    sampler.feed(sample(0, used=1 * GiB))
    bar = VramBar(sampler, 0)
    qtbot.addWidget(bar)
    assert "reserved" not in bar.legend_text()
    bar.set_reserve(int(1.5 * GiB))
    assert "reserved 1.5 GiB" in bar.legend_text()
    assert not bar.grab().isNull()
