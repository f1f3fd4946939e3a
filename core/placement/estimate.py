"""How much GPU memory a diffusion model takes, before and after it is loaded.

An estimate is the weights (from the files' sizes and dtypes, :func:`weights_bytes`) plus the
rest of what NVML will show as used for that model: peak activations for the requested size,
the caching allocator's slack, library workspaces and the CUDA context. The activation part is
a per-architecture linear model, ``base + per_pixel * (width * height * frames * batch)``,
calibrated on the measured figures in :data:`CALIBRATION` (see ``docs/placement.md``).

Once a runner has warmed a model it measures the real footprint, and :class:`Footprint` lets
that measurement replace the estimate.

Pure functions over frozen dataclasses; :func:`weights_bytes` is the only one that reads disk.
"""

from __future__ import annotations

import json
import logging
import math
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from core.errors import ModelNotFound

log = logging.getLogger(__name__)

MiB = 2**20
GiB = 2**30

#: Model key: ``(pipeline, model_id)``, e.g. ``("text-to-image", "stabilityai/sdxl-turbo")``.
ModelKey = tuple[str, str]


def gib(n: float, digits: int = 1) -> str:
    """``10.4 GiB``: bytes as a person reads them in messages."""
    return f"{n / GiB:.{digits}f} GiB"


def describe(key: ModelKey) -> str:
    """``stabilityai/sdxl-turbo (text-to-image)``."""
    return f"{key[1]} ({key[0]})"


class ArchFamily(StrEnum):
    SD15 = "sd15"
    SD21 = "sd21"
    SD_TURBO = "sd_turbo"
    SDXL = "sdxl"
    SDXL_TURBO = "sdxl_turbo"
    SVD = "svd"
    SVD_XT = "svd_xt"
    UNKNOWN = "unknown"


# --- calibration ---------------------------------------------------------------------------

#: Device memory a CUDA context holds on its own, counted once per model (a conservative
#: simplification: several models in one runner share one context). Not measured by us: it is
#: the usual size of a PyTorch CUDA context with lazy module loading (CUDA_MODULE_LOADING=LAZY,
#: the default since CUDA 11.7) on recent drivers, about 0.3-0.6 GiB; we take 0.5 GiB. The rest
#: of the measured NVML-minus-reserved gap (cuBLAS/cuDNN workspaces, kernel images) is in each
#: family's ``base``.
CUDA_CONTEXT_BYTES = 512 * MiB

_SOURCE = (
    "measured by Orchard on an H200 with random-weight full-size architectures, "
    "2026-11-28, shared/PERF.md"
)


@dataclass(frozen=True)
class Calibration:
    """One measured run: fp16, peak memory of a plain diffusers pipeline call."""

    arch: ArchFamily
    width: int
    height: int
    frames: int
    batch: int
    weights: int
    peak_allocated: int
    peak_reserved: int
    nvml_used: int
    setup: str
    source: str = _SOURCE

    @property
    def pixels(self) -> int:
        return self.width * self.height * self.frames * self.batch


#: Typical parameter counts (millions) of each family's components, fp16 = 2 bytes each.
#: From the published configurations (counted by building them empty with diffusers/transformers).
TYPICAL_PARAMS_M: dict[ArchFamily, tuple[tuple[str, int], ...]] = {
    ArchFamily.SD15: (("unet", 860), ("text_encoder CLIP-L", 123), ("vae", 84)),
    ArchFamily.SD21: (("unet", 865), ("text_encoder OpenCLIP-H", 340), ("vae", 84)),
    ArchFamily.SDXL: (
        ("unet", 2567),
        ("text_encoder CLIP-L", 123),
        ("text_encoder_2 OpenCLIP-bigG", 695),
        ("vae", 84),
    ),
    ArchFamily.SVD_XT: (("unet", 1525), ("image_encoder CLIP-H", 632), ("vae temporal", 98)),
}
TYPICAL_PARAMS_M[ArchFamily.SD_TURBO] = TYPICAL_PARAMS_M[ArchFamily.SD21]
TYPICAL_PARAMS_M[ArchFamily.SDXL_TURBO] = TYPICAL_PARAMS_M[ArchFamily.SDXL]
TYPICAL_PARAMS_M[ArchFamily.SVD] = TYPICAL_PARAMS_M[ArchFamily.SVD_XT]

