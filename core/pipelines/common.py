"""What every capability shares: request limits, prompt splitting, seed handling."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from core.errors import BadRequest

#: Seeds are unsigned 64-bit for torch; we leave room for ``seed + i`` per image.
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Limits:
    """Bounds a runner accepts. Values outside get a 400 that names the bound."""

    min_side: int = 64
    max_side: int = 2048
    max_pixels: int = 2048 * 2048
    max_steps: int = 500
    max_images: int = 8
    max_upload_bytes: int = 50 * 1024 * 1024


DEFAULT_LIMITS = Limits()


def check_size(width: int, height: int, limits: Limits, what: str = "image") -> None:
    for name, value in (("width", width), ("height", height)):
        if value <= 0 or value % 8:
            raise BadRequest(
                f"{name} must be a positive multiple of 8 (got {value}); "
                f"try {max(8, round(value / 8) * 8)}"
            )
        if value < limits.min_side:
            raise BadRequest(f"{name} {value} is below this runner's minimum of {limits.min_side}")
        if value > limits.max_side:
            raise BadRequest(f"{name} {value} is above this runner's limit of {limits.max_side}")
    if width * height > limits.max_pixels:
        raise BadRequest(
            f"{what} of {width}x{height} is {width * height} pixels, above this runner's "
            f"limit of {limits.max_pixels}"
        )


def check_steps(steps: int, limits: Limits) -> None:
    if not 1 <= steps <= limits.max_steps:
        raise BadRequest(
            f"num_inference_steps must be between 1 and {limits.max_steps} (got {steps})"
        )


def check_images(n: int, limits: Limits) -> None:
    if not 1 <= n <= limits.max_images:
        raise BadRequest(
            f"num_images_per_prompt must be between 1 and {limits.max_images} (got {n})"
        )


def check_finite(name: str, value: float, lo: float | None = None, hi: float | None = None) -> None:
    if not math.isfinite(value):
        raise BadRequest(f"{name} must be a finite number (got {value})")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise BadRequest(f"{name} must be between {lo} and {hi} (got {value})")


def check_seed(seed: int | None, images: int = 1) -> None:
    if seed is not None and not 0 <= seed <= MAX_SEED - images:
        raise BadRequest(f"seed must be between 0 and {MAX_SEED - images} (got {seed})")


def resolve_seed(seed: int | None) -> int:
    """The request's seed, or a fresh random one (as the runner API says)."""
    return seed if seed is not None else random.randint(0, 2**32 - 1)


def split_prompt(prompt: str, key: str = "prompt", max_parts: int = 3) -> dict[str, str]:
    """``"a|b"`` -> ``{"prompt": "a", "prompt_2": "b"}``, as Livepeer's runner does.

    Parts after the first go to the model's further text encoders (SDXL has two); parts
    beyond ``max_parts`` (the model's number of text encoders) are ignored.
    """
    parts = [p.strip() for p in prompt.split("|")][:max_parts]
    out = {key: parts[0]}
    for i, part in enumerate(parts[1:], start=2):
        if part:
            out[f"{key}_{i}"] = part
    return out
