"""The runner's optimisation flags: names, values, and what each one does.

``optimization_flags`` is a per-model object in ``aiModels.json`` (Livepeer's field; go-livepeer
accepts only ``true``, ``false`` or a string as a value). This module is pure: the config
checks names here, the runner (``core.runner.optimize``) applies them. Every flag is off by
default, so a model without flags runs the plain diffusers path, and ``orchard bench
--compare`` measures each optimisation against that plain path in the same run.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.errors import BadRequest

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

#: Every flag Orchard applies, with a line for the docs and error messages.
FLAGS: dict[str, str] = {
    "CHANNELS_LAST": "UNet and VAE in channels-last memory format (faster convolutions)",
    "FUSE_QKV": "fuse the attention query/key/value projections into one matrix multiply",
    "COMPILE": (
        'torch.compile at warm time: true or "all" (UNet, VAE decoder, text/image encoders), '
        '"unet" (the UNet only)'
    ),
    "COMPILE_MODE": (
        'torch.compile mode: "reduce-overhead" (CUDA graphs; the default on CUDA), "default" '
        '(the default on CPU), "max-autotune", "max-autotune-no-cudagraphs"'
    ),
    "WARMUP": (
        "sizes to run once at warm time so compilation is done before the first job, e.g. "
        '"512x512,1024x1024" (";" also separates sizes); default: the model\'s native size '
        "when COMPILE is on; false: none"
    ),
    "VAE_FP16": (
        "decode in fp16 instead of upcasting the VAE to fp32; a decode that overflows "
        "is redone in fp32, so outputs stay finite (CUDA only)"
    ),
    "PINNED_LOAD": "copy weights to the GPU through pinned staging buffers (faster warming)",
    "BATCH": (
        "the most images one call may batch across concurrent requests with the same model, "
        'size and settings, e.g. "8" (true: 4); text-to-image and image-to-image'
    ),
    "PNG_LEVEL": 'zlib level of the PNG answers, "0" (fastest, largest) to "9"; default 1',
}

#: Flags of Livepeer's ai-runner that Orchard knows but does not apply (kept, reported).
IGNORED_FLAGS: dict[str, str] = {
    "SFAST": "stable-fast is not part of Orchard; use COMPILE",
    "DEEPCACHE": "DeepCache changes outputs; Orchard does not apply it",
}

DEFAULT_BATCH = 4
MAX_BATCH = 64


@dataclass(frozen=True)
class Optimizations:
    """Parsed flags of one model. ``Optimizations()`` is the plain path."""

    channels_last: bool = False
    fuse_qkv: bool = False
    compile: str | None = None  # "all" | "unet"
    compile_mode: str | None = None
    warmup: tuple[tuple[int, int], ...] | None = None  # None: the default
    vae_fp16: bool = False
    pinned_load: bool = False
    batch: int = 1
    png_level: int | None = None
    ignored: tuple[str, ...] = field(default=())


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "1", "yes", "on"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"false", "0", "no", "off", ""}:
        return False
    raise BadRequest(f"optimization flag {name} must be true or false (got {value!r})")


def _int(name: str, value: Any, lo: int, hi: int) -> int:
    try:
        n = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        n = None
    if n is None or not lo <= n <= hi:
        raise BadRequest(
            f"optimization flag {name} must be a whole number from {lo} to {hi} (got {value!r})"
        )
    return n


def _sizes(name: str, value: Any) -> tuple[tuple[int, int], ...]:
    out = []
    for part in str(value).replace(" ", "").replace(";", ",").split(","):
        if not part:
            continue
        w, sep, h = part.lower().partition("x")
        if not sep or not w.isdigit() or not h.isdigit() or int(w) % 8 or int(h) % 8:
            raise BadRequest(
                f'optimization flag {name} takes sizes like "512x512,1024x576" '
                f"(multiples of 8); got {value!r}"
            )
        out.append((int(w), int(h)))
    return tuple(out)


def unknown_flag_message(name: str) -> str:
    close = difflib.get_close_matches(name.upper(), [*FLAGS, *IGNORED_FLAGS], n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    return f"unknown optimization flag {name!r}{hint}; Orchard knows {', '.join(FLAGS)}"


def parse(flags: Mapping[str, Any] | None) -> Optimizations:
    """Check and parse a model's flags; a wrong name or value raises :class:`BadRequest`."""
    opts: dict[str, Any] = {}
    ignored = []
    for raw, value in (flags or {}).items():
        name = str(raw).upper()
        if name in IGNORED_FLAGS:
            if value not in (False, "false", "False", ""):
                ignored.append(name)
            continue
        if name not in FLAGS:
            raise BadRequest(unknown_flag_message(str(raw)))
        if name == "COMPILE":
            if isinstance(value, str) and value.strip().lower() in {"all", "unet"}:
                opts["compile"] = value.strip().lower()
            elif _bool(name, value):
                opts["compile"] = "all"
        elif name == "COMPILE_MODE":
            mode = str(value).strip().lower()
            if mode not in COMPILE_MODES:
                raise BadRequest(
                    f"optimization flag COMPILE_MODE must be one of {', '.join(COMPILE_MODES)} "
                    f"(got {value!r})"
                )
            opts["compile_mode"] = mode
        elif name == "WARMUP":
            if isinstance(value, bool) or str(value).strip().lower() in {"true", "false"}:
                opts["warmup"] = None if _bool(name, value) else ()
            else:
                opts["warmup"] = _sizes(name, value)
        elif name == "BATCH":
            if isinstance(value, bool) or str(value).strip().lower() in {"true", "false"}:
                opts["batch"] = DEFAULT_BATCH if _bool(name, value) else 1
            else:
                opts["batch"] = _int(name, value, 1, MAX_BATCH)
        elif name == "PNG_LEVEL":
            opts["png_level"] = _int(name, value, 0, 9)
        else:
            key = {"CHANNELS_LAST": "channels_last", "FUSE_QKV": "fuse_qkv"}.get(name)
            key = key or {"VAE_FP16": "vae_fp16", "PINNED_LOAD": "pinned_load"}[name]
            opts[key] = _bool(name, value)
    if "compile_mode" in opts and "compile" not in opts:
        raise BadRequest('optimization flag COMPILE_MODE needs COMPILE (true, "all" or "unet")')
    return Optimizations(**opts, ignored=tuple(ignored))


def parse_cli(text: str) -> dict[str, Any]:
    """``"CHANNELS_LAST,COMPILE=unet,BATCH=8"`` as a flags object (``all``: every speed flag)."""
    out: dict[str, Any] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if part.lower() == "all":
            out |= {"CHANNELS_LAST": True, "FUSE_QKV": True, "COMPILE": True, "VAE_FP16": True}
            out |= {"PINNED_LOAD": True}
            continue
        name, sep, value = part.partition("=")
        out[name.strip().upper()] = value.strip() if sep else True
    parse(out)  # names and values checked here, with the same messages as the runner
    return out
