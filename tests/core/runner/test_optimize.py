"""Optimisation flags on real pipelines (the tiny models, CPU, fp32): each flag keeps the
outputs of the plain path, batching keeps each request's images, and the staged weight copy
moves every tensor intact. torch.compile itself is exercised by the bench smoke test
(``--compare --flags COMPILE=unet``), which checks its outputs against the plain path."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from core import optimizations as optim
from core.errors import BadRequest
from core.pipelines import Capability
from core.pipelines.image_to_video import ImageToVideoParams
from core.pipelines.text_to_image import TextToImageParams
from core.runner import optimize
from core.runner.engine import Engine
from core.runner.tiny import TINY_SDXL, TINY_SVD


def _pixels(images: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(i, dtype=np.int16) for i in images])


def _t2i(prompt: str = "a lighthouse", **kw: Any) -> TextToImageParams:
    return TextToImageParams(
        prompt=prompt, model_id=TINY_SDXL, width=64, height=64, num_inference_steps=2, **kw
    )


def _generate(engine: Engine, flags: dict[str, Any] | None, seed: int = 7) -> np.ndarray:
    model = engine.load(Capability.TEXT_TO_IMAGE, TINY_SDXL, flags)
    try:
        out = engine.text_to_image(model, _t2i(num_images_per_prompt=2), seed)
        return _pixels(out.images)
    finally:
        engine.unload(Capability.TEXT_TO_IMAGE, TINY_SDXL)


@pytest.fixture
def engine(tiny_models: Path) -> Any:
    eng = Engine("cpu", tiny_models)
    yield eng
    eng.shutdown()


@pytest.mark.parametrize(
    "flags",
    [
        {"CHANNELS_LAST": True},
        {"FUSE_QKV": True},
        {"VAE_FP16": True, "PNG_LEVEL": "0"},
        {"CHANNELS_LAST": True, "FUSE_QKV": "true", "SFAST": True},
    ],
)
def test_flags_keep_the_plain_outputs(engine: Engine, flags: dict[str, Any]) -> None:
    plain = _generate(engine, None)
    fast = _generate(engine, flags)
    assert plain.shape == fast.shape == (2, 64, 64, 3)
    assert np.abs(plain - fast).max() <= 1  # uint8 levels: fp32 rounding only


def test_load_reports_what_each_flag_did(engine: Engine) -> None:
    model = engine.load(
        Capability.TEXT_TO_IMAGE,
        TINY_SDXL,
        {"CHANNELS_LAST": True, "FUSE_QKV": True, "VAE_FP16": True, "SFAST": True, "BATCH": "3"},
    )
    notes = "\n".join(model.optimization_notes)
    assert "CHANNELS_LAST: unet (" in notes and "CHANNELS_LAST: vae (" in notes
    assert "FUSE_QKV: unet" in notes
    from diffusers.models.attention_processor import FusedAttnProcessor2_0

    processors = model.pipe.unet.attn_processors.values()
    assert all(isinstance(p, FusedAttnProcessor2_0) for p in processors)
    assert "VAE_FP16: skipped (the model runs in fp32 here)" in notes
    assert "SFAST: ignored" in notes
    assert model.optimizations.batch == 3
    assert model.pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def test_unknown_or_bad_flags_are_refused_before_loading(engine: Engine) -> None:
    with pytest.raises(BadRequest, match='did you mean "CHANNELS_LAST"'):
        engine.load(Capability.TEXT_TO_IMAGE, TINY_SDXL, {"CHANNEL_LAST": True})
    with pytest.raises(BadRequest, match="BATCH must be a whole number from 1 to 64"):
        engine.load(Capability.TEXT_TO_IMAGE, TINY_SDXL, {"BATCH": "lots"})
    with pytest.raises(BadRequest, match="COMPILE_MODE needs COMPILE"):
        engine.load(Capability.TEXT_TO_IMAGE, TINY_SDXL, {"COMPILE_MODE": "default"})
    assert engine.models() == []
    # and the engine still loads and runs a good model afterwards
    assert _generate(engine, None).shape == (2, 64, 64, 3)


def test_batched_requests_get_the_images_they_would_get_alone(engine: Engine) -> None:
    model = engine.load(Capability.TEXT_TO_IMAGE, TINY_SDXL, {"BATCH": "8"})
    requests = [
        (_t2i("a red barn"), 11),
        (_t2i("a blue lake", num_images_per_prompt=2), 20),
        (_t2i("a green hill"), 33),
    ]
    alone = [engine.text_to_image(model, p, seed) for p, seed in requests]

    # Hold the worker thread so the three requests wait together, as concurrent ones do.
    gate = threading.Event()
    engine.submit(gate.wait)
    calls = []
    original = engine._run

    def counting(*args: Any) -> Any:
        calls.append(args[1]["generator"])
        return original(*args)

    engine._run = counting  # type: ignore[method-assign]
    started: list[int] = []
    futures = [
        engine.submit_images(
            model, p, seed, None, lambda s=seed: started.append(s), width=64, height=64
        )
        for p, seed in requests
    ]
    gate.set()
    batched = [f.result(timeout=120) for f in futures]

    assert len(calls) == 1 and len(calls[0]) == 4  # one pipeline call for four images
    assert sorted(started) == [11, 20, 33]
    for solo, together in zip(alone, batched, strict=True):
        assert together.seeds == solo.seeds
        assert len(together.images) == len(solo.images)
        assert np.abs(_pixels(solo.images) - _pixels(together.images)).max() <= 2


def test_batches_hold_only_compatible_requests(engine: Engine) -> None:
    model = engine.load(Capability.TEXT_TO_IMAGE, TINY_SDXL, {"BATCH": "2"})
    gate = threading.Event()
    engine.submit(gate.wait)
    sizes = []
    original = engine._run

    def recording(*args: Any) -> Any:
        sizes.append((args[1]["width"], len(args[1]["generator"])))
        return original(*args)

    engine._run = recording  # type: ignore[method-assign]
    futures = [
        engine.submit_images(model, _t2i(), 1, width=64, height=64),
        engine.submit_images(model, _t2i(), 2, width=72, height=64),  # another size
        engine.submit_images(model, _t2i(), 3, width=64, height=64),
        engine.submit_images(model, _t2i(), 4, width=64, height=64),  # over BATCH=2
    ]
    gate.set()
    results = [f.result(timeout=120) for f in futures]
    assert sorted(sizes) == [(64, 1), (64, 2), (72, 1)]
    assert [r.seeds for r in results] == [[1], [2], [3], [4]]
    assert results[1].images[0].size == (72, 64)


def test_a_failing_batch_fails_each_of_its_requests_and_the_next_one_works(
    engine: Engine,
) -> None:
    model = engine.load(Capability.TEXT_TO_IMAGE, TINY_SDXL, {"BATCH": "4"})
    engine.faults.oom_left = 1  # torch's real OutOfMemoryError: no GPU here to run out
    gate = threading.Event()
    engine.submit(gate.wait)
    futures = [engine.submit_images(model, _t2i(), s, width=64, height=64) for s in (1, 2)]
    gate.set()
    for f in futures:
        with pytest.raises(Exception, match="out of memory"):
            f.result(timeout=120)
    ok = engine.submit_images(model, _t2i(), 3, width=64, height=64).result(timeout=120)
    assert ok.seeds == [3]


def test_video_frame_count(engine: Engine) -> None:
    model = engine.load(Capability.IMAGE_TO_VIDEO, TINY_SVD)
    image = Image.new("RGB", (64, 64), (90, 120, 200))
    p = ImageToVideoParams(model_id=TINY_SVD, width=64, height=64, num_inference_steps=1)
    default = engine.image_to_video(model, p, image, 5)
    three = engine.image_to_video(model, p, image, 5, num_frames=3)
    assert len(default.frames) == model.pipe.unet.config.num_frames
    assert len(three.frames) == 3


def test_staged_copy_moves_every_tensor_intact() -> None:
    torch.manual_seed(0)
    tied = torch.nn.Module()
    tied.a = torch.nn.Sequential(torch.nn.Linear(300, 200), torch.nn.BatchNorm1d(200))
    tied.a[1].running_mean.uniform_()
    tied.b = torch.nn.Linear(300, 200)
    tied.b.weight = tied.a[0].weight
    before = {k: v.clone() for k, v in tied.state_dict().items()}
    old_weight = tied.a[0].weight
    cpu = torch.device("cpu")
    assert optimize.move_staged(tied, cpu) == 0  # already there: nothing copied
    # tensors larger than the staging buffers are split across both of them
    moved = optimize.move_staged(tied, cpu, chunk=4096, force=True)
    assert moved == sum(v.numel() * v.element_size() for v in before.values()) - 200 * 300 * 4
    assert tied.a[0].weight is not old_weight  # new storage
    for k, v in tied.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert tied.b.weight is tied.a[0].weight  # tied weights stay tied


def test_flag_parsing() -> None:
    opts = optim.parse(
        {"compile": "unet", "COMPILE_MODE": "max-autotune", "WARMUP": "512x512, 768x512"}
    )
    assert opts.compile == "unet" and opts.compile_mode == "max-autotune"
    assert opts.warmup == ((512, 512), (768, 512))
    assert optim.parse({"COMPILE": True}).compile == "all"
    assert optim.parse({"COMPILE": "false"}).compile is None
    assert optim.parse({"BATCH": True}).batch == optim.DEFAULT_BATCH
    assert optim.parse({"WARMUP": False}).warmup == ()
    assert optim.parse({"SFAST": True, "DEEPCACHE": False}).ignored == ("SFAST",)
    assert optim.parse({}) == optim.Optimizations()  # the plain path
    with pytest.raises(BadRequest, match='sizes like "512x512'):
        optim.parse({"WARMUP": "512x500"})
    with pytest.raises(BadRequest, match="PNG_LEVEL must be a whole number from 0 to 9"):
        optim.parse({"PNG_LEVEL": "11"})
    assert optim.parse_cli("channels_last, COMPILE=unet,BATCH=8") == {
        "CHANNELS_LAST": True,
        "COMPILE": "unet",
        "BATCH": "8",
    }
    assert set(optim.parse_cli("all")) >= {"CHANNELS_LAST", "COMPILE", "VAE_FP16"}


def test_compile_cache_is_persistent_and_overridable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert optimize.compile_cache_dir() == tmp_path / "orchard" / "torch-compile"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert optimize.compile_cache_dir() == tmp_path / "mine"


def test_compiled_batches_are_padded_to_warmed_sizes() -> None:
    assert optimize.warm_batches(1) == [1]
    assert optimize.warm_batches(8) == [1, 2, 4, 8]
    assert optimize.warm_batches(6) == [1, 2, 4, 6]
    assert [optimize.padded_batch(n, 8) for n in range(1, 9)] == [1, 2, 4, 4, 8, 8, 8, 8]
    assert optimize.padded_batch(12, 8) == 12  # one request of more images than BATCH


def test_video_model_gets_channels_last_on_its_2d_convolutions(engine: Engine) -> None:
    model = engine.load(Capability.IMAGE_TO_VIDEO, TINY_SVD, {"CHANNELS_LAST": True})
    notes = " ".join(model.optimization_notes)
    assert "CHANNELS_LAST: unet (" in notes and "CHANNELS_LAST: vae (" in notes
    conv3d = [m for m in model.pipe.vae.modules() if isinstance(m, torch.nn.Conv3d)]
    assert conv3d  # the temporal VAE holds 3-D convolutions, left as they are
    image = Image.new("RGB", (64, 64), (90, 120, 200))
    p = ImageToVideoParams(model_id=TINY_SVD, width=64, height=64, num_inference_steps=1)
    assert len(engine.image_to_video(model, p, image, 5, num_frames=2).frames) == 2


def test_fp16_decode_falls_back_to_fp32_when_it_overflows(tiny_models: Path) -> None:
    """VAE_FP16's guard on the tiny model's real VAE in fp16 (CPU kernels; the runner only
    turns it on for fp16 models, i.e. on CUDA)."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(tiny_models / TINY_SDXL / "vae", dtype=torch.float16)
    vae.register_to_config(force_upcast=True)
    optimize.guard_fp16_decode(vae)
    assert vae.config.force_upcast is False  # diffusers will not upcast every decode
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)).half()
    normal = vae.decode(z).sample
    assert normal.dtype == torch.float16 and torch.isfinite(normal).all()
    # Activations past fp16's range inside the decoder, as the original SDXL VAE has on some
    # images: a first layer scaled up, on finite fp16 latents.
    with torch.no_grad():
        vae.decoder.conv_in.weight.mul_(1000)
    huge = z * 1000
    assert torch.isfinite(huge).all()
    plain = AutoencoderKL.decode(vae, huge).sample  # the unguarded method
    assert not torch.isfinite(plain).all()
    guarded = vae.decode(huge).sample
    assert guarded.dtype == torch.float16 and torch.isfinite(guarded).all()
    assert next(vae.parameters()).dtype == torch.float16  # back in fp16 afterwards
