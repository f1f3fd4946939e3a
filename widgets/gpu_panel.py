"""The GPUs page: one card per device, or the CPU card with the no-GPU sentence."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QGridLayout, QLabel, QScrollArea, QVBoxLayout, QWidget

from core.gpus import CpuDevice, GpuInfo, GpuInventory, TelemetrySampler
from widgets.gpu_card import GpuCard
from widgets.vram_bar import ModelUse

#: Shown when NVML finds no GPU (core.gpus.NO_GPU, as a sentence).
NO_GPU_SENTENCE = "No NVIDIA GPU found: running on CPU"


class GpuPanel(QWidget):
    """Cards for ``inventory``'s GPUs (two a row), or for ``cpu`` when there is none.

    Relays each card's ``use_toggled`` and ``reserve_changed``.
    """

    use_toggled = Signal(int, bool)
    reserve_changed = Signal(int, object)  # bytes: may exceed a C int

    def __init__(
        self,
        inventory: GpuInventory,
        cpu: CpuDevice,
        sampler: TelemetrySampler,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.inventory = inventory
        self.banner = QLabel()
        self.banner.setObjectName("banner")
        self.banner.setWordWrap(True)
        if inventory.has_gpu:
            self.banner.hide()
        else:
            why = f" ({inventory.reason})" if inventory.reason else ""
            self.banner.setText(
                f"<b>{NO_GPU_SENTENCE}</b>. Jobs run on the processor: slow, but the whole "
                f"path works, which is what the demo models are for.{why}"
            )
        devices: list[GpuInfo | CpuDevice] = list(inventory.gpus) if inventory.has_gpu else [cpu]
        self.cards: dict[int, GpuCard] = {}
        grid_host = QWidget()
        grid = QGridLayout(grid_host)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(12)
        columns = 1 if len(devices) == 1 else 2
        for i, device in enumerate(devices):
            card = GpuCard(device, sampler)
            card.use_toggled.connect(self.use_toggled)
            card.reserve_changed.connect(self.reserve_changed)
            self.cards[device.index] = card
            grid.addWidget(card, i // columns, i % columns)
        grid.setRowStretch((len(devices) + columns - 1) // columns, 1)  # cards at the top
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(grid_host)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.banner)
        layout.addWidget(scroll, 1)

    def set_models(self, index: int, models: list[ModelUse]) -> None:
        card = self.cards.get(index)
        if card is not None:
            card.set_models(models)

    def set_choices(self, use: set[int], reserve: dict[int, int]) -> None:
        for index, card in self.cards.items():
            card.set_choices(index in use, reserve.get(index, 0))
