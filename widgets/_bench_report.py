"""The report of ``orchard bench`` (its ``--json``, as a dict) as a table, a few sentences
and the ``--chart`` PNG, with the error of a run that failed above it. Part of
:class:`widgets.bench_view.BenchView`.

A report may come from an older Orchard: every key beyond the basic ones (``variant``,
``flags``, ``speedup``, ``equivalence``, ``frames``, ``nvml_delta``...) is optional.

When the optimised variant's output matched the plain one and it was faster, the panel offers
to use its flags for the model (:func:`flags_offer`); writing them is the page's business.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from PySide6.QtCore import QRect, QSize, Qt, Signal
from PySide6.QtGui import (
    QFont,
    QImage,
    QPainter,
    QPaintEvent,
    QPixmap,
    QResizeEvent,
    QTextOption,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.optimizations import FLAGS
from widgets._format import fmt_bytes, fmt_duration
from widgets._threads import run_in_thread

#: The error's last lines shown without scrolling.
ERROR_LINES = 10
#: A thin scroll bar (the app's stylesheet makes a scroll area's children transparent).
SCROLL_STYLE = (
    "QScrollBar:vertical { background: transparent; width: 10px; margin: 0; }"
    "QScrollBar::handle:vertical { background: #c5cbd3; border-radius: 4px; min-height: 24px; }"
    "QScrollBar::add-line:vertical, QScrollBar::sub-line:vertical { height: 0; }"
    "QScrollBar::add-page:vertical, QScrollBar::sub-page:vertical { background: none; }"
)
EMPTY_TEXT = "No benchmark yet: choose a device and a model, then press Run."
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
MEMORY = {
    "torch_peak_allocated": "peak allocated (torch)",
    "torch_peak_reserved": "peak reserved (torch)",
    "nvml_used": "used on the device (NVML)",
    "nvml_delta": "added on the device (NVML)",
    "weights": "weights",
}


def clean(text: str) -> str:
    """An output line without ANSI escape codes (progress bars move the cursor)."""
    return _ANSI.sub("", text).rstrip()


def mono_font(base: QFont) -> QFont:
    mono = QFont("DejaVu Sans Mono")
    mono.setStyleHint(QFont.StyleHint.Monospace)
    mono.setPointSizeF(max(base.pointSizeF() - 1, 8))
    return mono


def fmt_latency(seconds: float | None) -> str:
    """``20.6 ms``, ``321 ms``, ``2.45 s``; an em dash for None."""
    if seconds is None:
        return "—"
    if seconds < 0.1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return fmt_duration(seconds)


def fmt_rate(jobs_per_s: float | None) -> str:
    if jobs_per_s is None:
        return "—"
    if jobs_per_s >= 100:
        return f"{jobs_per_s:.0f}"
    if jobs_per_s >= 10:
        return f"{jobs_per_s:.1f}"
    return f"{jobs_per_s:.2f}"


def fmt_flags(flags: Any) -> str:
    """``CHANNELS_LAST, COMPILE=unet`` (a flag that is simply on shows its name)."""
    if not isinstance(flags, Mapping):
        return ""
    parts = []
    for name, value in flags.items():
        if value is True:
            parts.append(str(name))
        elif value not in (False, None):
            parts.append(f"{name}={value}")
    return ", ".join(parts)


def num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _when(date: Any) -> str:
    try:
        return datetime.fromisoformat(str(date)).astimezone().strftime("%d %b %Y, %H:%M")
    except (TypeError, ValueError):
        return str(date or "")


def _plural(n: Any, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _throughput(result: Mapping[str, Any], concurrency: int) -> float | None:
    tput = result.get("throughput") or {}
    return num(tput.get(str(concurrency), tput.get(concurrency)))


def _peak(memory: Mapping[str, Any]) -> tuple[str, str]:
    """The peak memory cell (torch's peak allocated, else what NVML saw) and a tooltip with
    every measurement the report has."""
    allocated = num(memory.get("torch_peak_allocated"))
    nvml = num(memory.get("nvml_used"))
    if allocated is not None:
        text = fmt_bytes(allocated, 2)
    elif nvml is not None:
        text = f"{fmt_bytes(nvml, 2)} (NVML)"
    else:
        text = "—"
    tip = [f"{label}: {fmt_bytes(num(memory.get(k)), 2)}" for k, label in MEMORY.items()]
    return text, "\n".join(tip)


def _levels(cfg: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> list[int]:
    """The concurrency levels measured: the config's, else the results' own."""
    try:
        levels = [int(c) for c in cfg.get("concurrency") or []]
    except (TypeError, ValueError):
        levels = []
    if not levels:
        found = {int(k) for r in results for k in (r.get("throughput") or {}) if str(k).isdigit()}
        levels = sorted(found)
    return levels


def _variant_tip(result: Mapping[str, Any]) -> str:
    """The flags asked for and what the runner applied, where the report says."""
    lines = []
    if flags := fmt_flags(result.get("flags")):
        lines.append(f"flags: {flags}")
    applied = result.get("optimizations")
    if isinstance(applied, list) and applied:
        lines.append("applied: " + "; ".join(str(a) for a in applied))
    return "\n".join(lines)


def flags_offer(report: Mapping[str, Any] | None) -> tuple[str, str, dict[str, Any]] | None:
    """``(pipeline, model, flags)`` worth keeping: the optimised variant's output matched the
    plain one and it was faster on every path measured. The flags are the ones asked for
    (the config's), without the WARMUP the benchmark adds to a compiled variant by itself."""
    if report is None:
        return None
    eq = report.get("equivalence")
    ratios = [num(v) for v in (report.get("speedup") or {}).values()]
    if not (isinstance(eq, Mapping) and eq.get("ok") is True and ratios):
        return None
    if not all(r is not None and r > 1 for r in ratios):
        return None
    cfg = report.get("config")
    cfg = cfg if isinstance(cfg, Mapping) else {}
    flags, pipeline, model = cfg.get("flags"), cfg.get("pipeline"), cfg.get("model")
    if not (isinstance(flags, Mapping) and flags and isinstance(pipeline, str)):
        return None
    if not (isinstance(model, str) and model):
        return None
    return pipeline, model, {str(k): v for k, v in flags.items()}


def _same_flags(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether ``a`` and ``b`` ask the runner for the same (flags it does not apply aside)."""

    def norm(flags: Mapping[str, Any]) -> dict[str, str]:
        return {str(k).upper(): str(v).lower() for k, v in flags.items() if k.upper() in FLAGS}

    return norm(a) == norm(b)


def columns(cfg: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> list[str]:
    """The table's columns: Variant only when a result has one."""
    cols = ["Path"]
    if any("variant" in r for r in results):
        cols.append("Variant")
    cols += ["Cold load", "First", "Median", "p95"]
    cols += [f"Jobs/s @{c}" for c in _levels(cfg, results)]
    return [*cols, "Peak VRAM"]


class _Chart(QWidget):
    """A picture scaled down to the room it is given (never up), centred at the top: the
    chart takes what the table and the sentences leave."""

    def __init__(self) -> None:
        super().__init__()
        self.pixmap = QPixmap()
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumHeight(0)

    def sizeHint(self) -> QSize:
        # No height of its own: the scroll area around it sizes its content by the preferred
        # height, and the chart only takes what is left.
        return QSize(320, 0)

    def minimumSizeHint(self) -> QSize:
        return QSize(0, 0)

    def paintEvent(self, event: QPaintEvent) -> None:
        if self.pixmap.isNull():
            return
        size = self.pixmap.size()
        if size.width() > self.width() or size.height() > self.height():
            size = size.scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio)
        if size.width() < 40 or size.height() < 40:
            return  # too small to read: nothing rather than a smudge
        target = QRect((self.width() - size.width()) // 2, 0, size.width(), size.height())
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        p.drawPixmap(target, self.pixmap)
        p.end()


class ReportPanel(QWidget):
    """The error of the last run (if it failed) and the last report (if any). Signal:
    ``use_flags_requested(pipeline, model, flags)``, the report's flags for the model."""

    use_flags_requested = Signal(str, str, object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.report: dict[str, Any] | None = None
        self.offer: tuple[str, str, dict[str, Any]] | None = None
        #: the flags of each model the node's aiModels.json has, by (pipeline, model)
        self.configured: dict[tuple[str, str], dict[str, Any]] = {}
        self._chart_path: str | None = None

        self.error_box = QFrame()
        self.error_box.setObjectName("errorBox")
        self.error_text = QLabel()
        self.error_text.setWordWrap(True)
        self.error_text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_tail = QPlainTextEdit()  # a traceback: long paths wrap anywhere
        self.error_tail.setReadOnly(True)
        self.error_tail.setFont(mono_font(self.font()))
        self.error_tail.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.error_tail.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        eb = QVBoxLayout(self.error_box)
        eb.setContentsMargins(10, 8, 10, 8)
        eb.addWidget(self.error_text)
        eb.addWidget(self.error_tail)
        self.error_box.hide()
        self.empty = QLabel(EMPTY_TEXT)
        self.empty.setObjectName("emptyState")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        self.previous = QLabel("The last run that finished:")
        self.previous.setObjectName("muted")
        self.title = QLabel()
        self.title.setObjectName("sectionTitle")
        self.title.setWordWrap(True)
        self.meta = QLabel()
        self.meta.setObjectName("muted")
        self.meta.setWordWrap(True)
        self.table = QTableWidget(0, 0)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.setAlternatingRowColors(True)
        self.overhead = QLabel()
        self.overhead.setWordWrap(True)
        self.speedup = QLabel()
        self.speedup.setWordWrap(True)
        self.equivalence = QLabel()
        self.equivalence.setObjectName("planVerdict")
        self.equivalence.setWordWrap(True)
        self.use_flags = QPushButton()
        self.use_flags.clicked.connect(self._on_use_flags_clicked)
        self.use_note = QLabel()
        self.use_note.setObjectName("muted")
        self.use_note.setWordWrap(True)
        self.use_row = QWidget()
        ur = QHBoxLayout(self.use_row)
        ur.setContentsMargins(0, 0, 0, 0)
        ur.addWidget(self.use_flags)
        ur.addWidget(self.use_note, 1)
        self.chart = _Chart()
        self.parts: tuple[QWidget, ...] = (
            self.previous,
            self.title,
            self.meta,
            self.table,
            self.overhead,
            self.speedup,
            self.equivalence,
            self.use_row,
            self.chart,
        )
        content = QWidget()
        layout = QVBoxLayout(content)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.error_box)
        layout.addWidget(self.empty)
        for part in self.parts:
            layout.addWidget(part, 1 if part is self.chart else 0)
        self._stretch = QWidget()  # takes the room when there is no chart
        layout.addWidget(self._stretch, 1)
        # It scrolls only when the window is too small for the table and the sentences;
        # otherwise the chart takes what they leave.
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setWidget(content)
        self.scroll.setStyleSheet(SCROLL_STYLE)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll)
        self.set_report(None)

    # ----------------------------------------------------------------- the error
    def show_error(self, message: str, tail: Sequence[str] = ()) -> None:
        """Why the run failed, with the last lines it wrote (its stderr)."""
        self.error_text.setText(message)
        lines = [c for t in tail if (c := clean(t))]
        self.error_tail.setPlainText("\n".join(lines))
        self.error_tail.setVisible(bool(lines))
        rows = min(len(lines), ERROR_LINES) + 1
        self.error_tail.setFixedHeight(rows * self.error_tail.fontMetrics().lineSpacing() + 12)
        self.error_box.show()
        self.empty.hide()
        self.previous.setVisible(self.report is not None)

    def clear_error(self) -> None:
        self.error_text.setText("")
        self.error_tail.setPlainText("")
        self.error_box.hide()
        self.previous.hide()
        self.empty.setVisible(self.report is None)

    # ----------------------------------------------------------------- the report
    def set_report(self, report: Mapping[str, Any] | None, chart: str | None = None) -> None:
        """Show ``report`` and the chart PNG at ``chart`` (None: no report yet)."""
        self.report = dict(report) if report is not None else None
        for part in self.parts:
            part.hide()
        self.empty.setVisible(report is None and self.error_box.isHidden())
        self.set_chart(chart)
        self.offer = flags_offer(report)
        if report is None:
            self.table.setRowCount(0)
            return
        cfg = report.get("config")
        cfg = cfg if isinstance(cfg, Mapping) else {}
        results = [r for r in report.get("results") or [] if isinstance(r, Mapping)]
        self.previous.setVisible(self.error_box.isVisibleTo(self))
        self._show_summary(report, cfg)
        self._show_table(cfg, results)
        self._show_lines(report)
        self._show_offer()

    def _show_summary(self, report: Mapping[str, Any], cfg: Mapping[str, Any]) -> None:
        what = [str(cfg.get("pipeline", "?")), str(cfg.get("model", "?"))]
        if cfg.get("width") and cfg.get("height"):
            what.append(f"{cfg['width']}×{cfg['height']}")
        if cfg.get("frames"):
            what.append(f"{cfg['frames']} frames")
        if cfg.get("steps"):
            what.append(_plural(cfg["steps"], "step"))
        if cfg.get("runs"):
            what.append(_plural(cfg["runs"], "timed run"))
        self.title.setText(" · ".join(what))
        device = report.get("device_name") or report.get("device") or "?"
        if report.get("device") and report.get("device_name"):
            device = f"{report['device_name']} ({report['device']})"
        meta = [f"on {device}", _when(report.get("date", ""))]
        versions = report.get("versions") or {}
        meta.append(
            ", ".join(
                f"{k} {versions[k]}" for k in ("orchard", "torch", "diffusers") if versions.get(k)
            )
        )
        if flags := fmt_flags(cfg.get("flags")):
            meta.append(f"flags: {flags}")
        self.meta.setText(" · ".join(m for m in meta if m))
        self.title.show()
        self.meta.show()

    def _show_table(self, cfg: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> None:
        cols = columns(cfg, results)
        levels = _levels(cfg, results)
        self.table.clear()
        self.table.setColumnCount(len(cols))
        self.table.setHorizontalHeaderLabels(cols)
        self.table.setRowCount(len(results))
        for row, r in enumerate(results):
            cells: list[tuple[str, str]] = [(str(r.get("path", "?")), "")]
            if "Variant" in cols:
                variant = str(r.get("variant") or "—")
                shown = "optimised" if variant == "optimized" else variant
                cells.append((shown, _variant_tip(r)))
            cold = "Loading the model, cold"
            if (warmup := num(r.get("warmup_s"))) is not None and warmup >= 0.01:
                cold += f", of which {fmt_duration(warmup)} warming up (compiling)"
            cells += [
                (fmt_duration(num(r.get("cold_load_s"))), cold),
                (fmt_latency(num(r.get("first_request_s"))), "The first request after loading"),
                (fmt_latency(num(r.get("median_s"))), "Median of the timed runs"),
                (fmt_latency(num(r.get("p95_s"))), "95th percentile of the timed runs"),
            ]
            cells += [
                (fmt_rate(_throughput(r, c)), f"Jobs per second, {c} at once") for c in levels
            ]
            memory = r.get("memory")
            cells.append(_peak(memory if isinstance(memory, Mapping) else {}))
            for col, (text, tip) in enumerate(cells):
                item = QTableWidgetItem(text)
                if tip:
                    item.setToolTip(tip)
                if cols[col] not in ("Path", "Variant"):
                    item.setTextAlignment(
                        Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                    )
                self.table.setItem(row, col, item)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.table.setVisible(bool(results))
        self._fit_table()

    def _fit_table(self) -> None:
        """The table as tall as its rows: no blank under them."""
        self.table.resizeRowsToContents()
        rows = sum(self.table.rowHeight(r) for r in range(self.table.rowCount()))
        frame = 2 * self.table.frameWidth()
        header = self.table.horizontalHeader()
        wide = header.length() > self.table.viewport().width()
        extra = self.table.horizontalScrollBar().sizeHint().height() if wide else 0
        height = self.table.horizontalHeader().sizeHint().height() + rows + frame + extra
        self.table.setFixedHeight(height)

    def _show_lines(self, report: Mapping[str, Any]) -> None:
        overhead = report.get("overhead_vs_direct_s") or {}
        parts = [
            f"{path} {'+' if s >= 0 else '−'}{fmt_latency(abs(s))}"
            for path, value in overhead.items()
            if (s := num(value)) is not None
        ]
        self.overhead.setText("Overhead over a direct call (median): " + ", ".join(parts))
        self.overhead.setVisible(bool(parts))

        speedup = report.get("speedup") or {}
        ratios = {p: s for p, v in speedup.items() if (s := num(v)) is not None}
        words = ", ".join(
            f"{p} ×{s:.2f}" + ("" if s >= 1 else " (slower)") for p, s in ratios.items()
        )
        self.speedup.setText(f"Speed-up of the optimised variant over plain: {words}")
        self.speedup.setVisible(bool(ratios))

        eq = report.get("equivalence")
        if isinstance(eq, Mapping):
            ok = bool(eq.get("ok"))
            numbers = []
            largest = mean = None
            if (psnr := num(eq.get("psnr_db"))) is not None:
                numbers.append("PSNR ∞ dB" if math.isinf(psnr) else f"PSNR {psnr:.1f} dB")
            if (largest := num(eq.get("max_abs_diff"))) is not None:
                numbers.append(f"largest pixel difference {largest:.3g}/255")
            if (mean := num(eq.get("mean_abs_diff"))) is not None:
                numbers.append(f"mean {mean:.3g}")
            if largest == 0 and (mean is None or mean == 0):
                numbers = ["identical pixels"]
            detail = f" ({', '.join(numbers)})" if numbers else ""
            self.equivalence.setText(
                f"✔ The optimised output matches the plain one{detail}."
                if ok
                else f"✖ The optimised output differs from the plain one{detail}: check the "
                "flags before serving with them."
            )
            self.equivalence.setProperty("ok", "true" if ok else "false")
            self.equivalence.style().unpolish(self.equivalence)
            self.equivalence.style().polish(self.equivalence)
        self.equivalence.setVisible(isinstance(eq, Mapping))

    # ----------------------------------------------------------------- the flags
    def set_configured(self, flags: Mapping[tuple[str, str], Mapping[str, Any]]) -> None:
        """The models the node's aiModels.json has, as ``(pipeline, model)``, with their
        flags: "Use these flags" is offered for those only."""
        self.configured = {k: dict(v) for k, v in flags.items()}
        self._show_offer()

    def show_flags_saved(self, text: str, error: bool = False) -> None:
        """The outcome of writing the flags: a confirmation, or why not."""
        self.use_note.setText(text)
        self.use_note.setObjectName("formError" if error else "muted")
        self.use_note.style().unpolish(self.use_note)
        self.use_note.style().polish(self.use_note)

    def _show_offer(self) -> None:
        offer = self.offer if self.report is not None else None
        self.use_row.setVisible(offer is not None)
        if offer is None:
            return
        pipeline, model, flags = offer
        self.use_flags.setText(f"Use these flags for {model}")
        current = self.configured.get((pipeline, model))
        if current is None:
            why = (
                f"{model} is not in the node's aiModels.json for {pipeline}: add it on the "
                "Models page first."
            )
        elif _same_flags(current, flags):
            why = f"{model} ({pipeline}) already has these flags in aiModels.json."
        else:
            why = ""
        self.use_flags.setEnabled(not why)
        self.use_flags.setToolTip(
            why
            or f"Write {fmt_flags(flags)} into the optimization_flags of {model} ({pipeline}) "
            "in aiModels.json; they apply when the node starts."
        )
        self.show_flags_saved(why)

    def _on_use_flags_clicked(self) -> None:
        if self.offer is not None:
            pipeline, model, flags = self.offer
            self.use_flags_requested.emit(pipeline, model, dict(flags))

    # ----------------------------------------------------------------- the chart
    def set_chart(self, path: str | None) -> None:
        """The chart PNG at ``path`` (read off the Qt thread); None hides it."""
        self._chart_path = path
        self.chart.pixmap = QPixmap()
        self.chart.hide()
        self._stretch.show()
        if path:
            run_in_thread(self, lambda: QImage(path), lambda img: self._on_chart(path, img))

    def _on_chart(self, path: str, image: object) -> None:
        if path != self._chart_path or not isinstance(image, QImage) or image.isNull():
            return
        self.chart.pixmap = QPixmap.fromImage(image)
        self._stretch.hide()
        self.chart.show()
        self.chart.update()

    def has_chart(self) -> bool:
        return not self.chart.pixmap.isNull()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if self.report is not None:
            self._fit_table()

    # ----------------------------------------------------------------- for tests
    def header_labels(self) -> list[str]:
        return [
            h.text() if (h := self.table.horizontalHeaderItem(c)) is not None else ""
            for c in range(self.table.columnCount())
        ]

    def cell_text(self, row: int, col: int | str) -> str:
        if isinstance(col, str):
            col = self.header_labels().index(col)
        item = self.table.item(row, col)
        return item.text() if item is not None else ""