#: Typical fp16 weights per family (derived: params * 2 bytes), for estimates before the files
#: are on disk. SDXL's 6.46 GiB agrees with the measured weights below.
TYPICAL_WEIGHTS: dict[ArchFamily, int] = {
    arch: sum(m for _, m in parts) * 1_000_000 * 2 for arch, parts in TYPICAL_PARAMS_M.items()
}

#: The measured runs every activation model is calibrated on (see docs/placement.md).
CALIBRATION: tuple[Calibration, ...] = (
    Calibration(
        ArchFamily.SDXL_TURBO,
        512,
        512,
        1,
        1,
        weights=round(6.46 * GiB),
        peak_allocated=round(7.96 * GiB),
        peak_reserved=round(9.13 * GiB),
        nvml_used=round(10.4 * GiB),
        setup="512x512, 1 step",
    ),
    Calibration(
        ArchFamily.SVD_XT,
        1024,
        576,
        14,
        1,
        # Not measured: derived from the parameter counts above (4.2 GiB).
        weights=TYPICAL_WEIGHTS[ArchFamily.SVD_XT],
        peak_allocated=round(13.4 * GiB),
        peak_reserved=round(24.9 * GiB),
        nvml_used=round(26.3 * GiB),
        setup="1024x576, 14 frames, 25 steps, decode chunk 8",
    ),
)


@dataclass(frozen=True)
class ActivationModel:
    """Bytes beyond the weights and the CUDA context: ``base + per_pixel * pixels``."""

    base: int
    per_pixel: float
    measured: bool
    note: str

    def bytes_for(self, pixels: int) -> int:
        return self.base + math.ceil(self.per_pixel * pixels)


def _calibrated(cal: Calibration, note: str) -> ActivationModel:
    """``base`` = NVML - reserved - context (libraries, fixed); the rest scales with pixels.

    The allocated activation peak and the allocator's reserved-vs-allocated slack are assumed
    linear in pixels (true of convolutions and of SDPA flash/memory-efficient attention).
    """
    base = cal.nvml_used - cal.peak_reserved - CUDA_CONTEXT_BYTES
    per_pixel = (cal.peak_reserved - cal.weights) / cal.pixels
    return ActivationModel(base, per_pixel, measured=True, note=note)


_SDXL = _calibrated(CALIBRATION[0], "measured: SDXL-Turbo 512x512")
_SVD = _calibrated(CALIBRATION[1], "measured: SVD-XT 1024x576x14 (weights derived)")


def _derived(model: ActivationModel, note: str) -> ActivationModel:
    return ActivationModel(model.base, model.per_pixel, measured=False, note=note)


#: Activation model per family. Only SDXL-Turbo and SVD-XT are measured; the rest are derived.
ACTIVATION_MODELS: dict[ArchFamily, ActivationModel] = {
    ArchFamily.SDXL_TURBO: _SDXL,
    ArchFamily.SDXL: _derived(_SDXL, "derived: same UNet, VAE and text encoders as SDXL-Turbo"),
    ArchFamily.SD15: _derived(
        _SDXL, "derived: SDXL's per-pixel cost (same VAE; a third of the UNet), an upper bound"
    ),
    ArchFamily.SD21: _derived(
        _SDXL, "derived: SDXL's per-pixel cost (same VAE; a third of the UNet), an upper bound"
    ),
    ArchFamily.SD_TURBO: _derived(_SDXL, "derived: SD 2.1 architecture, as sd21"),
    ArchFamily.SVD_XT: _SVD,
    ArchFamily.SVD: _derived(_SVD, "derived: same architecture as SVD-XT (14 vs 25 frames)"),
    ArchFamily.UNKNOWN: ActivationModel(
        max(_SDXL.base, _SVD.base),
        max(_SDXL.per_pixel, _SVD.per_pixel),
        measured=False,
        note="fallback: the largest base and per-pixel cost of any family",
    ),
}

