"""Encoding and decoding of the runner's media: PNG images, data URLs, uploads and MP4 video.

* :func:`encode_png` / :func:`png_data_url` write PNG at zlib level 1 by default. Measured
  on 512x512 RGB (Pillow 13, 2 CPU cores): a smooth gradient took 3.4 ms at level 1 and
  4.3 ms at level 6 (10.0 KB vs 4.4 KB); the same gradient with mild noise, closer to a
  generated picture, took 22 ms vs 40 ms (511 KB vs 450 KB). Level 6 saves little where
  the bytes are many, at up to twice the time.
* :func:`decode_image` turns uploaded bytes into an RGB :class:`PIL.Image.Image` and raises
  :class:`core.errors.BadRequest` with a message a person can act on for anything that is
  not a usable image (empty, not an image, truncated, too many pixels).
* :func:`encode_mp4` writes H.264 (libx264, yuv420p) MP4 in memory with PyAV; the ``moov``
  atom is moved in front of the media data ("faststart") so that players can start before
  the whole file has arrived. :func:`mp4_info` decodes a clip back to check it.

PyAV is imported lazily so that importing this module costs nothing for image-only work.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import logging
import struct
import urllib.parse
import warnings
from fractions import Fraction

import numpy as np
from PIL import Image, ImageOps

from core.errors import BadRequest

log = logging.getLogger(__name__)

#: Upload formats :func:`decode_image` accepts. Pillow can open many more, but some of its
#: plugins are rarely exercised (or, like EPS, run external programs), so uploads are
#: limited to the formats a person actually sends.
ACCEPTED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")

_DATA_URL_PREFIX = "data:"


# --------------------------------------------------------------------------------------
# PNG and data URLs
# --------------------------------------------------------------------------------------


def encode_png(img: Image.Image, compress_level: int = 1) -> bytes:
    """Encode ``img`` as PNG. ``compress_level`` is zlib's 0-9; 1 is fast and nearly as small."""
    if not 0 <= compress_level <= 9:
        raise ValueError(f"compress_level must be 0..9, got {compress_level}")
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def png_data_url(img: Image.Image, compress_level: int = 1) -> str:
    """``img`` as a ``data:image/png;base64,...`` URL."""
    b64 = base64.b64encode(encode_png(img, compress_level)).decode("ascii")
    return f"data:image/png;base64,{b64}"


def decode_data_url(url: str) -> bytes:
    """The bytes a ``data:`` URL carries (base64 or percent-encoded).

    Raises :class:`ValueError` when ``url`` is not a well-formed data URL.
    """
    if not isinstance(url, str) or not url[:5].lower() == _DATA_URL_PREFIX:
        raise ValueError("not a data URL: it must start with 'data:'")
    header, sep, payload = url[len(_DATA_URL_PREFIX) :].partition(",")
    if not sep:
        raise ValueError("malformed data URL: no ',' between the media type and the data")
    params = [p.strip().lower() for p in header.split(";")]
    if params[-1] == "base64":
        # Tolerate line-wrapped base64 (some clients wrap at 76 columns), nothing else.
        compact = "".join(payload.split())
        try:
            return base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ValueError(f"malformed data URL: the base64 data does not decode: {e}") from e
    return urllib.parse.unquote_to_bytes(payload)


# --------------------------------------------------------------------------------------
# Uploaded images
# --------------------------------------------------------------------------------------


@functools.cache
def _open_formats() -> tuple[str, ...]:
    """The accepted formats this Pillow build has a plugin for (Image.open raises on others)."""
    Image.init()
    return tuple(f for f in ACCEPTED_FORMATS if f in Image.OPEN)


def _too_big(field: str, width: int, height: int, max_pixels: int) -> BadRequest:
    return BadRequest(
        f"the uploaded {field!r} is {width}x{height} = {width * height} pixels, above this "
        f"runner's limit of {max_pixels}; scale it down and send it again"
    )


