"""Tests for core.runner.preview: the linear latent->RGB map and the rate-limited previews."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from core.runner import preview
from core.runner.media import decode_data_url
from core.runner.preview import FAMILIES, PreviewMaker, latents_to_rgb


class FakeClock:
    """A settable monotonic clock, so rate limiting is tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _direction(family: str, sign: float) -> torch.Tensor:
    """The latent channel vector that most increases red minus blue for ``family``."""
    m, _ = preview.factors(family)
    return sign * (m[:, 0] - m[:, 2])


def _latent(vec: torch.Tensor, h: int = 8, w: int = 8) -> torch.Tensor:
    return vec.view(4, 1, 1).expand(4, h, w).clone()


def _jpeg(url: str) -> Image.Image:
    assert url.startswith("data:image/jpeg;base64,")
    img = Image.open(io.BytesIO(decode_data_url(url)))
    assert img.format == "JPEG"
    img.load()
    return img


def _redness(rgb: np.ndarray) -> float:
    a = rgb.reshape(-1, 3).astype(float)
    return float(a[:, 0].mean() - a[:, 2].mean())


# ---- latents_to_rgb ------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_shape_and_dtype(family: str) -> None:
    out = latents_to_rgb(torch.randn(4, 128, 72), family)
    assert isinstance(out, np.ndarray)
    assert out.shape == (128, 72, 3)
    assert out.dtype == np.uint8


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_latent_is_the_bias_colour(family: str) -> None:
    _, bias = preview.factors(family)
    out = latents_to_rgb(torch.zeros(4, 4, 4), family)
    expected = ((bias + 1) * 127.5).numpy()
    assert np.abs(out.reshape(-1, 3) - expected).max() <= 1


@pytest.mark.parametrize("family", FAMILIES)
def test_red_direction_is_redder_than_blue_direction(family: str) -> None:
    red = latents_to_rgb(_latent(_direction(family, +1.0)), family)
    blue = latents_to_rgb(_latent(_direction(family, -1.0)), family)
    assert _redness(red) > 0 > _redness(blue)
    assert red[..., 0].mean() > blue[..., 0].mean()
    assert red[..., 2].mean() < blue[..., 2].mean()


def test_sd_and_sdxl_factors_differ_and_svd_shares_sd() -> None:
    sd, _ = preview.factors("sd")
    sdxl, _ = preview.factors("sdxl")
    svd, _ = preview.factors("svd")
    assert sd.shape == sdxl.shape == (4, 3)
    assert torch.equal(sd, svd)
    assert not torch.equal(sd, sdxl)


def test_output_is_clamped() -> None:
    out = latents_to_rgb(_latent(_direction("sd", 100.0)), "sd")
    assert (out[..., 0] == 255).all()
    assert (out[..., 2] == 0).all()


def test_half_precision_input() -> None:
    lat = torch.randn(4, 16, 16)
    full = latents_to_rgb(lat, "sdxl").astype(int)
    half = latents_to_rgb(lat.half(), "sdxl").astype(int)
    assert np.abs(full - half).max() <= 2


@pytest.mark.parametrize("family", FAMILIES)
def test_torch_path_matches_numpy_path(family: str) -> None:
    # GPUs use the torch einsum path; CPU latents the NumPy one. Both must agree.
    x = torch.randn(3, 4, 20, 12) * 2
    via_torch = preview._rgb_torch(x, family).astype(int)
    via_numpy = preview._rgb_numpy(x.numpy(), family).astype(int)
    assert via_torch.shape == via_numpy.shape == (3, 20, 12, 3)
    assert np.abs(via_torch - via_numpy).max() <= 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_latents_match_cpu() -> None:
    x = torch.randn(1, 14, 4, 72, 128)
    cpu = PreviewMaker("svd").maybe(0, 25, x)
    gpu = PreviewMaker("svd").maybe(0, 25, x.cuda().half())
    assert cpu is not None and gpu is not None and len(cpu) == len(gpu) == 8
    for a, b in zip(cpu, gpu, strict=True):
        diff = np.abs(np.asarray(_jpeg(a)).astype(int) - np.asarray(_jpeg(b)).astype(int))
        assert diff.mean() < 3


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="family"):
        latents_to_rgb(torch.zeros(4, 4, 4), "flux")
    with pytest.raises(ValueError, match="4-channel"):
        latents_to_rgb(torch.zeros(16, 4, 4), "sd")
    with pytest.raises(ValueError, match="one latent"):
        latents_to_rgb(torch.zeros(1, 4, 4, 4), "sd")
    with pytest.raises(ValueError, match="family"):
        PreviewMaker("flux")