#: The size each family is made for: (width, height, frames).
NATIVE_SIZE: dict[ArchFamily, tuple[int, int, int]] = {
    ArchFamily.SD15: (512, 512, 1),
    ArchFamily.SD21: (768, 768, 1),
    ArchFamily.SD_TURBO: (512, 512, 1),
    ArchFamily.SDXL: (1024, 1024, 1),
    ArchFamily.SDXL_TURBO: (512, 512, 1),
    ArchFamily.SVD: (1024, 576, 14),
    ArchFamily.SVD_XT: (1024, 576, 25),
    ArchFamily.UNKNOWN: (1024, 1024, 1),
}


# --- estimates -----------------------------------------------------------------------------


@dataclass(frozen=True)
class VramEstimate:
    """Bytes NVML will show used for one model. ``activations`` is everything but weights:
    peak activations, allocator slack, library workspaces and the CUDA context."""

    weights: int
    activations: int
    total: int

    def __post_init__(self) -> None:
        if self.weights < 0 or self.activations < 0:
            raise ValueError(f"negative size in {self}")
        if self.total != self.weights + self.activations:
            raise ValueError(f"total must be weights + activations in {self}")


def estimate_vram(
    arch: ArchFamily,
    weights_bytes_fp16: int,
    width: int,
    height: int,
    frames: int = 1,
    batch: int = 1,
) -> VramEstimate:
    """NVML-used bytes for a model of ``arch`` at ``width x height x frames``, ``batch`` a call."""
    if weights_bytes_fp16 < 0:
        raise ValueError(f"weights_bytes_fp16 must not be negative (got {weights_bytes_fp16})")
    for name, value in (("width", width), ("height", height), ("frames", frames), ("batch", batch)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1 (got {value})")
    model = ACTIVATION_MODELS[ArchFamily(arch)]
    activations = CUDA_CONTEXT_BYTES + model.bytes_for(width * height * frames * batch)
    return VramEstimate(weights_bytes_fp16, activations, weights_bytes_fp16 + activations)


@dataclass(frozen=True)
class Footprint:
    """A model's memory: the estimate until a runner has measured it, then the measurement.

    ``measured_bytes`` is what the runner saw the pipeline take as if alone (its weights
    included, NVML-used terms), so that the planner can share weights between pipelines.
    """

    model_key: ModelKey
    estimate: VramEstimate | None = None
    measured_bytes: int | None = None
    #: the weights a runner measured after loading, once it has (part of measured_bytes)
    loaded_weights: int | None = None

    def __post_init__(self) -> None:
        if self.estimate is None and self.measured_bytes is None:
            raise ValueError(f"footprint of {describe(self.model_key)} has neither figure")
        if self.measured_bytes is not None and self.measured_bytes < 0:
            raise ValueError(f"measured_bytes must not be negative (got {self.measured_bytes})")

    @property
    def need(self) -> int:
        if self.measured_bytes is not None:
            return self.measured_bytes
        assert self.estimate is not None
        return self.estimate.total

    @property
    def shared(self) -> int:
        """Bytes another pipeline of the same model_id can share: the weights, if known."""
        if self.estimate is None:
            return 0
        return min(self.estimate.weights, self.need)

    @property
    def measured(self) -> bool:
        return self.measured_bytes is not None

    def with_loaded_weights(self, allocated: int) -> Footprint:
        """After a runner loaded the model: ``allocated`` (what torch allocated for its
        weights) replaces the weights part; the rest, activations and context, stays as the
        benchmark measured or the family estimate says. The runner only sees the weights
        at load time, so they alone must not replace the whole footprint."""
        weights = self.estimate.weights if self.estimate is not None else 0
        if self.loaded_weights is not None:
            weights = self.loaded_weights
        rest = max(self.need - weights, 0)
        return Footprint(self.model_key, self.estimate, allocated + rest, allocated)


# --- architecture detection ----------------------------------------------------------------

_SD_PIPELINES = frozenset(
    {
        "StableDiffusionPipeline",
        "StableDiffusionImg2ImgPipeline",
        "StableDiffusionInpaintPipeline",
        "StableDiffusionInstructPix2PixPipeline",
        "StableDiffusionDepth2ImgPipeline",
    }
)
_SDXL_PIPELINES = frozenset(
    {
        "StableDiffusionXLPipeline",
        "StableDiffusionXLImg2ImgPipeline",
        "StableDiffusionXLInpaintPipeline",
        "StableDiffusionXLInstructPix2PixPipeline",
    }
)
_SVD_PIPELINES = frozenset({"StableVideoDiffusionPipeline"})


def detect_arch(
    model_index: Mapping[str, Any],
    unet_config: Mapping[str, Any] | None = None,
    *,
    model_id: str = "",
) -> ArchFamily:
    """The family of a diffusers model from ``model_index.json`` and ``unet/config.json``.

    Turbo variants share their base's configuration except ``sample_size`` (SDXL-Turbo: 64),
    so names count too: ``model_id`` and any ``_name_or_path`` in the two configs.
    """
    cls = str(model_index.get("_class_name", ""))
    unet = unet_config or {}
    names = " ".join(
        str(x)
        for x in (model_id, model_index.get("_name_or_path", ""), unet.get("_name_or_path", ""))
    ).lower()
    turbo = "turbo" in names
    if cls in _SVD_PIPELINES:
        frames = unet.get("num_frames")
        if isinstance(frames, int):
            return ArchFamily.SVD if frames <= 14 else ArchFamily.SVD_XT
        plain = "img2vid" in names and "xt" not in names
        return ArchFamily.SVD if plain else ArchFamily.SVD_XT
    if cls in _SDXL_PIPELINES:
        turbo = turbo or unet.get("sample_size") == 64
        return ArchFamily.SDXL_TURBO if turbo else ArchFamily.SDXL
    if cls in _SD_PIPELINES:
        cross = unet.get("cross_attention_dim")
        sd2 = cross == 1024 or unet.get("sample_size") == 96
        if turbo and (sd2 or cross is None):
            return ArchFamily.SD_TURBO
        return ArchFamily.SD21 if sd2 else ArchFamily.SD15
    return ArchFamily.UNKNOWN


# --- weights on disk -----------------------------------------------------------------------

_FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0"})
_OTHER_DTYPE_BYTES = {
    "I64": 8,
    "U64": 8,
    "I32": 4,
    "U32": 4,
    "I16": 2,
    "U16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_WEIGHT_STEMS = frozenset({"diffusion_pytorch_model", "model", "pytorch_model"})
_SHARD = re.compile(r"-\d{5}-of-\d{5}")
_MAX_HEADER = 100 * MiB  # safetensors' own limit
_TORCH_FLOAT_STORAGES = {b"Double": 8, b"Float": 4, b"Half": 2, b"BFloat16": 2}
_STORAGE_RE = re.compile(rb"(Double|Float|Half|BFloat16)Storage")


def weights_bytes(model_dir: Path, dtype_bytes: int = 2) -> int:
    """Bytes the weights of the diffusers folder ``model_dir`` take once loaded in a dtype of
    ``dtype_bytes`` (2 for fp16/bf16). Pass a resolved folder (``core.modelstore.resolve``).

    Counts the components named in ``model_index.json`` (a folder without one counts as a
    single component). Per component it prefers ``*.fp16.*`` variant files, then safetensors
    over ``.bin``; floating tensors count at ``dtype_bytes`` whatever their stored dtype (read
    from the safetensors header), other tensors at their own size.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelNotFound(f"no model folder at {model_dir}")
    index_path = model_dir / "model_index.json"
    if index_path.is_file():
        index = json.loads(index_path.read_text())
        if not isinstance(index, dict):
            raise ModelNotFound(f"{index_path} is not a diffusers model index")
        folders = [
            model_dir / name
            for name, value in index.items()
            if not name.startswith("_")
            and isinstance(value, list)
            and len(value) == 2
            and all(value)
            and (model_dir / name).is_dir()
        ]
    else:
        folders = [model_dir]
    return sum(_component_bytes(folder, dtype_bytes) for folder in sorted(folders))


def _split_name(path: Path) -> tuple[str, str | None]:
    """``diffusion_pytorch_model.fp16-00001-of-00002.safetensors`` -> (stem, ``fp16``)."""
    bare = _SHARD.sub("", path.name[: -len(path.suffix)])
    stem, _, variant = bare.partition(".")
    return stem, variant or None


def _choose_files(folder: Path) -> list[tuple[Path, str | None]]:
    files = [p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file()]
    named = [(p, *_split_name(p)) for p in files]
    standard = [x for x in named if x[1] in _WEIGHT_STEMS]
    named = standard or named
    if not named:
        return []
    variants = {variant for _, _, variant in named}
    if "fp16" in variants:
        chosen: str | None = "fp16"
    elif None in variants:
        chosen = None
    else:
        chosen = sorted(v for v in variants if v is not None)[0]
    group = [(p, v) for p, _, v in named if v == chosen]
    safetensors = [(p, v) for p, v in group if p.suffix == ".safetensors"]
    return sorted(safetensors or group)


def _component_bytes(folder: Path, dtype_bytes: int) -> int:
    total = 0
    for path, variant in _choose_files(folder):
        if path.suffix == ".safetensors":
            total += _safetensors_bytes(path, dtype_bytes)
        else:
            total += _bin_bytes(path, dtype_bytes, variant)
    return total


def _safetensors_bytes(path: Path, dtype_bytes: int) -> int:
    try:
        with path.open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n <= _MAX_HEADER:
                raise ValueError(f"header length {n}")
            header = json.loads(f.read(n))
        total = 0
        for name, info in header.items():
            if name == "__metadata__":
                continue
            numel = math.prod(int(d) for d in info["shape"])
            dtype = info["dtype"]
            if dtype in _FLOAT_DTYPES:
                total += numel * dtype_bytes
            elif dtype in _OTHER_DTYPE_BYTES:
                total += numel * _OTHER_DTYPE_BYTES[dtype]
            else:
                start, end = info["data_offsets"]
                total += int(end) - int(start)
        return total
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        size = path.stat().st_size
        log.warning("cannot read the safetensors header of %s (%s); counting its size", path, e)
        return size


def _bin_bytes(path: Path, dtype_bytes: int, variant: str | None) -> int:
    """A torch pickle cannot be read without torch, so its float itemsize is guessed: from the
    storage names in its ``data.pkl`` (the smallest if mixed: counts more, never fewer), else
    from the variant name (``fp16``), else fp32 (torch's default)."""
    size = path.stat().st_size
    itemsize = _bin_itemsize(path) or (2 if variant in ("fp16", "bf16") else 4)
    return math.ceil(size * dtype_bytes / itemsize)


def _bin_itemsize(path: Path) -> int | None:
    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as z:
            pkl = next((i for i in z.infolist() if i.filename.endswith("data.pkl")), None)
            if pkl is None or pkl.file_size > 64 * MiB:
                return None
            data = z.read(pkl)
    except (OSError, zipfile.BadZipFile):
        return None
    sizes = {_TORCH_FLOAT_STORAGES[m] for m in _STORAGE_RE.findall(data)}
    return min(sizes) if sizes else None
