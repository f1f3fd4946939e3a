"""Warm diffusion pipelines on one device, run one job at a time on a worker thread.

The engine owns the device. Every call that touches torch runs on its single worker thread
(``Engine.submit``), so the asyncio loop never blocks and jobs on one GPU are serialised in
arrival order. Text-to-image and image-to-image of one model share their components
(diffusers ``from_pipe``): the weights are loaded once.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from core import modelstore
from core.errors import BadRequest, ModelNotLoaded, OutOfVram
from core.pipelines import Capability, parse_capability
from core.pipelines.common import split_prompt

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Called from the worker thread: (step, total_steps, latents).
StepCallback = Callable[[int, int, "torch.Tensor"], None]

_IMAGE_CAPS = (Capability.TEXT_TO_IMAGE, Capability.IMAGE_TO_IMAGE)


class Family:
    SD = "sd"
    SDXL = "sdxl"
    SVD = "svd"


@dataclass
class LoadedModel:
    """One capability of one model, warm on the device."""

    capability: Capability
    model_id: str
    path: Path
    family: str
    pipe: Any
    load_seconds: float
    weights_bytes: int
    allocated_after_load: int | None = None
    reserved_after_load: int | None = None
    peak_allocated_last_run: int | None = None
    peak_reserved_last_run: int | None = None
    optimization_flags: dict[str, Any] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)
    last_used: float | None = None
    runs: int = 0

    @property
    def key(self) -> tuple[Capability, str]:
        return (self.capability, self.model_id)


@dataclass(frozen=True)
class ImageResult:
    images: list[Any]  # PIL images
    seeds: list[int]
    nsfw: list[bool]


@dataclass(frozen=True)
class VideoResult:
    frames: list[Any]  # PIL images, one video
    seed: int
    nsfw: bool


class FaultInjector:
    """Raises a GPU out-of-memory error in the next ``n`` runs.

    Only for tests on machines without a GPU, where a CUDA OOM cannot happen: set
    ``ORCHARD_RUNNER_INJECT_OOM=N`` in the runner's environment.
    """

    def __init__(self) -> None:
        self.oom_left = int(os.environ.get("ORCHARD_RUNNER_INJECT_OOM", "0") or 0)

    def maybe_oom(self) -> None:
        if self.oom_left > 0:
            self.oom_left -= 1
            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB (injected for a test)"
            )


def _family_of(index: dict[str, object]) -> str:
    name = str(index.get("_class_name", ""))
    if "StableVideoDiffusion" in name:
        return Family.SVD
    if "XL" in name:
        return Family.SDXL
    if "StableDiffusion" in name:
        return Family.SD
    raise BadRequest(
        f"model class {name!r} is not supported; supported: Stable Diffusion 1.x/2.x, "
        "SD-Turbo, SDXL, SDXL-Turbo (text/image-to-image) and Stable Video Diffusion"
    )


def _capabilities_of(family: str) -> tuple[Capability, ...]:
    return (Capability.IMAGE_TO_VIDEO,) if family == Family.SVD else _IMAGE_CAPS


def _param_bytes(pipe: Any) -> int:
    seen: set[int] = set()
    total = 0
    for comp in pipe.components.values():
        if isinstance(comp, torch.nn.Module):
            for p in comp.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    total += p.numel() * p.element_size()
    return total


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class Engine:
    """The pipelines warm on one device and the worker thread that runs them."""

    def __init__(self, device: str, models_dir: Path, dtype: torch.dtype | None = None) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BadRequest(f"device {device} requested but CUDA is not available here")
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.models_dir = Path(models_dir)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orchard-gpu")
        self._models: dict[tuple[Capability, str], LoadedModel] = {}
        self._bases: dict[str, Any] = {}  # model_id -> the pipeline whose components are shared
        self._lock = threading.Lock()
        self._pending = 0
        self.busy_with: tuple[Capability, str] | None = None
        self.faults = FaultInjector()

    # ----------------------------------------------------------------- threading
    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` on the worker thread, after the jobs already queued."""
        with self._lock:
            self._pending += 1

        def run() -> T:
            try:
                return fn(*args)
            finally:
                with self._lock:
                    self._pending -= 1

        return self._executor.submit(run)

    @property
    def queue_depth(self) -> int:
        """Jobs and loads waiting or running on the worker thread."""
        return self._pending

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ----------------------------------------------------------------- models
    def models(self) -> list[LoadedModel]:
        return list(self._models.values())

    def get(self, capability: Capability | str, model_id: str) -> LoadedModel:
        """The warm model for a request; an empty ``model_id`` means the only one loaded."""
        cap = parse_capability(str(capability))
        if model_id:
            found = self._models.get((cap, model_id))
            if found is None:
                loaded = ", ".join(m for c, m in self._models if c == cap) or "none"
                raise ModelNotLoaded(
                    f"model {model_id!r} is not loaded for {cap.value} on this runner "
                    f"(loaded: {loaded}); load it with POST /models/load"
                )
            return found
        candidates = [m for (c, _), m in self._models.items() if c == cap]
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise ModelNotLoaded(f"no model is loaded for {cap.value} on this runner")
        names = ", ".join(m.model_id for m in candidates)
        raise BadRequest(f"several {cap.value} models are loaded ({names}); set model_id")

    def load(
        self, capability: Capability | str, model_id: str, flags: dict[str, Any] | None = None
    ) -> LoadedModel:
        """Load (blocking; call through ``submit``). Loading an already warm model is a no-op."""
        cap = parse_capability(str(capability))
        if (cap, model_id) in self._models:
            return self._models[(cap, model_id)]
        path = modelstore.resolve(self.models_dir, model_id)
        family = _family_of(modelstore.read_model_index(path))
        if cap not in _capabilities_of(family):
            can = ", ".join(c.value for c in _capabilities_of(family))
            raise BadRequest(f"model {model_id!r} is a {family} model: it serves {can}, not {cap}")
        t0 = time.perf_counter()
        before = self._allocated()
        base = self._bases.get(model_id)
        try:
            if base is None:
                base = self._from_pretrained(path, family)
                self._bases[model_id] = base
            pipe = self._view(base, cap, family)
        except Exception as exc:
            if model_id not in {m for _, m in self._models}:
                self._bases.pop(model_id, None)
            self._release()
            if _is_oom(exc):
                raise OutOfVram(
                    f"GPU out of memory while loading {model_id!r}: unload a model or choose "
                    "a GPU with more free memory; memory was released"
                ) from exc
            raise
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        model = LoadedModel(
            capability=cap,
            model_id=model_id,
            path=path,
            family=family,
            pipe=pipe,
            load_seconds=time.perf_counter() - t0,
            weights_bytes=_param_bytes(base),
            optimization_flags=dict(flags or {}),
        )
        if self.device.type == "cuda":
            model.allocated_after_load = (self._allocated() or 0) - (before or 0)
            model.reserved_after_load = torch.cuda.memory_reserved(self.device)
        self._models[model.key] = model
        log.info("loaded %s %s from %s in %.2fs", cap, model_id, path, model.load_seconds)
        return model

    def unload(self, capability: Capability | str, model_id: str) -> None:
        cap = parse_capability(str(capability))
        if self._models.pop((cap, model_id), None) is None:
            raise ModelNotLoaded(f"model {model_id!r} is not loaded for {cap.value}")
        if not any(m == model_id for _, m in self._models):
            self._bases.pop(model_id, None)
        self._release()
        log.info("unloaded %s %s", cap, model_id)

    def _from_pretrained(self, path: Path, family: str) -> Any:
        from diffusers import AutoPipelineForText2Image, StableVideoDiffusionPipeline

        kwargs: dict[str, Any] = {"dtype": self.dtype, "local_files_only": True}
        if self.dtype == torch.float16 and any(path.glob("unet/*.fp16.safetensors")):
            kwargs["variant"] = "fp16"
        cls = StableVideoDiffusionPipeline if family == Family.SVD else AutoPipelineForText2Image
        pipe = cls.from_pretrained(str(path), **kwargs)
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(self.device)

    @staticmethod
    def _view(base: Any, cap: Capability, family: str) -> Any:
        if family == Family.SVD:
            return base
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image

        auto = (
            AutoPipelineForText2Image
            if cap == Capability.TEXT_TO_IMAGE
            else (AutoPipelineForImage2Image)
        )
        pipe = auto.from_pipe(base)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _allocated(self) -> int | None:
        return torch.cuda.memory_allocated(self.device) if self.device.type == "cuda" else None

    def _release(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ----------------------------------------------------------------- running
    def _generators(self, seeds: list[int]) -> list[torch.Generator]:
        return [torch.Generator(device=self.device).manual_seed(s) for s in seeds]

    def _run(self, model: LoadedModel, kwargs: dict[str, Any], on_step: StepCallback | None) -> Any:
        pipe = model.pipe

        def callback(p: Any, i: int, _t: Any, cb_kwargs: dict[str, Any]) -> dict[str, Any]:
            if on_step is not None:
                total = int(getattr(p, "_num_timesteps", 0) or kwargs["num_inference_steps"])
                on_step(i + 1, total, cb_kwargs["latents"])
            return cb_kwargs

        self.busy_with = model.key
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            self.faults.maybe_oom()
            with torch.inference_mode():
                out = pipe(
                    **kwargs,
                    callback_on_step_end=callback,
                    callback_on_step_end_tensor_inputs=["latents"],
                )
        except Exception as exc:
            if _is_oom(exc):
                self._release()
                raise OutOfVram(
                    f"GPU out of memory while running {model.model_id!r} "
                    f"({model.capability.value}); memory was released: retry with a smaller "
                    "size or fewer images, or unload other models"
                ) from exc
            raise
        finally:
            self.busy_with = None
            model.last_used = time.time()
            model.runs += 1
            if self.device.type == "cuda":
                model.peak_allocated_last_run = torch.cuda.max_memory_allocated(self.device)
                model.peak_reserved_last_run = torch.cuda.max_memory_reserved(self.device)
        return out

    def _guidance(self, model: LoadedModel, guidance: float) -> float:
        # Turbo models are distilled without classifier-free guidance (as Livepeer's runner).
        return 0.0 if "turbo" in model.model_id.lower() else guidance

    def _images(
        self, model: LoadedModel, p: Any, seed: int, on_step: StepCallback | None, **extra: Any
    ) -> ImageResult:
        """One batch of ``num_images_per_prompt`` images; image ``i`` uses ``seed + i``."""
        seeds = [seed + i for i in range(p.num_images_per_prompt)]
        kwargs: dict[str, Any] = {
            **self._prompts(model, p.prompt, p.negative_prompt),
            **extra,
            "guidance_scale": self._guidance(model, p.guidance_scale),
            "num_inference_steps": p.num_inference_steps,
            "num_images_per_prompt": p.num_images_per_prompt,
            "generator": self._generators(seeds),
            "output_type": "pil",
        }
        out = self._run(model, kwargs, on_step)
        return ImageResult(list(out.images), seeds, [False] * len(out.images))

    def text_to_image(
        self, model: LoadedModel, p: Any, seed: int, on_step: StepCallback | None = None
    ) -> ImageResult:
        return self._images(model, p, seed, on_step, width=p.width, height=p.height)

    def image_to_image(
        self, model: LoadedModel, p: Any, image: Any, seed: int, on_step: StepCallback | None = None
    ) -> ImageResult:
        return self._images(model, p, seed, on_step, image=image, strength=p.strength)

    def image_to_video(
        self, model: LoadedModel, p: Any, image: Any, seed: int, on_step: StepCallback | None = None
    ) -> VideoResult:
        kwargs: dict[str, Any] = {
            "image": image,
            "width": p.width,
            "height": p.height,
            "fps": p.fps,
            "motion_bucket_id": p.motion_bucket_id,
            "noise_aug_strength": p.noise_aug_strength,
            "num_inference_steps": p.num_inference_steps,
            "decode_chunk_size": 8,
            "generator": self._generators([seed])[0],
            "output_type": "pil",
        }
        out = self._run(model, kwargs, on_step)
        return VideoResult(list(out.frames[0]), seed, False)

    @staticmethod
    def _prompts(model: LoadedModel, prompt: str, negative: str) -> dict[str, str]:
        """``a|b`` feeds the model's second text encoder; SD 1.x/2.x have only one."""
        parts = 2 if model.family == Family.SDXL else 1
        out = split_prompt(prompt, "prompt", parts)
        if negative:
            out.update(split_prompt(negative, "negative_prompt", parts))
        return out
