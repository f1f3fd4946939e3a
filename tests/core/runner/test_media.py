"""Tests for core.runner.media with real Pillow and PyAV (no mocks)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from core.errors import BadRequest
from core.runner import media

RNG = np.random.default_rng(1234)


def _noise(w: int, h: int, mode: str = "RGB") -> Image.Image:
    channels = len(mode)
    a = RNG.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
    return Image.fromarray(a[..., 0] if channels == 1 else a).convert(mode)


def _save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG signature + IHDR + empty IDAT + IEND claiming ``width`` x ``height``."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


# ---- PNG and data URLs -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_png_data_url_round_trip_is_pixel_exact(mode: str) -> None:
    img = _noise(37, 23, mode)
    url = media.png_data_url(img)
    assert url.startswith("data:image/png;base64,")
    back = Image.open(io.BytesIO(media.decode_data_url(url)))
    assert back.format == "PNG"
    assert back.mode == mode
    assert np.array_equal(np.asarray(back), np.asarray(img))


def test_encode_png_levels_decode_the_same() -> None:
    img = _noise(32, 32)
    fast, small = media.encode_png(img, 1), media.encode_png(img, 9)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(fast))), np.asarray(img))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(small))), np.asarray(img))
    with pytest.raises(ValueError, match="compress_level"):
        media.encode_png(img, 10)


def test_decode_data_url_variants() -> None:
    assert media.decode_data_url("data:text/plain;base64,aGVsbG8=") == b"hello"
    assert media.decode_data_url("DATA:;BASE64,aGVs\nbG8=") == b"hello"
    assert media.decode_data_url("data:,hello%20world") == b"hello world"
    assert media.decode_data_url("data:image/png;base64,") == b""


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/a.png",
        "image/png;base64,aGVsbG8=",
        "data:image/png;base64",
        "data:image/png;base64,a$b=",
        "data:image/png;base64,aGVsbG8",  # bad padding
    ],
)
def test_decode_data_url_rejects_malformed(url: str) -> None:
    with pytest.raises(ValueError):
        media.decode_data_url(url)


# ---- decode_image ------------------------------------------------------------------------


def test_decode_png_is_exact_and_rgb() -> None:
    img = _noise(40, 30)
    out = media.decode_image(_save(img, "PNG"), max_pixels=10_000)
    assert out.mode == "RGB"
    assert out.size == (40, 30)
    assert np.array_equal(np.asarray(out), np.asarray(img))


def test_decode_jpeg() -> None:
    img = Image.new("RGB", (48, 32), (200, 40, 10))
    out = media.decode_image(_save(img, "JPEG", quality=95), max_pixels=10_000)
    assert out.mode == "RGB"
    assert out.size == (48, 32)
    assert np.abs(np.asarray(out).astype(int) - (200, 40, 10)).max() <= 3


def test_decode_rgba_composites_on_white() -> None:
    a = np.zeros((10, 20, 4), dtype=np.uint8)
    a[:, :10] = (255, 0, 0, 0)  # fully transparent red -> white
    a[:, 10:] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    out = np.asarray(media.decode_image(_save(Image.fromarray(a, "RGBA"), "PNG"), 1000))
    assert (out[:, :10] == 255).all()
    assert np.abs(out[:, 10:].astype(int) - 127).max() <= 1


def test_decode_la() -> None:
    img = Image.new("LA", (8, 8), (0, 0))
    out = np.asarray(media.decode_image(_save(img, "PNG"), 1000))
    assert (out == 255).all()


def test_decode_palette_with_and_without_transparency() -> None:
    pal = Image.new("P", (16, 16), 1)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * (254 * 3))
    out = np.asarray(media.decode_image(_save(pal, "PNG"), 1000))
    assert (out == (0, 255, 0)).all()

    out_t = np.asarray(media.decode_image(_save(pal, "PNG", transparency=1), 1000))
    assert (out_t == 255).all()

    gif = np.asarray(media.decode_image(_save(pal, "GIF"), 1000))
    assert (gif == (0, 255, 0)).all()


def test_decode_grey_cmyk_and_16_bit() -> None:
    grey = Image.new("L", (6, 4), 77)
    assert (np.asarray(media.decode_image(_save(grey, "PNG"), 100)) == 77).all()

    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red
    out = np.asarray(media.decode_image(_save(cmyk, "JPEG", quality=95), 1000)).astype(int)
    assert out[..., 0].mean() > 230
    assert out[..., 1].mean() < 30
    assert out[..., 2].mean() < 30

    a16 = np.zeros((4, 8), dtype=np.uint16)
    a16[:, :4] = 65535
    a16[:, 4:] = 32896  # 128 * 257
    img16 = Image.fromarray(a16)
    assert img16.mode.startswith("I;16")
    out16 = np.asarray(media.decode_image(_save(img16, "PNG"), 100))
    assert (out16[:, :4] == 255).all()
    assert (out16[:, 4:] == 128).all()


def test_decode_applies_exif_orientation() -> None:
    img = Image.new("RGB", (40, 20), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = media.decode_image(_save(img, "JPEG", exif=exif), 10_000)
    assert out.size == (20, 40)


@pytest.mark.parametrize(
    "data",
    [b"hello, this is not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, b"%PDF-1.7\n"],
)
def test_not_an_image_is_bad_request(data: bytes) -> None:
    with pytest.raises(BadRequest, match="the uploaded 'image' is not an image Pillow can read"):
        media.decode_image(data, 10_000)


def test_message_names_the_field() -> None:
    with pytest.raises(BadRequest, match="the uploaded 'mask' is not an image"):
        media.decode_image(b"nope", 10_000, field="mask")


def test_empty_is_bad_request() -> None:
    with pytest.raises(BadRequest, match="empty") as ei:
        media.decode_image(b"", 10_000)
    assert ei.value.status == 400


def test_format_outside_the_accepted_list_is_refused() -> None:
    ppm = _save(_noise(8, 8), "PPM")
    with pytest.raises(BadRequest, match="not an image Pillow can read"):
        media.decode_image(ppm, 10_000)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image_is_bad_request(fmt: str) -> None:
    data = _save(_noise(64, 64), fmt)
    with pytest.raises(BadRequest, match="not an image Pillow can read") as ei:
        media.decode_image(data[: len(data) // 2], 100_000)
    assert "truncated" in ei.value.msg


def test_over_max_pixels_is_bad_request() -> None:
    data = _save(_noise(64, 64), "PNG")
    with pytest.raises(BadRequest, match=r"64x64 = 4096 pixels, above this runner's limit of 4000"):
        media.decode_image(data, max_pixels=4000)
    assert media.decode_image(data, max_pixels=4096).size == (64, 64)


def test_header_over_pillow_warning_limit_is_refused_by_size() -> None:
    # 100 M pixels: above Image.MAX_IMAGE_PIXELS, so Pillow warns (an error under -W error);
    # the size check must still answer, from the header, without decoding anything.
    data = _png_header_only(10_000, 10_000)
    with pytest.raises(BadRequest, match=r"10000x10000 = 100000000 pixels, above this runner's"):
        media.decode_image(data, max_pixels=4_000_000)


def test_decompression_bomb_is_bad_request() -> None:
    data = _png_header_only(30_000, 30_000)
    with pytest.raises(BadRequest, match="too large") as ei:
        media.decode_image(data, max_pixels=4_000_000)
    assert "4000000" in ei.value.msg


# ---- MP4 ---------------------------------------------------------------------------------


def _frames(w: int, h: int, n: int = 14) -> list[Image.Image]:
    return [Image.new("RGB", (w, h), (i * 15, 120, 255 - i * 15)) for i in range(n)]


@pytest.mark.parametrize(
    ("size", "fps", "coded"),
    [((64, 48), 7, (64, 48)), ((65, 33), 8, (66, 34))],
)
def test_mp4_round_trip(size: tuple[int, int], fps: int, coded: tuple[int, int]) -> None:
    data = media.encode_mp4(_frames(*size), fps=fps)
    assert data[4:8] == b"ftyp"
    count, width, height, got_fps = media.mp4_info(data)
    assert count == 14
    assert (width, height) == coded
    assert got_fps == pytest.approx(fps)


def test_mp4_is_faststart_and_colours_survive() -> None:
    import av

    data = media.encode_mp4(_frames(64, 48), fps=7)
    assert 0 < data.find(b"moov") < data.find(b"mdat")
    with av.open(io.BytesIO(data), mode="r") as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(decoded) == 14
    for i in (0, 13):
        mean = decoded[i].reshape(-1, 3).mean(axis=0)
        assert np.abs(mean - (i * 15, 120, 255 - i * 15)).max() < 8


def test_mp4_accepts_rgba_frames() -> None:
    frames = [f.convert("RGBA") for f in _frames(32, 32, n=3)]
    assert media.mp4_info(media.encode_mp4(frames, fps=10))[:3] == (3, 32, 32)


def test_mp4_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one frame"):
        media.encode_mp4([], fps=7)
    with pytest.raises(ValueError, match="frame 1"):
        media.encode_mp4([Image.new("RGB", (32, 32)), Image.new("RGB", (34, 32))], fps=7)
    with pytest.raises(ValueError, match="fps"):
        media.encode_mp4(_frames(32, 32, 2), fps=0)


def test_faststart_leaves_unexpected_layouts_alone() -> None:
    assert media._faststart(b"not an mp4 at all") == b"not an mp4 at all"


def test_dark_16_bit_stays_dark() -> None:
    img16 = Image.fromarray(np.full((4, 4), 200, dtype=np.uint16))
    out = np.asarray(media.decode_image(_save(img16, "PNG"), 100))
    assert (out <= 1).all()
