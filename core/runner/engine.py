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
from core import optimizations as optim
from core.errors import BadRequest, ModelNotLoaded, OutOfVram
from core.pipelines import Capability, parse_capability
from core.pipelines.common import split_prompt
from core.runner import optimize

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
    optimizations: optim.Optimizations = field(default_factory=optim.Optimizations)
    #: what applying the flags did, a line each (also in GET /models)
    optimization_notes: list[str] = field(default_factory=list)
    warmup_seconds: float = 0.0
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


def native_size(pipe: Any, family: str) -> tuple[int, int]:
    """The size a model is made for: its UNet's sample size times the VAE's scale."""
    if family == Family.SVD:
        return (1024, 576)
    sample = int(getattr(pipe.unet.config, "sample_size", 64) or 64)
    scale = int(getattr(pipe, "vae_scale_factor", 8) or 8)
    return (sample * scale, sample * scale)


def _warmup_kwargs(
    cap: Capability,
    family: str,
    width: int,
    height: int,
    batch: int,
    device: torch.device,
    turbo: bool = False,
) -> dict[str, Any]:
    from PIL import Image

    kwargs: dict[str, Any] = {
        "num_inference_steps": 2,
        "output_type": "pil",
        "generator": torch.Generator(device=device).manual_seed(0),
    }
    image = Image.new("RGB", (width, height), (128, 128, 128))
    if family == Family.SVD:
        return kwargs | {"image": image, "width": width, "height": height, "decode_chunk_size": 8}
    # the shapes requests will have: turbo models run without classifier-free guidance,
    # others with it (the contract's default guidance 7.5), which doubles the UNet's batch
    kwargs |= {"prompt": ["warm-up"] * batch, "guidance_scale": 0.0 if turbo else 7.5}
    if cap == Capability.IMAGE_TO_IMAGE:
        return kwargs | {"image": [image] * batch, "strength": 1.0}
    return kwargs | {"width": width, "height": height}


