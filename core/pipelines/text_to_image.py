"""text-to-image (Livepeer capability 27): params, defaults, validation, billing."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from core.pipelines.common import (
    DEFAULT_LIMITS,
    Limits,
    check_finite,
    check_images,
    check_seed,
    check_size,
    check_steps,
)

NAME = "text-to-image"


class TextToImageParams(BaseModel):
    """The runner API's ``TextToImageParams``: same names, types and defaults."""

    model_id: str = Field("", description="Hugging Face model ID used for image generation.")
    loras: str = Field("", description="A LoRA model and its weight (JSON); not supported yet.")
    prompt: str = Field(..., description="Text prompt(s); separate prompts with '|'.")
    height: int = Field(576, description="The height in pixels of the generated image.")
    width: int = Field(1024, description="The width in pixels of the generated image.")
    guidance_scale: float = Field(7.5, description="Classifier-free guidance scale.")
    negative_prompt: str = Field("", description="Text prompt(s) to exclude.")
    safety_check: bool = Field(True, description="Perform a safety check.")
    seed: int | None = Field(None, description="Seed for random number generation.")
    num_inference_steps: int = Field(50, description="Number of denoising steps.")
    num_images_per_prompt: int = Field(1, description="Number of images to generate.")


def validate(p: TextToImageParams, limits: Limits = DEFAULT_LIMITS) -> None:
    """Raise BadRequest naming the first wrong value."""
    check_size(p.width, p.height, limits)
    check_steps(p.num_inference_steps, limits)
    check_images(p.num_images_per_prompt, limits)
    check_finite("guidance_scale", p.guidance_scale, 0.0, 100.0)
    check_seed(p.seed, p.num_images_per_prompt)
    if p.loras.strip():
        from core.errors import BadRequest

        raise BadRequest("loras are not supported by this runner yet; send an empty 'loras'")


def billing_pixels(request: dict[str, Any]) -> int:
    """Output pixels as Livepeer bills them: width x height x images, 512x512 when no size."""
    width = int(request.get("width") or 512)
    height = int(request.get("height") or 512)
    images = int(request.get("num_images_per_prompt") or 1)
    return width * height * images
