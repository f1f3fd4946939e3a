"""One device (a GPU, or the CPU when there is none): memory by model, live charts, choices."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from core.gpus import CpuDevice, GpuInfo, TelemetrySampler
from widgets._format import GiB, fmt_bytes
from widgets.telemetry_chart import Metric, TelemetryChart
from widgets.toggle_switch import ToggleSwitch
from widgets.vram_bar import ModelUse, VramBar


class GpuCard(QFrame):
    """A card for ``device``, fed by ``sampler``.

    ``use_toggled(index, on)`` and ``reserve_changed(index, bytes)`` report the operator's
    choices; the models shown in the memory bar come from :meth:`set_models`.
    """

    use_toggled = Signal(int, bool)
    reserve_changed = Signal(int, object)  # bytes: may exceed a C int

    def __init__(
        self,
        device: GpuInfo | CpuDevice,
        sampler: TelemetrySampler,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.device = device
        self.index = device.index
        self.is_cpu = isinstance(device, CpuDevice)
        self.setObjectName("card")
        self.setFrameShape(QFrame.Shape.StyledPanel)

        title = f"CPU · {device.name}" if self.is_cpu else f"GPU {device.index} · {device.name}"
        self.title = QLabel(title)
        self.title.setObjectName("cardTitle")
        self.details = QLabel(self._details_text())
        self.details.setObjectName("muted")
        self.details.setWordWrap(True)

        self.use_switch = ToggleSwitch("Use for the node")
        self.use_switch.setChecked(True)
        if self.is_cpu:
            self.use_switch.setEnabled(False)
            self.use_switch.setToolTip("With no NVIDIA GPU, the CPU runs the node's models.")
        self.use_switch.toggled.connect(self._on_use_toggled)

        self.reserve = QDoubleSpinBox()
        self.reserve.setDecimals(1)
        self.reserve.setSingleStep(0.5)
        self.reserve.setSuffix(" GiB")
        self.reserve.setRange(0.0, max(device.memory_total / GiB, 0.0))
        self.reserve.setToolTip(
            "Memory kept free for the desktop, games or other programs; models are placed "
            "in what is left."
        )
        self.reserve.valueChanged.connect(self._on_reserve_value_changed)

        head = QHBoxLayout()
        names = QVBoxLayout()
        names.setSpacing(2)
        names.addWidget(self.title)
        names.addWidget(self.details)
        head.addLayout(names, 1)
        head.addWidget(self.use_switch)

        reserve_row = QHBoxLayout()
        reserve_label = QLabel("Keep free (reserve):")
        reserve_row.addWidget(reserve_label)
        reserve_row.addWidget(self.reserve)
        reserve_row.addStretch(1)

        self.vram = VramBar(sampler, self.index)
        metrics = [Metric.MEMORY, Metric.UTILIZATION]
        if not self.is_cpu:
            metrics += [Metric.TEMPERATURE, Metric.POWER]
        self.charts = {m: TelemetryChart(sampler, self.index, m) for m in metrics}
        grid = QGridLayout()
        grid.setSpacing(8)
        for i, m in enumerate(metrics):
            grid.addWidget(self.charts[m], i // 2, i % 2)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 12, 14, 14)
        layout.setSpacing(8)
        layout.addLayout(head)
        layout.addWidget(self.vram)
        layout.addLayout(reserve_row)
        layout.addLayout(grid)

    def _details_text(self) -> str:
        d = self.device
        if isinstance(d, CpuDevice):
            return f"{fmt_bytes(d.memory_total)} RAM · {d.logical_cores} logical cores"
        parts = [f"{fmt_bytes(d.memory_total)} VRAM"]
        if d.cuda_capability:
            parts.append(f"compute {d.cuda_capability[0]}.{d.cuda_capability[1]}")
        if d.driver_version:
            parts.append(f"driver {d.driver_version}")
        if d.cuda_driver_version:
            parts.append(f"CUDA {d.cuda_driver_version}")
        return " · ".join(parts)

    # ----------------------------------------------------------------- state in
    def set_models(self, models: list[ModelUse]) -> None:
        self.vram.set_models(models)

    def set_choices(self, use: bool, reserve_bytes: int) -> None:
        """Show saved choices without echoing them back as signals."""
        self.use_switch.blockSignals(True)
        self.reserve.blockSignals(True)
        try:
            self.use_switch.setChecked(use or self.is_cpu)
            self.reserve.setValue(reserve_bytes / GiB)
            self.vram.set_reserve(reserve_bytes)
        finally:
            self.use_switch.blockSignals(False)
            self.reserve.blockSignals(False)

    # ----------------------------------------------------------------- slots
    def _on_use_toggled(self, on: bool) -> None:
        self.use_toggled.emit(self.index, on)

    def _on_reserve_value_changed(self, gib: float) -> None:
        reserve = round(gib * GiB)
        self.vram.set_reserve(reserve)
        self.reserve_changed.emit(self.index, reserve)
