from __future__ import annotations

from pytestqt.qtbot import QtBot

from core.gpus import CPU_INDEX
from tests.widgets.conftest import FedSampler, GiB, sample
from widgets.telemetry_chart import Metric, TelemetryChart


def test_chart_follows_the_samplers_rounds(qtbot: QtBot, sampler: FedSampler) -> None:
    sampler.feed(sample(0, used=4 * GiB, at=100.0))  # history before the chart exists
    chart = TelemetryChart(sampler, 0, Metric.MEMORY)
    qtbot.addWidget(chart)
    assert len(chart.points) == 1  # seeded from the sampler's history
    assert chart.value_text() == "4.0 / 24.0 GiB"
    sampler.feed(sample(0, used=6 * GiB, at=101.0), sample(1, used=20 * GiB, at=101.0))
    assert [v for _, v in chart.points] == [4.0, 6.0]  # GPU 1's sample is not this chart's
    assert chart.value_text() == "6.0 / 24.0 GiB"
    assert chart.title == "VRAM used"
    assert not chart.grab().isNull()


def test_each_metric_in_its_unit(qtbot: QtBot, sampler: FedSampler) -> None:
    charts = {m: TelemetryChart(sampler, 0, m) for m in Metric}
    for c in charts.values():
        qtbot.addWidget(c)
    sampler.feed(sample(0, util=87, temp=71, power=301.4, limit=450.0))
    assert charts[Metric.UTILIZATION].value_text() == "87 %"
    assert charts[Metric.TEMPERATURE].value_text() == "71 °C"
    assert charts[Metric.POWER].value_text() == "301 / 450 W"


def test_cpu_device_has_no_temperature(qtbot: QtBot, sampler: FedSampler) -> None:
    chart = TelemetryChart(sampler, CPU_INDEX, Metric.TEMPERATURE)
    qtbot.addWidget(chart)
    assert chart.value_text() == "waiting…"
    sampler.feed(sample(CPU_INDEX, util=None, temp=None, power=None, limit=None))
    assert chart.value_text() == "not reported"
    busy = TelemetryChart(sampler, CPU_INDEX, Metric.UTILIZATION)
    qtbot.addWidget(busy)
    assert busy.title == "CPU busy"
    assert not chart.grab().isNull()


def test_a_destroyed_chart_stops_listening(qtbot: QtBot, sampler: FedSampler) -> None:
    chart = TelemetryChart(sampler, 0, Metric.MEMORY)
    assert len(sampler._subscribers) == 1
    chart.deleteLater()
    qtbot.waitUntil(lambda: not sampler._subscribers)
    sampler.feed(sample(0))  # no call into the deleted widget
