"""Turning job media into QImages: preview data URLs, output PNGs, output MP4s (PyAV).

:func:`load_media` reads files: call it off the Qt thread (``widgets._threads``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtGui import QImage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov")
#: Frames decoded from one video at most (a long video is shown in part).
MAX_FRAMES = 120


@dataclass
class Media:
    frames: list[QImage] = field(default_factory=list)
    fps: float = 0.0
    is_video: bool = False
    error: str = ""


def decode_data_url(url: str) -> QImage:
    """A ``data:image/...;base64,`` URL as a QImage (null if it cannot be read)."""
    _, _, payload = url.partition(",")
    try:
        data = base64.b64decode(payload, validate=False)
    except ValueError:
        return QImage()
    return QImage.fromData(data)


def _decode_video(path: Path) -> Media:
    try:
        import av
    except ImportError:
        return Media(error="playing videos needs PyAV: pip install av")
    frames: list[QImage] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.base_rate
        fps = float(rate) if rate else 6.0
        for frame in container.decode(stream):
            rgb = frame.to_ndarray(format="rgb24")
            h, w, _ = rgb.shape
            image = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888)
            frames.append(image.copy())  # own the pixels: the array goes away
            if len(frames) >= MAX_FRAMES:
                break
    return Media(frames, fps, is_video=True)


def load_media(paths: list[str] | tuple[str, ...]) -> Media:
    """The frames of a job's outputs: one image, several images, or a video's frames."""
    files = [Path(p) for p in paths]
    videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
    if videos:
        return _decode_video(videos[0])
    frames = []
    for p in files:
        if p.suffix.lower() in IMAGE_SUFFIXES:
            image = QImage(str(p))
            if image.isNull():
                return Media(error=f"cannot read {p}")
            frames.append(image)
    if not frames:
        return Media(error="the job has no image or video output")
    return Media(frames, fps=6.0 if len(frames) > 1 else 0.0)
