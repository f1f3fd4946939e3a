from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from pytestqt.qtbot import QtBot

from core import events as ev
from core.runner.media import encode_mp4
from widgets.job_preview import JobPreview


def jpeg_url(color: tuple[int, int, int], size: int = 32) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def test_steps_then_the_final_image(qtbot: QtBot, tmp_path: Path) -> None:
    bus = ev.EventBus()
    preview = JobPreview(bus)
    qtbot.addWidget(preview)
    assert preview.state == "idle" and preview.frames == []
    assert "Start the node" in preview.canvas.message
    out = tmp_path / "j1-0.png"
    Image.new("RGB", (96, 64), (10, 200, 30)).save(out)
    bus.emit(ev.JobQueued("j1", "text-to-image", "orchard-tiny/sdxl", 1))
    assert preview.job_id == "j1" and not preview.noise_note.isHidden()
    bus.emit(ev.JobAssigned("j1", "runner-cpu0", -1))
    bus.emit(ev.JobProgress("j1", 1, 4, (jpeg_url((255, 0, 0)),)))
    bus.emit(ev.JobProgress("j1", 2, 4, (jpeg_url((0, 0, 255)),)))
    assert preview.previews_seen == 2
    assert preview.status.text() == "Job j1: step 2/4 on CPU"
    assert preview.frames[0].pixelColor(16, 16).blue() > 200  # the newest step is shown
    assert not preview.open_file_button.isEnabled()
    with qtbot.waitSignal(preview.media_loaded, timeout=5000):
        bus.emit(ev.JobFinished("j1", (str(out),), 1.25, 262144, "0"))
    assert preview.state == "done"
    assert (preview.frames[0].width(), preview.frames[0].height()) == (96, 64)
    assert "96x64 image" in preview.status.text() and "1.25 s" in preview.status.text()
    assert preview.open_file_button.isEnabled()
    assert not preview.grab().isNull()


def test_a_video_plays_its_frames(qtbot: QtBot, tmp_path: Path) -> None:
    bus = ev.EventBus()
    preview = JobPreview(bus)
    qtbot.addWidget(preview)
    frames = [Image.new("RGB", (64, 64), (i * 30, 0, 0)) for i in range(8)]
    mp4 = tmp_path / "v-0.mp4"
    mp4.write_bytes(encode_mp4(frames, fps=8))
    bus.emit(ev.JobQueued("v", "image-to-video", "stabilityai/svd", 1))
    four = tuple(jpeg_url((0, i * 50, 0), 16) for i in range(4))
    bus.emit(ev.JobProgress("v", 1, 2, four))
    assert len(preview.frames) == 4  # a video's previews side by side
    with qtbot.waitSignal(preview.media_loaded, timeout=10000):
        bus.emit(ev.JobFinished("v", (str(mp4),), 3.0, 64 * 64 * 25, "0"))
    assert preview.media is not None and len(preview.media.frames) == 8
    assert "video, 8 frames at 8 fps" in preview.status.text()
    assert preview.play_button.isVisibleTo(preview) and preview.play_button.text() == "Pause"
    first = preview.frames[0]
    qtbot.waitUntil(lambda: preview.frames[0] is not first, timeout=2000)  # it plays
    preview.play_button.click()
    assert preview.play_button.text() == "Play"


def test_a_failed_job_says_why(qtbot: QtBot) -> None:
    bus = ev.EventBus()
    preview = JobPreview(bus)
    qtbot.addWidget(preview)
    bus.emit(ev.JobQueued("f", "text-to-image", "m/x", 1))
    bus.emit(ev.JobFailed("f", 500, "GPU out of memory"))
    assert preview.state == "failed"
    assert "GPU out of memory (HTTP 500)" in preview.status.text()
    assert "Failed" in preview.canvas.message


def test_following_one_job_ignores_others(qtbot: QtBot) -> None:
    bus = ev.EventBus()
    preview = JobPreview(bus, follow_latest=False)
    qtbot.addWidget(preview)
    bus.emit(ev.JobQueued("other", "text-to-image", "m/a", 1))
    assert preview.job_id is None
    preview.expect_job("image-to-video", "m/v")
    bus.emit(ev.JobQueued("mine", "image-to-video", "m/v", 1))
    bus.emit(ev.JobProgress("other", 1, 2, (jpeg_url((1, 2, 3)),)))
    assert preview.job_id == "mine" and preview.previews_seen == 0


def test_open_file_and_folder(
    qtbot: QtBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[QUrl] = []
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(opened.append))
    out = tmp_path / "day" / "k-0.png"
    out.parent.mkdir()
    Image.new("RGB", (8, 8)).save(out)
    preview = JobPreview(ev.EventBus())
    qtbot.addWidget(preview)
    with qtbot.waitSignal(preview.media_loaded, timeout=5000):
        preview.show_job("k", "text-to-image", "m", "done", (str(out),))
    preview.open_file_button.click()
    preview.open_folder_button.click()
    assert [u.toLocalFile() for u in opened] == [str(out), str(out.parent)]
