"""image-to-video (Livepeer capability 29): params, defaults, validation, billing."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from core.errors import BadRequest
from core.pipelines.common import (
    DEFAULT_LIMITS,
    Limits,
    check_finite,
    check_seed,
    check_size,
    check_steps,
)

NAME = "image-to-video"

#: Livepeer bills image-to-video as if every video had this many frames.
BILLED_FRAMES = 25


class ImageToVideoParams(BaseModel):
    """The runner API's ``Body_genImageToVideo`` fields other than the uploaded image."""

    model_id: str = Field("", description="Hugging Face model ID used for video generation.")
    height: int = Field(576, description="The height in pixels of the generated video.")
    width: int = Field(1024, description="The width in pixels of the generated video.")
    fps: int = Field(6, description="The frames per second of the generated video.")
    motion_bucket_id: int = Field(127, description="Amount of motion; higher is more.")
    noise_aug_strength: float = Field(0.02, description="Noise added to the conditioning image.")
    safety_check: bool = Field(True, description="Perform a safety check.")
    seed: int | None = Field(None, description="Seed for random number generation.")
    num_inference_steps: int = Field(25, description="Number of denoising steps.")


def validate(p: ImageToVideoParams, limits: Limits = DEFAULT_LIMITS) -> None:
    """Raise BadRequest naming the first wrong value."""
    check_size(p.width, p.height, limits, what="video")
    check_steps(p.num_inference_steps, limits)
    if not 1 <= p.fps <= 60:
        raise BadRequest(f"fps must be between 1 and 60 (got {p.fps})")
    if not 0 <= p.motion_bucket_id <= 1023:
        raise BadRequest(f"motion_bucket_id must be between 0 and 1023 (got {p.motion_bucket_id})")
    check_finite("noise_aug_strength", p.noise_aug_strength, 0.0, 10.0)
    check_seed(p.seed)


def billing_pixels(request: dict[str, Any]) -> int:
    """Livepeer's rule: width x height x 25."""
    width = int(request.get("width") or 1024)
    height = int(request.get("height") or 576)
    return width * height * BILLED_FRAMES
