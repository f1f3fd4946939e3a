from __future__ import annotations

from typing import Any

from pytestqt.qtbot import QtBot

from widgets.earnings_chart import EarningsChart
from widgets.earnings_panel import LEDGER_NOTE, EarningsPanel, PriceRow

STATS: dict[str, Any] = {
    "total_jobs": 5,
    "by_state": {"queued": 0, "running": 0, "done": 3, "failed": 1, "interrupted": 1},
    "by_model": {"org/a": 4, "org/v": 1},
    "fees_by_model": {"org/a": "2500000000000", "org/v": "0"},
    "total_fees": "2500000000000",
    "jobs_per_day": {"2026-11-26": 0, "2026-11-27": 2, "2026-11-28": 3},
    "fees_per_day": {
        "2026-11-26": "0",
        "2026-11-27": "1250000000000",
        "2026-11-28": "1250000000000",
    },
}


def test_prices_and_typical_fees(qtbot: QtBot) -> None:
    panel = EarningsPanel()
    qtbot.addWidget(panel)
    assert "off-chain ledger" in panel.note.text() and panel.note.text() == LEDGER_NOTE
    assert panel.prices.isHidden() and not panel.prices_empty.isHidden()
    panel.set_prices(
        [
            PriceRow(
                "text-to-image",
                "org/a",
                "4768371 wei / pixel",
                "one 512x512 image",
                "1249999847424",
            ),
            PriceRow("image-to-video", "org/v", "node default", "one 1024x576 video", None),
        ]
    )
    assert not panel.prices.isHidden() and panel.prices_empty.isHidden()
    assert panel.prices.rowCount() == 2
    assert panel.prices.item(0, 2).text() == "4768371 wei / pixel"
    assert panel.prices.item(0, 4).text() == "1,250.0 gwei"
    assert panel.prices.item(1, 4).text() == "—"


def test_totals_and_per_model(qtbot: QtBot) -> None:
    panel = EarningsPanel()
    qtbot.addWidget(panel)
    panel.set_stats(STATS)
    assert panel.totals["jobs"].text() == "5"
    assert panel.totals["done"].text() == "3"
    assert panel.totals["failed"].text() == "2"  # failed and interrupted
    assert panel.totals["fees"].text() == "2,500.0 gwei"
    assert "org/a: 4 jobs, fees 2,500.0 gwei" in panel.by_model.text()
    assert "org/v: 1 job, fees 0" in panel.by_model.text()
    assert panel.chart.jobs == [0, 2, 3]


def test_chart_draws_days_and_an_empty_state(qtbot: QtBot) -> None:
    chart = EarningsChart()
    qtbot.addWidget(chart)
    chart.resize(400, 200)
    assert not chart.grab().isNull()  # "No jobs yet" with no stats
    chart.set_stats(STATS)
    assert chart.days == ["2026-11-26", "2026-11-27", "2026-11-28"]
    assert [str(f) for f in chart.fees] == ["0", "1250000000000", "1250000000000"]
    image = chart.grab().toImage()
    # the last day's bar reaches the top of the plot: some pixel of the bar colour is drawn
    bar = [
        (x, y)
        for x in range(0, image.width(), 2)
        for y in range(0, image.height(), 2)
        if image.pixelColor(x, y).name() == "#90caf9"
    ]
    assert bar and max(x for x, _ in bar) > image.width() * 0.6