@dataclass
class _ImageJob:
    """One image request waiting to be batched with others of the same shape."""

    p: Any
    seed: int
    extra: dict[str, Any]
    on_step: StepCallback | None
    on_start: Callable[[], None] | None
    future: Future[ImageResult] = field(default_factory=Future)

    def key(self, model: LoadedModel, guidance: float) -> tuple[Any, ...]:
        image = self.extra.get("image")
        p = self.p
        return (
            model.key,
            self.extra.get("width"),
            self.extra.get("height"),
            getattr(image, "size", None),
            self.extra.get("strength"),
            p.num_inference_steps,
            guidance,
            bool(p.negative_prompt),
            "|" in p.prompt,
            "|" in (p.negative_prompt or ""),
        )


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
        # model_id -> (flags, parsed, notes) of its base pipeline: the flags of the first load
        self._base_opts: dict[str, tuple[dict[str, Any], optim.Optimizations, list[str]]] = {}
        self._waiting: dict[tuple[Any, ...], list[_ImageJob]] = {}  # batchable jobs by shape
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
        opts = optim.parse(flags)
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
                base = self._from_pretrained(path, family, opts)
                notes = optimize.apply(base, self.device, self.dtype, opts)
                self._bases[model_id] = base
                self._base_opts[model_id] = (dict(flags or {}), opts, notes)
            elif self._base_opts[model_id][1] != opts:
                log.warning(
                    "%s shares its weights with a model already loaded with other "
                    "optimization flags; the first load's flags apply",
                    model_id,
                )
            flags, opts, notes = self._base_opts[model_id]
            pipe = self._view(base, cap, family)
            t_warm = time.perf_counter()
            self._warm_up(pipe, cap, family, model_id, opts)
            warmup_seconds = time.perf_counter() - t_warm
        except Exception as exc:
            if model_id not in {m for _, m in self._models}:
                self._bases.pop(model_id, None)
                self._base_opts.pop(model_id, None)
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
            optimization_flags=dict(flags),
            optimizations=opts,
            optimization_notes=list(notes),
            warmup_seconds=warmup_seconds,
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
            self._base_opts.pop(model_id, None)
        self._release()
        log.info("unloaded %s %s", cap, model_id)

    def _from_pretrained(self, path: Path, family: str, opts: optim.Optimizations) -> Any:
        from diffusers import AutoPipelineForText2Image, StableVideoDiffusionPipeline

        kwargs: dict[str, Any] = {"dtype": self.dtype, "local_files_only": True}
        if self.dtype == torch.float16 and any(path.glob("unet/*.fp16.safetensors")):
            kwargs["variant"] = "fp16"
        cls = StableVideoDiffusionPipeline if family == Family.SVD else AutoPipelineForText2Image
        pipe = cls.from_pretrained(str(path), **kwargs)
        pipe.set_progress_bar_config(disable=True)
        if opts.pinned_load and self.device.type == "cuda":
            optimize.move_pipeline_staged(pipe, self.device)
            return pipe
        return pipe.to(self.device)

    def _warm_up(
        self, pipe: Any, cap: Capability, family: str, model_id: str, opts: optim.Optimizations
    ) -> None:
        """Run each warm-up size once (twice for CUDA graphs) so compiling happens now."""
        if not opts.compile or opts.warmup == ():
            return
        turbo = self._guidance_for(model_id, 7.5) == 0.0
        sizes = opts.warmup or (native_size(pipe, family),)
        mode = opts.compile_mode or optimize.default_compile_mode(self.device)
        graphs = optimize.uses_cuda_graphs(mode) and self.device.type == "cuda"
        repeats = 2 if graphs else 1  # CUDA graphs are recorded on the second call
        batches = optimize.warm_batches(opts.batch) if cap in _IMAGE_CAPS else [1]
        with torch.inference_mode():
            for width, height in sizes:
                for batch in batches:
                    for _ in range(repeats):
                        t0 = time.perf_counter()
                        kwargs = _warmup_kwargs(
                            cap, family, width, height, batch, self.device, turbo
                        )
                        if graphs:
                            torch.compiler.cudagraph_mark_step_begin()
                        pipe(**kwargs)
                        log.info(
                            "warm-up %s %dx%d batch %d: %.2fs",
                            cap.value,
                            width,
                            height,
                            batch,
                            time.perf_counter() - t0,
                        )

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
            opts = model.optimizations
            mode = opts.compile_mode or optimize.default_compile_mode(self.device)
            if opts.compile and self.device.type == "cuda" and optimize.uses_cuda_graphs(mode):
                # a new request: the CUDA graphs' previous outputs are no longer in use
                torch.compiler.cudagraph_mark_step_begin()
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
        return self._guidance_for(model.model_id, guidance)

    @staticmethod
    def _guidance_for(model_id: str, guidance: float) -> float:
        # Turbo models are distilled without classifier-free guidance (as Livepeer's runner).
        return 0.0 if "turbo" in model_id.lower() else guidance

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

    # ----------------------------------------------------------------- batching
    def submit_images(
        self,
        model: LoadedModel,
        p: Any,
        seed: int,
        on_step: StepCallback | None = None,
        on_start: Callable[[], None] | None = None,
        **extra: Any,
    ) -> Future[ImageResult]:
        """Queue an image request; with the BATCH flag, requests of the same model, size and
        settings that wait together run as one call (each image keeps its own seed)."""
        job = _ImageJob(p, seed, extra, on_step, on_start)
        limit = model.optimizations.batch
        if limit <= 1:

            def alone() -> ImageResult:
                if on_start is not None:
                    on_start()
                return self._images(model, p, seed, on_step, **extra)

            return self.submit(alone)
        key = job.key(model, self._guidance(model, p.guidance_scale))
        with self._lock:
            self._waiting.setdefault(key, []).append(job)

        def batch() -> None:
            with self._lock:
                queue = self._waiting.get(key, [])
                take: list[_ImageJob] = []
                images = 0
                while queue and (not take or images + queue[0].p.num_images_per_prompt <= limit):
                    take.append(queue.pop(0))
                    images += take[-1].p.num_images_per_prompt
                if not queue:
                    self._waiting.pop(key, None)
            if not take:
                return  # this request already ran in an earlier batch
            for j in take:
                if j.on_start is not None:
                    j.on_start()
            try:
                results = self._batch(model, take)
            except BaseException as exc:
                for j in take:
                    if not j.future.done():
                        j.future.set_exception(exc)
                return
            for j, result in zip(take, results, strict=True):
                if not j.future.done():
                    j.future.set_result(result)

        self.submit(batch)
        return job.future

    def _batch(self, model: LoadedModel, jobs: list[_ImageJob]) -> list[ImageResult]:
        """One pipeline call for several requests: prompts and seeds as lists, one per image."""
        padding = model.optimizations.compile is not None
        if len(jobs) == 1 and not padding:
            j = jobs[0]
            return [self._images(model, j.p, j.seed, j.on_step, **j.extra)]
        first = jobs[0]
        per_image: dict[str, list[Any]] = {}
        seeds: list[int] = []
        spans: list[tuple[int, int]] = []
        for j in jobs:
            n = j.p.num_images_per_prompt
            spans.append((len(seeds), n))
            seeds.extend(j.seed + i for i in range(n))
            texts = self._prompts(model, j.p.prompt, j.p.negative_prompt)
            for name, text in texts.items():
                per_image.setdefault(name, []).extend([text] * n)
            if "image" in j.extra:
                per_image.setdefault("image", []).extend([j.extra["image"]] * n)
        if padding:
            # pad to a batch size compiled at warm time; the padding images are dropped
            pad = optimize.padded_batch(len(seeds), model.optimizations.batch) - len(seeds)
            for values in per_image.values():
                values.extend([values[-1]] * pad)
            seeds_run = seeds + [0] * pad
        else:
            seeds_run = seeds
        extra = {k: v for k, v in first.extra.items() if k != "image"}
        kwargs: dict[str, Any] = {
            **per_image,
            **extra,
            "guidance_scale": self._guidance(model, first.p.guidance_scale),
            "num_inference_steps": first.p.num_inference_steps,
            "num_images_per_prompt": 1,
            "generator": self._generators(seeds_run),
            "output_type": "pil",
        }

        def on_step(step: int, total: int, latents: torch.Tensor) -> None:
            for j, (start, n) in zip(jobs, spans, strict=True):
                if j.on_step is not None:
                    j.on_step(step, total, latents[start : start + n])

        log.debug("batched %d requests, %d images", len(jobs), len(seeds))
        out = self._run(model, kwargs, on_step)
        images = list(out.images)
        return [ImageResult(images[s : s + n], seeds[s : s + n], [False] * n) for s, n in spans]

    def text_to_image(
        self, model: LoadedModel, p: Any, seed: int, on_step: StepCallback | None = None
    ) -> ImageResult:
        return self._images(model, p, seed, on_step, width=p.width, height=p.height)

    def image_to_image(
        self, model: LoadedModel, p: Any, image: Any, seed: int, on_step: StepCallback | None = None
    ) -> ImageResult:
        return self._images(model, p, seed, on_step, image=image, strength=p.strength)

    def image_to_video(
        self,
        model: LoadedModel,
        p: Any,
        image: Any,
        seed: int,
        on_step: StepCallback | None = None,
        num_frames: int | None = None,
    ) -> VideoResult:
        """``num_frames`` None: the model's own count (SVD 14, SVD-XT 25)."""
        kwargs: dict[str, Any] = {
            "num_frames": num_frames,
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
