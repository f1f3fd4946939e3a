"""One job's picture: step previews while it runs, then the image or the video it made."""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QRectF, QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QColor, QDesktopServices, QImage, QPainter, QPaintEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from core import events as ev
from widgets._format import fmt_duration, fmt_wei
from widgets._media import Media, decode_data_url, load_media
from widgets._subscriptions import subscribe
from widgets._threads import run_in_thread

#: Model ids of the demo models, whose output is noise.
DEMO_PREFIX = "orchard-tiny/"

EMPTY_TEXT = (
    "No job yet. Start the node on the Node page, then send one from Test generation: "
    "its steps appear here as they are computed, then the image or video."
)


class _Canvas(QWidget):
    """Paints one frame scaled to fit, or several side by side (a video's previews)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.frames: list[QImage] = []
        self.message = EMPTY_TEXT
        self.setMinimumSize(200, 160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def sizeHint(self) -> QSize:
        return QSize(420, 320)

    def show_frames(self, frames: list[QImage]) -> None:
        self.frames = [f for f in frames if not f.isNull()]
        self.update()

    def paintEvent(self, _event: QPaintEvent) -> None:
        with QPainter(self) as p:
            self._paint(p)

    def _paint(self, p: QPainter) -> None:
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        rect = QRectF(self.rect())
        p.fillRect(rect, QColor("#20242c"))
        if not self.frames:
            p.setPen(QColor("#c9ced6"))
            p.drawText(
                rect.adjusted(24, 24, -24, -24),
                int(Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap),
                self.message,
            )
            return
        n = len(self.frames)
        cols = 1 if n == 1 else min(4, n)
        rows = (n + cols - 1) // cols
        gap = 6.0
        cell_w = (rect.width() - gap * (cols + 1)) / cols
        cell_h = (rect.height() - gap * (rows + 1)) / rows
        for i, frame in enumerate(self.frames):
            r, c = divmod(i, cols)
            cell = QRectF(gap + c * (cell_w + gap), gap + r * (cell_h + gap), cell_w, cell_h)
            size = frame.size().scaled(
                int(cell.width()), int(cell.height()), Qt.AspectRatioMode.KeepAspectRatio
            )
            target = QRectF(
                cell.center().x() - size.width() / 2,
                cell.center().y() - size.height() / 2,
                size.width(),
                size.height(),
            )
            p.drawImage(target, frame)


class JobPreview(QWidget):
    """Follows jobs on ``bus``: the newest one (``follow_latest``), or one shown with
    :meth:`show_job`. Previews arrive with :class:`~core.events.JobProgress`; the outputs
    named by :class:`~core.events.JobFinished` are read off the Qt thread and shown; a video
    plays in a loop. ``media_loaded(job_id)`` fires when a job's outputs are on screen.
    """

    media_loaded = Signal(str)

    def __init__(
        self, bus: ev.EventBus, follow_latest: bool = True, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.bus = bus
        self.follow_latest = follow_latest
        self.job_id: str | None = None
        self.capability = ""
        self.model_id = ""
        self.state = "idle"
        self.step = 0
        self.steps = 0
        self.previews_seen = 0
        self.outputs: tuple[str, ...] = ()
        self.media: Media | None = None
        self._frame = 0
        self._accept: set[str] = set()  # jobs this preview may follow when not following all
        self._where = ""
        self._finished_text = ""

        self.title = QLabel("Preview")
        self.title.setObjectName("sectionTitle")
        self.status = QLabel("")
        self.status.setObjectName("muted")
        self.status.setWordWrap(True)
        self.noise_note = QLabel("Demo model: its output is noise, by design.")
        self.noise_note.setObjectName("noiseNote")
        self.noise_note.hide()
        self.canvas = _Canvas()
        self.play_button = QPushButton("Pause")
        self.play_button.clicked.connect(self._on_play_clicked)
        self.open_file_button = QPushButton("Open file")
        self.open_file_button.clicked.connect(self._on_open_file_clicked)
        self.open_folder_button = QPushButton("Open folder")
        self.open_folder_button.clicked.connect(self._on_open_folder_clicked)
        buttons = QHBoxLayout()
        buttons.addWidget(self.play_button)
        buttons.addStretch(1)
        buttons.addWidget(self.open_file_button)
        buttons.addWidget(self.open_folder_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.status)
        layout.addWidget(self.noise_note)
        layout.addWidget(self.canvas, 1)
        layout.addLayout(buttons)
        self._player = QTimer(self)
        self._player.timeout.connect(self._on_player_timeout)
        self._update_buttons()
        subscribe(
            self,
            bus,
            self._on_job_event,
            ev.JobQueued,
            ev.JobAssigned,
            ev.JobProgress,
            ev.JobFinished,
            ev.JobFailed,
        )

    # ----------------------------------------------------------------- state in
    def expect_job(self, capability: str, model_id: str) -> None:
        """Follow the next job queued for ``(capability, model_id)`` (a job sent from here)."""
        self._accept.add(f"{capability}\n{model_id}")

    def show_job(
        self,
        job_id: str,
        capability: str,
        model_id: str,
        state: str,
        outputs: tuple[str, ...] = (),
        error: str = "",
        step: int = 0,
        steps: int = 0,
    ) -> None:
        """Show a job picked in the list: its outputs if it is done, else what comes next."""
        self._start(job_id, capability, model_id)
        self.state, self.step, self.steps = state, step, steps
        if state == "done" and outputs:
            self._finish(outputs, "")
        elif state in ("failed", "interrupted"):
            self._fail(error or state)
        else:
            self._refresh_status()

    # ----------------------------------------------------------------- queries
    @property
    def frames(self) -> list[QImage]:
        return self.canvas.frames

    # ----------------------------------------------------------------- slots
    def _on_job_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.JobQueued):
            key = f"{event.capability}\n{event.model_id}"
            if key in self._accept:
                self._accept.discard(key)
                self._start(event.job_id, event.capability, event.model_id)
            elif self.follow_latest and self.state not in ("queued", "running"):
                self._start(event.job_id, event.capability, event.model_id)
            return
        if getattr(event, "job_id", None) != self.job_id:
            return
        if isinstance(event, ev.JobAssigned):
            self.state = "running"
            where = "CPU" if event.gpu is not None and event.gpu < 0 else f"GPU {event.gpu}"
            self._where = where if event.gpu is not None else event.runner_id
            self._refresh_status()
        elif isinstance(event, ev.JobProgress):
            self.state = "running"
            self.step, self.steps = event.step, event.steps
            if event.previews:
                self.previews_seen += 1
                self.canvas.show_frames([decode_data_url(u) for u in event.previews])
            self._refresh_status()
        elif isinstance(event, ev.JobFinished):
            self._finished_text = (
                f"done in {fmt_duration(event.duration_s)}, {event.pixels:,} pixels, "
                f"fee {fmt_wei(event.fee)}"
            )
            self._finish(event.outputs, self._finished_text)
        elif isinstance(event, ev.JobFailed):
            self._fail(f"{event.reason} (HTTP {event.status})")

    def _start(self, job_id: str, capability: str, model_id: str) -> None:
        self._player.stop()
        self.job_id, self.capability, self.model_id = job_id, capability, model_id
        self.state, self.step, self.steps, self.previews_seen = "queued", 0, 0, 0
        self.outputs, self.media = (), None
        self._where = ""
        self._finished_text = ""
        self.title.setText(f"{capability} · {model_id}")
        self.noise_note.setVisible(model_id.startswith(DEMO_PREFIX))
        self.canvas.message = "Waiting for the first step…"
        self.canvas.show_frames([])
        self._refresh_status()

    def _finish(self, outputs: tuple[str, ...], text: str) -> None:
        self.state = "done"
        self.step = self.steps or self.step
        self.outputs = tuple(outputs)
        self.status.setText(f"Job {self._short()}: {text or 'done'}; reading the output…")
        job_id = self.job_id
        run_in_thread(self, lambda: load_media(outputs), lambda m: self._on_media(job_id, m))
        self._update_buttons()

    def _fail(self, reason: str) -> None:
        self._player.stop()
        self.state = "failed"
        self.status.setText(f"Job {self._short()} failed: {reason}")
        self.status.setProperty("error", True)
        self.canvas.message = f"Failed: {reason}"
        self.canvas.show_frames([])
        self._update_buttons()

    def _on_media(self, job_id: str | None, media: Media | Exception) -> None:
        if job_id != self.job_id:
            return  # another job took the preview meanwhile
        if isinstance(media, Exception):
            media = Media(error=str(media))
        self.media = media
        if media.error:
            self.status.setText(f"Job {self._short()}: cannot show the output: {media.error}")
            self._update_buttons()
            return
        video = media.is_video or (self.capability == "image-to-video" and len(media.frames) > 1)
        self._frame = 0
        if video and media.frames:
            self.canvas.show_frames([media.frames[0]])
            self._player.start(int(1000 / max(media.fps or 6.0, 1.0)))
            kind = f"video, {len(media.frames)} frames at {media.fps:.0f} fps"
        else:
            self.canvas.show_frames(media.frames)
            first = media.frames[0]
            kind = f"{first.width()}x{first.height()} image" + (
                f" ×{len(media.frames)}" if len(media.frames) > 1 else ""
            )
        done = self._finished_text or "done"
        self.status.setText(f"Job {self._short()}: {done} · {kind}")
        self._update_buttons()
        self.media_loaded.emit(job_id or "")

    def _on_player_timeout(self) -> None:
        if self.media and self.media.frames:
            self._frame = (self._frame + 1) % len(self.media.frames)
            self.canvas.show_frames([self.media.frames[self._frame]])

    def _on_play_clicked(self) -> None:
        if self._player.isActive():
            self._player.stop()
        elif self.media and len(self.media.frames) > 1:
            self._player.start(int(1000 / max(self.media.fps or 6.0, 1.0)))
        self._update_buttons()

    def _on_open_file_clicked(self) -> None:
        if self.outputs:
            QDesktopServices.openUrl(QUrl.fromLocalFile(self.outputs[0]))

    def _on_open_folder_clicked(self) -> None:
        if self.outputs:
            QDesktopServices.openUrl(QUrl.fromLocalFile(os.fspath(Path(self.outputs[0]).parent)))

    # ----------------------------------------------------------------- helpers
    def _short(self) -> str:
        return (self.job_id or "")[:8]

    def _refresh_status(self) -> None:
        self.status.setProperty("error", False)
        where = f" on {self._where}" if self._where else ""
        if self.state == "queued":
            text = f"Job {self._short()}: queued"
        elif self.steps:
            text = f"Job {self._short()}: step {self.step}/{self.steps}{where}"
        else:
            text = f"Job {self._short()}: {self.state}{where}"
        self.status.setText(text)
        self._update_buttons()

    def _update_buttons(self) -> None:
        has_output = bool(self.outputs)
        self.open_file_button.setEnabled(has_output)
        self.open_folder_button.setEnabled(has_output)
        video = self.media is not None and len(self.media.frames) > 1
        self.play_button.setVisible(video)
        self.play_button.setText("Pause" if self._player.isActive() else "Play")
