from __future__ import annotations

import asyncio

from pytestqt.qtbot import QtBot

from core.gpus import CPU_INDEX, CpuDevice, GpuInventory, Nvml, TelemetrySampler
from tests.core.test_gpus import FakeGpu, FakeNvml
from tests.widgets.conftest import FedSampler, GiB, gpu_info, run
from widgets.gpu_panel import NO_GPU_SENTENCE, GpuPanel
from widgets.telemetry_chart import Metric

CPU = CpuDevice(CPU_INDEX, "AMD EPYC", 32 * GiB, 16)


def test_without_a_gpu_the_cpu_card_and_the_sentence(qtbot: QtBot, sampler: FedSampler) -> None:
    inventory = GpuInventory((), None, None, error="no NVIDIA GPU found", reason="no driver")
    panel = GpuPanel(inventory, CPU, sampler)
    qtbot.addWidget(panel)
    assert NO_GPU_SENTENCE == "No NVIDIA GPU found: running on CPU"
    assert NO_GPU_SENTENCE in panel.banner.text() and "no driver" in panel.banner.text()
    assert not panel.banner.isHidden()
    assert list(panel.cards) == [CPU_INDEX]


def test_one_card_per_gpu_and_choices_relayed(qtbot: QtBot, sampler: FedSampler) -> None:
    inventory = GpuInventory((gpu_info(0), gpu_info(1, "RTX 3070", 8 * GiB)), "550", "12.4")
    panel = GpuPanel(inventory, CPU, sampler)
    qtbot.addWidget(panel)
    assert panel.banner.isHidden()
    assert list(panel.cards) == [0, 1]
    panel.set_choices({0}, {1: GiB})
    assert panel.cards[0].use_switch.isChecked() and not panel.cards[1].use_switch.isChecked()
    assert panel.cards[1].reserve.value() == 1.0
    with qtbot.waitSignal(panel.use_toggled) as got:
        panel.cards[1].use_switch.setChecked(True)
    assert got.args == [1, True]


def test_live_telemetry_from_a_running_sampler(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop
) -> None:
    """The real sampler (its NVML thread and rounds) over a stand-in NVML library: this
    machine has no NVIDIA GPU (see tests/core/test_gpus.py)."""
    boards = [FakeGpu("RTX 4090", "GPU-a", 24 * GiB, used=6 * GiB, temperature=55)]
    fake = FakeNvml(boards)
    nvml = Nvml(fake)
    inventory = nvml.probe()
    sampler = TelemetrySampler(nvml, interval=0.02)
    panel = GpuPanel(inventory, CPU, sampler)
    qtbot.addWidget(panel)

    async def flow() -> None:
        sampler.start()
        try:
            while len(panel.cards[0].charts[Metric.MEMORY].points) < 3:
                await asyncio.sleep(0.02)
            boards[0].used = 12 * GiB
            boards[0].temperature = 70
            await asyncio.sleep(0.1)
        finally:
            await sampler.stop()
            nvml.shutdown()

    run(qloop, flow(), timeout=10)
    card = panel.cards[0]
    assert card.charts[Metric.MEMORY].value_text() == "12.0 / 24.0 GiB"
    assert card.charts[Metric.TEMPERATURE].value_text() == "70 °C"
    assert "free 12.0 GiB" in card.vram.legend_text()
