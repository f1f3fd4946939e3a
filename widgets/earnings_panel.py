"""Prices per capability and model, what a typical job earns, and earnings so far."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PySide6.QtWidgets import (
    QGridLayout,
    QGroupBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from widgets._format import fmt_wei
from widgets.earnings_chart import EarningsChart

LEDGER_NOTE = (
    "Payments: off-chain ledger (probabilistic tickets, no blockchain yet). Earnings below "
    "are the fees the job history records: 0 while the node runs in free mode."
)


@dataclass(frozen=True)
class PriceRow:
    """One model's price and what a typical job of it costs (fee as a decimal string)."""

    capability: str
    model_id: str
    price: str  # "4768371 wei / pixel" as the operator set it, or "node default"
    typical_job: str  # "one 512x512 image"
    typical_fee: str | None  # in ``currency`` (a decimal string), None when there is no price
    currency: str = "WEI"

    def fee_text(self) -> str:
        if self.typical_fee is None:
            return "—"
        if self.currency.upper() == "WEI":
            return fmt_wei(self.typical_fee)
        return f"{self.typical_fee} {self.currency}"


class EarningsPanel(QWidget):
    """:meth:`set_prices` with :class:`PriceRow` rows, :meth:`set_stats` with
    ``JobStore.stats()``."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.note = QLabel(LEDGER_NOTE)
        self.note.setObjectName("banner")
        self.note.setWordWrap(True)
        self.prices = QTableWidget(0, 5)
        self.prices.setHorizontalHeaderLabels(
            ["Capability", "Model", "Price", "Typical job", "Fee per typical job"]
        )
        self.prices.verticalHeader().hide()
        self.prices.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        header = self.prices.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.prices_empty = QLabel(
            "No models configured. Add models on the Models page and set their "
            "price_per_unit (wei per pixel) in aiModels.json."
        )
        self.prices_empty.setObjectName("emptyState")
        self.prices_empty.setWordWrap(True)

        self.totals: dict[str, QLabel] = {}
        totals = QGridLayout()
        for i, (key, label) in enumerate(
            [
                ("jobs", "Jobs"),
                ("done", "Done"),
                ("failed", "Failed"),
                ("fees", "Earned (off-chain ledger)"),
            ]
        ):
            title = QLabel(label)
            title.setObjectName("muted")
            value = QLabel("0")
            value.setObjectName("bigNumber")
            totals.addWidget(title, 0, i)
            totals.addWidget(value, 1, i)
            self.totals[key] = value
        self.chart = EarningsChart()
        self.by_model = QLabel()
        self.by_model.setObjectName("muted")
        self.by_model.setWordWrap(True)

        prices_box = QGroupBox("Prices (from aiModels.json)")
        pl = QVBoxLayout(prices_box)
        pl.addWidget(self.prices_empty)
        pl.addWidget(self.prices)
        earnings_box = QGroupBox("Earnings")
        el = QVBoxLayout(earnings_box)
        el.addLayout(totals)
        el.addWidget(self.chart, 1)
        el.addWidget(self.by_model)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.note)
        layout.addWidget(prices_box)
        layout.addWidget(earnings_box, 1)
        self.set_prices([])

    def set_prices(self, rows: list[PriceRow]) -> None:
        self.prices.setRowCount(len(rows))
        for i, r in enumerate(rows):
            for j, text in enumerate(
                [r.capability, r.model_id, r.price, r.typical_job, r.fee_text()]
            ):
                self.prices.setItem(i, j, QTableWidgetItem(text))
        self.prices.setVisible(bool(rows))
        self.prices_empty.setVisible(not rows)
        height = self.prices.horizontalHeader().height() + 4
        height += sum(self.prices.rowHeight(i) for i in range(len(rows)))
        self.prices.setFixedHeight(min(height, 260))

    def set_stats(self, stats: dict[str, Any]) -> None:
        by_state = stats.get("by_state", {})
        self.totals["jobs"].setText(str(stats.get("total_jobs", 0)))
        self.totals["done"].setText(str(by_state.get("done", 0)))
        self.totals["failed"].setText(
            str(by_state.get("failed", 0) + by_state.get("interrupted", 0))
        )
        self.totals["fees"].setText(fmt_wei(stats.get("total_fees", "0")))
        self.chart.set_stats(stats)
        fees = stats.get("fees_by_model", {})
        counts = stats.get("by_model", {})
        self.by_model.setText(
            "  ·  ".join(
                f"{m}: {n} job{'' if n == 1 else 's'}, fees {fmt_wei(fees.get(m, '0'))}"
                for m, n in sorted(counts.items())
            )
        )