def _not_an_image(field: str, error: BaseException | str) -> BadRequest:
    if isinstance(error, Image.UnidentifiedImageError):
        reason = "its contents match none of these formats"
    elif isinstance(error, BaseException):
        reason = str(error) or type(error).__name__
        if "truncated" in reason.lower() or isinstance(error, EOFError):
            reason = f"the file is truncated or corrupt ({reason}); send the whole file"
    else:
        reason = error
    return BadRequest(
        f"the uploaded {field!r} is not an image Pillow can read "
        f"({', '.join(_open_formats())}): {reason}"
    )


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited over white."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I", "F") or mode.startswith("I;16"):
        # 16/32-bit grey and float: Pillow's convert() clips these to 0..255 instead of
        # scaling, which turns a 16-bit PNG white. Scale to 8 bits ourselves.
        a = np.asarray(im, dtype=np.float64)
        if mode == "F":
            peak = 1.0 if a.size and float(np.nanmax(a)) <= 1.0 else 255.0
        elif mode.startswith("I;16"):
            peak = 65535.0
        else:  # "I": 32-bit ints, 16-bit data in practice (older Pillow's 16-bit PNG)
            peak = 65535.0 if a.size and float(a.max()) > 255 else 255.0
        a8 = np.clip(np.nan_to_num(a) * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(a8).convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in im.info
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def decode_image(data: bytes, max_pixels: int, field: str = "image") -> Image.Image:
    """Open uploaded ``data`` as an upright 8-bit RGB image of at most ``max_pixels`` pixels.

    The EXIF orientation is applied, transparency is composited over white, and 16-bit,
    palette, grey and CMYK images are converted. ``field`` names the form field in messages.

    Raises :class:`core.errors.BadRequest` for empty data, data that is not an image in one
    of :data:`ACCEPTED_FORMATS`, a truncated or corrupt image, or one over ``max_pixels``.
    The size is checked from the header, before any pixel is decoded.
    """
    if not data:
        raise BadRequest(f"the uploaded {field!r} is empty (0 bytes); attach an image file")
    try:
        # Pillow warns (DecompressionBombWarning) above Image.MAX_IMAGE_PIXELS; our own
        # max_pixels check below decides instead, so record warnings rather than let them
        # escape (they would be errors under `-W error`). catch_warnings touches process-wide
        # state; a concurrent thread may miss a warning while it is active, nothing worse.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            im = Image.open(io.BytesIO(data), formats=_open_formats())
        for w in caught:
            log.debug("decoding the uploaded %r: %s", field, w.message)
    except Image.DecompressionBombError as e:
        # Over twice Pillow's limit: refused in the header, before our own check could run.
        raise BadRequest(
            f"the uploaded {field!r} is too large: {e} This runner's limit is {max_pixels} "
            "pixels; scale it down and send it again"
        ) from e
    except Exception as e:  # anything Pillow raises on hostile bytes
        raise _not_an_image(field, e) from e

    width, height = im.size
    if width * height > max_pixels:
        im.close()
        raise _too_big(field, width, height, max_pixels)
    if width <= 0 or height <= 0:
        im.close()
        raise _not_an_image(field, f"it has no pixels ({width}x{height})")

    try:
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            im.load()
            upright = ImageOps.exif_transpose(im) or im
            rgb = _to_rgb(upright)
    except Exception as e:
        raise _not_an_image(field, e) from e
    finally:
        im.close()
    rgb.load()
    return rgb


# --------------------------------------------------------------------------------------
# MP4
# --------------------------------------------------------------------------------------

#: Boxes (atoms) whose children hold chunk offsets (stco/co64) to fix after moving moov.
_CONTAINER_BOXES = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf"}


def _boxes(data: bytes | bytearray, start: int, end: int) -> list[tuple[bytes, int, int, int]]:
    """The boxes in ``data[start:end]`` as (type, offset, header length, total size)."""
    out: list[tuple[bytes, int, int, int]] = []
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                raise ValueError("truncated 64-bit box header")
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise ValueError(f"bad box size {size} for {kind!r} at {pos}")
        out.append((bytes(kind), pos, header, size))
        pos += size
    return out


def _shift_chunk_offsets(moov: bytearray, delta: int) -> None:
    """Add ``delta`` to every stco/co64 entry inside ``moov`` (a whole moov box), in place."""

    def walk(start: int, end: int) -> None:
        for kind, pos, header, size in _boxes(moov, start, end):
            body = pos + header
            if kind in _CONTAINER_BOXES:
                walk(body, pos + size)
            elif kind in (b"stco", b"co64"):
                (count,) = struct.unpack_from(">I", moov, body + 4)
                fmt, width = (">I", 4) if kind == b"stco" else (">Q", 8)
                limit = 2**32 if kind == b"stco" else 2**64
                for i in range(count):
                    at = body + 8 + i * width
                    (value,) = struct.unpack_from(fmt, moov, at)
                    if value + delta >= limit:
                        raise ValueError("chunk offset overflows stco")
                    struct.pack_into(fmt, moov, at, value + delta)

    _, _, header, size = _boxes(moov, 0, len(moov))[0]
    walk(header, size)


def _faststart(data: bytes) -> bytes:
    """Move the ``moov`` box in front of ``mdat`` (what ``movflags=+faststart`` does).

    FFmpeg's own faststart re-opens the output file by name, which an in-memory output does
    not have, so it is done here. Returns ``data`` unchanged if the layout is unexpected.
    """
    try:
        top = _boxes(data, 0, len(data))
        kinds = [b[0] for b in top]
        if b"moov" not in kinds or b"mdat" not in kinds:
            return data
        i_moov, i_mdat = kinds.index(b"moov"), kinds.index(b"mdat")
        if i_moov < i_mdat:
            return data
        _, m_pos, _, m_size = top[i_moov]
        moov = bytearray(data[m_pos : m_pos + m_size])
        _shift_chunk_offsets(moov, m_size)
        insert_at = top[i_mdat][1]
        # Free/skip boxes just before mdat stay where they are: harmless either way.
        return data[:insert_at] + bytes(moov) + data[insert_at:m_pos] + data[m_pos + m_size :]
    except (ValueError, struct.error) as e:
        log.warning("could not move the MP4 index to the front (%s); leaving it at the end", e)
        return data


def _even_rgb(img: Image.Image, width: int, height: int) -> np.ndarray:
    """``img`` as an RGB array padded (edge pixels repeated) to ``width`` x ``height``."""
    a = np.asarray(img.convert("RGB") if img.mode != "RGB" else img)
    pad_h, pad_w = height - a.shape[0], width - a.shape[1]
    if pad_h or pad_w:
        a = np.pad(a, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return np.ascontiguousarray(a)


def encode_mp4(frames: list[Image.Image], fps: int, crf: int = 20) -> bytes:
    """Encode ``frames`` as an H.264 (libx264, yuv420p) MP4 at ``fps``, entirely in memory.

    yuv420p needs even sides, so an odd width or height is padded by one row/column that
    repeats the edge. ``crf`` is x264's quality (0 lossless .. 51; 18-23 looks good). The
    x264 preset is "veryfast": about twice as fast as "medium" at a slightly larger size.
    """
    import av  # lazily: PyAV is only needed for video

    if not frames:
        raise ValueError("encode_mp4 needs at least one frame")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    w0, h0 = frames[0].size
    for i, f in enumerate(frames):
        if f.size != (w0, h0):
            raise ValueError(f"frame {i} is {f.size[0]}x{f.size[1]}, frame 0 is {w0}x{h0}")
    width, height = w0 + (w0 % 2), h0 + (h0 % 2)

    buf = io.BytesIO()
    time_base = Fraction(1, fps)
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(_even_rgb(img, width, height), format="rgb24")
            frame.pts = i
            frame.time_base = time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return _faststart(buf.getvalue())


def mp4_info(data: bytes) -> tuple[int, int, int, float]:
    """(frame count, width, height, fps) of the first video stream of an MP4.

    Frames are counted by decoding every one, so a clip that does not decode fully fails
    here rather than in a player. Raises :class:`ValueError` if there is no video stream.
    """
    import av

    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.video:
            raise ValueError("the MP4 has no video stream")
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        return count, stream.codec_context.width, stream.codec_context.height, fps
