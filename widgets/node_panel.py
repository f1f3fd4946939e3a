"""The node: start and stop it, where it listens, its state, runners, and what it offers."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core import events as ev
from widgets._format import fmt_bytes
from widgets._subscriptions import subscribe
from widgets.toggle_switch import ToggleSwitch

STATE_LABELS = {
    "stopped": "Stopped",
    "starting": "Starting…",
    "running": "Running",
    "stopping": "Stopping…",
    "failed": "Failed to start",
}

_ACTIONS: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("address in use", "could not serve", "errno 98", "address already in use"),
        "Another program listens on this port: choose another port above, or stop that program.",
    ),
    (
        ("not on disk",),
        "Download the model on the Models page, or make it cold there so the node starts "
        "without it.",
    ),
    (
        ("cannot place", "largest budget", "does not fit"),
        "Lower a reserve or use more GPUs on the GPUs page, or make a model cold on the "
        "Models page.",
    ),
    (("pinned to gpu",), "Change the model's GPU on the Models page."),
    (
        ("no price is set",),
        "Set price_per_unit for each model in aiModels.json, or turn on Free mode above.",
    ),
    (("does not exist on this machine",), "Choose GPUs that exist on the GPUs page."),
    (("aimodels.json", "config"), "Fix the configuration on the Models page (or import another)."),
    (
        ("failed to start", "not ready in time", "cannot run the runner"),
        "Open the Logs page for the runner's output. The runner needs the runner extra: "
        "pip install 'orchard[runner]'.",
    ),
)


def action_for(message: str) -> str:
    """What the operator can do about a node error, from its message."""
    low = message.lower()
    for keys, action in _ACTIONS:
        if any(k in low for k in keys):
            return action
    return "See the Logs page for details, then start again."


class NodePanel(QWidget):
    """Follows the node's :class:`~core.events.NodeChanged` and
    :class:`~core.events.RunnerChanged` events on ``bus``; what the node offers comes from
    ``Node.info()`` through :meth:`set_info`.
    """

    start_requested = Signal(str, int)
    stop_requested = Signal()
    free_toggled = Signal(bool)

    def __init__(
        self,
        bus: ev.EventBus,
        host: str = "127.0.0.1",
        port: int = 8935,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.bus = bus
        self.state = "stopped"
        self.runners: dict[str, tuple[str, str]] = {}

        self.status = QLabel()
        self.status.setObjectName("statusPill")
        self.status_detail = QLabel()
        self.status_detail.setObjectName("muted")
        self.status_detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status_detail.setWordWrap(True)

        self.host = QLineEdit(host)
        self.host.setToolTip(
            "127.0.0.1 serves this computer only; 0.0.0.0 serves your network (gateways)."
        )
        self.host.setMaximumWidth(180)
        self.port = QSpinBox()
        self.port.setRange(1, 65535)
        self.port.setValue(port)
        self.free = ToggleSwitch("Free mode")
        self.free.setToolTip(
            "Free mode asks no payment: for trying the node locally. Off, every job must "
            "carry payment tickets and every model needs a price."
        )
        self.free.toggled.connect(self.free_toggled)
        self.payment = QLabel()
        self.payment.setObjectName("muted")
        self.payment.setWordWrap(True)
        self.start_button = QPushButton("Start node")
        self.start_button.setObjectName("primary")
        self.stop_button = QPushButton("Stop node")
        self.start_button.clicked.connect(self._on_start_clicked)
        self.stop_button.clicked.connect(self.stop_requested)

        self.error_box = QFrame()
        self.error_box.setObjectName("errorBox")
        self.error_text = QLabel()
        self.error_text.setWordWrap(True)
        self.error_text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_action = QLabel()
        self.error_action.setObjectName("errorAction")
        self.error_action.setWordWrap(True)
        box = QVBoxLayout(self.error_box)
        box.addWidget(self.error_text)
        box.addWidget(self.error_action)
        self.error_box.hide()

        self.runner_tree = QTreeWidget()
        self.runner_tree.setHeaderLabels(["Runner", "State", "Detail"])
        self.runner_tree.setRootIsDecorated(False)
        self.runner_tree.setFixedHeight(96)
        self.runners_empty = QLabel("Runners start with the node: one process per device.")
        self.runners_empty.setObjectName("muted")
        self.runner_tree.header().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)

        self.offers = QTreeWidget()
        self.offers.setHeaderLabels(
            ["Capability / model", "Warm", "Capacity", "Loaded on", "Price"]
        )
        self.offers.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.offers_empty = QLabel(
            "The capabilities the node advertises appear here once it runs. Press "
            "Start node; the models it serves are set on the Models page."
        )
        self.offers_empty.setObjectName("emptyState")
        self.offers_empty.setWordWrap(True)
        self.hardware = QLabel()
        self.hardware.setObjectName("muted")
        self.hardware.setWordWrap(True)

        address = QHBoxLayout()
        address.addWidget(QLabel("Address"))
        address.addWidget(self.host)
        address.addWidget(QLabel("Port"))
        address.addWidget(self.port)
        address.addSpacing(12)
        address.addWidget(self.free)
        address.addStretch(1)
        address.addWidget(self.start_button)
        address.addWidget(self.stop_button)

        head = QHBoxLayout()
        head.addWidget(self.status)
        head.addWidget(self.status_detail, 1)

        runners_box = QGroupBox("Runners")
        rl = QVBoxLayout(runners_box)
        rl.addWidget(self.runners_empty)
        rl.addWidget(self.runner_tree)
        self.runner_tree.hide()
        offers_box = QGroupBox("Capabilities advertised (GET /info)")
        offers_layout = QVBoxLayout(offers_box)
        offers_layout.addWidget(self.offers_empty)
        offers_layout.addWidget(self.offers, 1)
        offers_layout.addWidget(self.hardware)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(10)
        layout.addLayout(head)
        layout.addLayout(address)
        layout.addWidget(self.payment)
        layout.addWidget(self.error_box)
        layout.addWidget(runners_box)
        layout.addWidget(offers_box, 1)

        subscribe(self, bus, self._on_node_changed, ev.NodeChanged)
        subscribe(self, bus, self._on_runner_changed, ev.RunnerChanged)
        self._show_state("stopped", "")
        self.set_info(None)

    # ----------------------------------------------------------------- state in
    def set_info(self, info: dict[str, Any] | None) -> None:
        """Show ``Node.info()`` (None: nothing offered, the node is not running)."""
        self.offers.clear()
        per_cap = ((info or {}).get("capabilities") or {}).get("per_capability") or {}
        prices = {
            (str(p["capability"]), p["constraint"]): p
            for p in (info or {}).get("capabilities_prices", [])
        }
        for cap_id, cap in sorted(per_cap.items()):
            top = QTreeWidgetItem([f"{cap['name']} (capability {cap_id})"])
            self.offers.addTopLevelItem(top)
            for model_id, c in sorted(cap.get("models", {}).items()):
                gpus = c.get("gpus") or []
                where = ", ".join("CPU" if g < 0 else f"GPU {g}" for g in gpus) or (
                    "yes" if c.get("loaded") else "not loaded (cold)"
                )
                price = prices.get((cap_id, model_id))
                price_text = (
                    f"{price['price_per_unit']} {price['currency'].lower()} / "
                    f"{price['pixels_per_unit']} px"
                    if price
                    else "node default"
                )
                QTreeWidgetItem(
                    top,
                    [
                        model_id,
                        "warm" if c.get("warm") else "cold",
                        f"{c.get('capacity_in_use', 0)} of {c.get('capacity', 1)} in use",
                        where,
                        price_text,
                    ],
                )
            top.setExpanded(True)
        for i in range(1, 5):
            self.offers.resizeColumnToContents(i)
        has = bool(per_cap)
        self.offers.setVisible(has)
        self.offers_empty.setVisible(not has)
        self._payment_text(info)
        hw = (info or {}).get("hardware") or []
        self.hardware.setText(
            "  ·  ".join(
                f"{h['name']}: {fmt_bytes(h['memory_free'])} free of "
                f"{fmt_bytes(h['memory_total'])}, runner {h['runner_state']}"
                + (f" (pid {h['pid']})" if h.get("pid") else "")
                for h in hw
            )
        )

    def set_free(self, on: bool) -> None:
        self.free.blockSignals(True)
        self.free.setChecked(on)
        self.free.blockSignals(False)
        self._payment_text(None)

    def _payment_text(self, info: dict[str, Any] | None) -> None:
        pay = (info or {}).get("payment") or {}
        if self.free.isChecked():
            self.payment.setText(
                "Free mode: jobs cost nothing and no payment is asked (local testing)."
            )
        elif pay.get("recipient"):
            self.payment.setText(
                f"Payments: tickets to {pay['recipient']}, {pay.get('ledger', 'off-chain')} "
                "ledger. Gateways fetch ticket parameters at /ticket-params."
            )
        else:
            self.payment.setText(
                "Paid mode: each job must carry payment tickets (off-chain ledger); every "
                "model needs a price in aiModels.json."
            )

    def set_address(self, host: str, port: int) -> None:
        self.host.setText(host)
        self.port.setValue(port)

    def show_error(self, message: str) -> None:
        """An error about the node (from the node or from the app), with what to do."""
        self.error_text.setText(f"<b>The node could not start.</b> {message}")
        self.error_action.setText(f"What to do: {action_for(message)}")
        self.error_box.show()

    def clear_error(self) -> None:
        self.error_box.hide()

    # ----------------------------------------------------------------- slots
    def _on_start_clicked(self) -> None:
        host = self.host.text().strip()
        if not host:
            self.show_error("the address is empty; use 127.0.0.1 (this computer only)")
            return
        self.clear_error()
        self.start_requested.emit(host, self.port.value())

    def _on_node_changed(self, event: ev.NodeChanged) -> None:
        self._show_state(event.state, event.detail)
        if event.state == "failed":
            self.show_error(event.detail or "unknown error")
        elif event.state == "starting":
            self.clear_error()
            self.runners.clear()
            self.runner_tree.clear()
            self.runner_tree.hide()
            self.runners_empty.show()
        elif event.state == "stopped":
            self.set_info(None)

    def _on_runner_changed(self, event: ev.RunnerChanged) -> None:
        self.runners[event.runner_id] = (event.state, event.detail)
        self.runner_tree.clear()
        for rid, (state, detail) in sorted(self.runners.items()):
            item = QTreeWidgetItem([rid, state, detail.splitlines()[0] if detail else ""])
            item.setToolTip(2, detail)
            self.runner_tree.addTopLevelItem(item)
        self.runner_tree.resizeColumnToContents(0)
        self.runner_tree.resizeColumnToContents(1)
        self.runner_tree.setVisible(bool(self.runners))
        self.runners_empty.setVisible(not self.runners)

    def _show_state(self, state: str, detail: str) -> None:
        self.state = state
        self.status.setText(STATE_LABELS.get(state, state))
        self.status.setProperty("state", state)
        self.status.style().unpolish(self.status)
        self.status.style().polish(self.status)
        if state == "running":
            self.status_detail.setText(f"Serving on {detail}" if detail else "")
        elif state == "failed":
            self.status_detail.setText("")
        else:
            self.status_detail.setText(detail)
        busy = state in ("starting", "stopping")
        self.start_button.setEnabled(state in ("stopped", "failed"))
        self.stop_button.setEnabled(state in ("running", "starting"))
        self.host.setEnabled(not busy and state != "running")
        self.port.setEnabled(not busy and state != "running")
        self.free.setEnabled(not busy and state != "running")
