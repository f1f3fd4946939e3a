"""Capability modules: defaults equal the contract's, validation messages, billing units."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from core.errors import BadRequest
from core.pipelines import LIVEPEER_CAPABILITY_IDS, Capability, module, parse_capability
from core.pipelines.common import Limits, split_prompt
from core.pipelines.image_to_image import ImageToImageParams
from core.pipelines.image_to_video import ImageToVideoParams
from core.pipelines.text_to_image import TextToImageParams
from tests.contract import CONTRACTS, RUNNER

SCHEMAS = yaml.safe_load((CONTRACTS / RUNNER).read_text())["components"]["schemas"]


@pytest.mark.parametrize(
    ("model", "schema"),
    [
        (TextToImageParams, "TextToImageParams"),
        (ImageToImageParams, "Body_genImageToImage"),
        (ImageToVideoParams, "Body_genImageToVideo"),
    ],
)
def test_params_match_the_contract(model: type[BaseModel], schema: str) -> None:
    """Same field names, the same required ones, the same defaults (the file field aside)."""
    spec = SCHEMAS[schema]
    props = {k: v for k, v in spec["properties"].items() if v.get("format") != "binary"}
    assert set(model.model_fields) == set(props)
    required = {k for k in spec.get("required", []) if k in props}
    assert {k for k, f in model.model_fields.items() if f.is_required()} == required
    for name, prop in props.items():
        if "default" in prop:
            assert model.model_fields[name].default == prop["default"], name
        else:
            assert name in required or model.model_fields[name].default is None, name


def test_registry_and_livepeer_ids() -> None:
    assert LIVEPEER_CAPABILITY_IDS == {
        Capability.TEXT_TO_IMAGE: 27,
        Capability.IMAGE_TO_IMAGE: 28,
        Capability.IMAGE_TO_VIDEO: 29,
    }
    assert module("image-to-video").NAME == "image-to-video"
    with pytest.raises(ValueError, match="unknown pipeline 'upscale'; known pipelines: text-to"):
        parse_capability("upscale")


@pytest.mark.parametrize(
    ("prompt", "parts", "expected"),
    [
        ("a cat", 2, {"prompt": "a cat"}),
        ("a cat | oil painting", 2, {"prompt": "a cat", "prompt_2": "oil painting"}),
        ("a|b|c", 2, {"prompt": "a", "prompt_2": "b"}),
        ("a|b|c", 3, {"prompt": "a", "prompt_2": "b", "prompt_3": "c"}),
        ("a||", 3, {"prompt": "a"}),
        ("a|b", 1, {"prompt": "a"}),
        ("", 2, {"prompt": ""}),
    ],
)
def test_split_prompt(prompt: str, parts: int, expected: dict[str, str]) -> None:
    assert split_prompt(prompt, "prompt", parts) == expected


LIMITS = Limits(max_side=1024, max_pixels=1024 * 1024, max_steps=100, max_images=4)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"width": 1002}, "width must be a positive multiple of 8 (got 1002); try 1000"),
        ({"width": 1001}, "width must be a positive multiple of 8 (got 1001); try 1000"),
        ({"height": -8}, "height must be a positive multiple of 8"),
        ({"width": 2048}, "width 2048 is above this runner's limit of 1024"),
        ({"width": 56}, "width 56 is below this runner's minimum of 64"),
        ({"num_inference_steps": 101}, "num_inference_steps must be between 1 and 100"),
        ({"num_images_per_prompt": 5}, "num_images_per_prompt must be between 1 and 4"),
        ({"guidance_scale": float("nan")}, "guidance_scale must be a finite number"),
        ({"guidance_scale": -1.0}, "guidance_scale must be between 0.0 and 100.0"),
        ({"seed": 2**63}, "seed must be between 0 and"),
    ],
)
def test_text_to_image_validation(change: dict[str, Any], message: str) -> None:
    params = TextToImageParams(prompt="x", width=512, height=512).model_copy(update=change)
    with pytest.raises(BadRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
        module("text-to-image").validate(params, LIMITS)


def test_image_to_image_needs_one_step_after_strength() -> None:
    params = ImageToImageParams(prompt="x", strength=0.1, num_inference_steps=5)
    with pytest.raises(BadRequest, match=r"strength x num_inference_steps must be at least 1"):
        module("image-to-image").validate(params, 64, 64, LIMITS)
    module("image-to-image").validate(params.model_copy(update={"strength": 0.2}), 64, 64, LIMITS)


def test_image_to_video_validation() -> None:
    ok = ImageToVideoParams(width=512, height=512)
    module("image-to-video").validate(ok, LIMITS)
    for change, msg in (
        ({"fps": 0}, "fps"),
        ({"motion_bucket_id": 5000}, "motion_bucket_id"),
        ({"noise_aug_strength": -0.1}, "noise_aug_strength"),
    ):
        with pytest.raises(BadRequest, match=msg):
            module("image-to-video").validate(ok.model_copy(update=change), LIMITS)


def test_billing_units_as_livepeer() -> None:
    t2i, i2i, i2v = (module(c) for c in Capability)
    assert t2i.billing_pixels({}) == 512 * 512  # no size given
    assert t2i.billing_pixels({"width": 1024, "height": 576, "num_images_per_prompt": 2}) == (
        1024 * 576 * 2
    )
    assert i2i.billing_pixels(640, 480, 3) == 640 * 480 * 3
    assert i2i.billing_pixels(640, 480) == 640 * 480
    assert i2v.billing_pixels({"width": 1024, "height": 576}) == 1024 * 576 * 25
