"""image-to-image (Livepeer capability 28): params, defaults, validation, billing."""

from __future__ import annotations

from pydantic import BaseModel, Field

from core.errors import BadRequest
from core.pipelines.common import (
    DEFAULT_LIMITS,
    Limits,
    check_finite,
    check_images,
    check_seed,
    check_size,
    check_steps,
)

NAME = "image-to-image"


class ImageToImageParams(BaseModel):
    """The runner API's ``Body_genImageToImage`` fields other than the uploaded image."""

    prompt: str = Field(..., description="Text prompt(s); separate prompts with '|'.")
    model_id: str = Field("", description="Hugging Face model ID used for image generation.")
    loras: str = Field("", description="A LoRA model and its weight (JSON); not supported yet.")
    strength: float = Field(0.8, description="Degree of transformation (0 to 1).")
    guidance_scale: float = Field(7.5, description="Classifier-free guidance scale.")
    image_guidance_scale: float = Field(1.5, description="Pull towards the initial image.")
    negative_prompt: str = Field("", description="Text prompt(s) to exclude.")
    safety_check: bool = Field(True, description="Perform a safety check.")
    seed: int | None = Field(None, description="Seed for random number generation.")
    num_inference_steps: int = Field(100, description="Denoising steps, modulated by strength.")
    num_images_per_prompt: int = Field(1, description="Number of images to generate.")


def validate(
    p: ImageToImageParams, width: int, height: int, limits: Limits = DEFAULT_LIMITS
) -> None:
    """Raise BadRequest naming the first wrong value. ``width``/``height``: the input image."""
    check_size(width, height, limits, what="input image")
    check_steps(p.num_inference_steps, limits)
    check_images(p.num_images_per_prompt, limits)
    check_finite("strength", p.strength, 0.0, 1.0)
    check_finite("guidance_scale", p.guidance_scale, 0.0, 100.0)
    check_finite("image_guidance_scale", p.image_guidance_scale, 0.0, 100.0)
    check_seed(p.seed, p.num_images_per_prompt)
    if p.strength * p.num_inference_steps < 1:
        raise BadRequest(
            f"strength x num_inference_steps must be at least 1 so that one step runs "
            f"(got {p.strength} x {p.num_inference_steps})"
        )
    if p.loras.strip():
        raise BadRequest("loras are not supported by this runner yet; send an empty 'loras'")


def billing_pixels(width: int, height: int, images: int | None = None) -> int:
    """Livepeer's rule: input image width x height x images."""
    return width * height * int(images or 1)