# ---- PreviewMaker ------------------------------------------------------------------------


def test_image_preview_is_a_small_jpeg() -> None:
    pm = PreviewMaker("sdxl")
    out = pm.maybe(0, 30, torch.randn(1, 4, 128, 72))
    assert out is not None and len(out) == 1
    img = _jpeg(out[0])
    assert img.size == (72, 128)
    assert max(img.size) <= pm.max_side


@pytest.mark.parametrize("max_side", [32, 50, 127])
def test_preview_is_downscaled_to_max_side(max_side: int) -> None:
    pm = PreviewMaker("sd", max_side=max_side)
    out = pm.maybe(0, 10, torch.randn(1, 4, 128, 72))
    assert out is not None
    img = _jpeg(out[0])
    assert max(img.size) <= max_side
    assert max(img.size) >= max_side - 1
    assert img.size[0] < img.size[1]  # aspect ratio kept (portrait)


def test_first_item_of_an_image_batch_is_previewed() -> None:
    red, blue = _latent(_direction("sd", 3.0)), _latent(_direction("sd", -3.0))
    out = PreviewMaker("sd").maybe(0, 10, torch.stack([red, blue]))
    assert out is not None and len(out) == 1
    assert _redness(np.asarray(_jpeg(out[0]))) > 50


def test_rate_limit_first_and_last_always() -> None:
    clock = FakeClock()
    pm = PreviewMaker("sdxl", min_interval_s=0.25, clock=clock)
    lat = torch.randn(1, 4, 16, 16)
    total = 20
    assert pm.maybe(0, total, lat) is not None
    for step in range(1, total - 1):
        clock.now += 0.01  # 0.18 s in all: within the interval
        assert pm.maybe(step, total, lat) is None, step
    assert pm.maybe(total - 1, total, lat) is not None


def test_rate_limit_lets_one_through_per_interval() -> None:
    clock = FakeClock()
    pm = PreviewMaker("sd", min_interval_s=0.25, clock=clock)
    lat = torch.randn(1, 4, 8, 8)
    made = []
    for step in range(50):
        clock.now += 0.1
        if pm.maybe(step, 50, lat) is not None:
            made.append(step)
    # step 0, then every third step (0.3 s >= 0.25 s), and the last one.
    assert made[0] == 0 and made[-1] == 49
    gaps = np.diff(made[:-1])
    assert (gaps == 3).all()
    assert not pm.due(made[-1] + 1, 100)  # just made one


def test_no_rate_limit_with_zero_interval() -> None:
    pm = PreviewMaker("sd", min_interval_s=0.0, clock=FakeClock())
    lat = torch.randn(1, 4, 8, 8)
    assert all(pm.maybe(s, 10, lat) is not None for s in range(10))


def test_video_gives_one_preview_per_frame() -> None:
    lat = torch.randn(1, 5, 4, 72, 128)
    out = PreviewMaker("svd").maybe(0, 25, lat)
    assert out is not None and len(out) == 5
    for url in out:
        assert _jpeg(url).size == (128, 72)


def test_long_video_is_subsampled_evenly_keeping_first_and_last() -> None:
    frames = 14
    # Frame i is pushed along the red direction by an amount that grows with i.
    vecs = [_direction("svd", -2.0 + 4.0 * i / (frames - 1)) for i in range(frames)]
    lat = torch.stack([_latent(v, 16, 16) for v in vecs]).unsqueeze(0)
    assert lat.shape == (1, frames, 4, 16, 16)

    out = PreviewMaker("svd").maybe(0, 25, lat)
    assert out is not None and len(out) == preview.MAX_PREVIEW_FRAMES == 8
    reds = [_redness(np.asarray(_jpeg(u))) for u in out]
    assert reds == sorted(reds)
    first = _redness(latents_to_rgb(lat[0, 0], "svd"))
    last = _redness(latents_to_rgb(lat[0, -1], "svd"))
    assert abs(reds[0] - first) < 6
    assert abs(reds[-1] - last) < 6

    everything = PreviewMaker("svd", max_frames=frames).maybe(0, 25, lat)
    assert everything is not None and len(everything) == frames


def test_maybe_refuses_bad_shapes_without_counting_them() -> None:
    pm = PreviewMaker("sd", clock=FakeClock())
    with pytest.raises(ValueError, match="expected latents"):
        pm.maybe(0, 10, torch.zeros(4, 8, 8))
    assert pm.due(3, 10)  # the failed call did not start the interval
