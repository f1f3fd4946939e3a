"""Property-based run of the runner contract against a real runner (schemathesis).

Hypothesis generates bodies from the contract's schemas, valid and invalid; every answer must
be documented, conform to its schema, and never be a 500. The runner runs with small limits
so that the generated requests which pass validation stay quick on a CPU.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import TINY_WARM, RunnerProcess, start_runner
from tests.contract import CONTRACTS, RUNNER

IMPLEMENTED = (
    r"^/(text-to-image|image-to-image|image-to-video|health|version|hardware/(info|stats))$"
)
SCHEMA = schemathesis.openapi.from_path(CONTRACTS / RUNNER).include(path_regex=IMPLEMENTED)
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def small_runner(
    tiny_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunnerProcess]:
    r = start_runner(
        tiny_models,
        tmp_path_factory.mktemp("fuzz"),
        *TINY_WARM,
        "--max-side",
        "128",
        "--max-steps",
        "3",
        "--max-images",
        "2",
    )
    yield r
    r.stop()


def steer(body: dict[str, Any], data: st.DataObject, multipart: bool) -> None:
    """Half of the valid bodies keep their generated prompts, seeds and flags but get sizes,
    steps and an image this runner accepts, so the generation path itself is fuzzed too."""
    if not data.draw(st.booleans()):
        return
    side = st.sampled_from([64, 72, 128])
    body.update(
        width=data.draw(side),
        height=data.draw(side),
        loras="",
        model_id="",
        num_inference_steps=data.draw(st.integers(1, 3)),
    )
    if "seed" in body:
        body["seed"] = data.draw(st.integers(0, 2**40))
    if "num_images_per_prompt" in body:
        body["num_images_per_prompt"] = data.draw(st.integers(1, 2))
    for key, low, high in (
        ("guidance_scale", 0, 20),
        ("image_guidance_scale", 0, 5),
        ("noise_aug_strength", 0, 1),
        ("motion_bucket_id", 0, 255),
    ):
        if key in body:
            value = data.draw(
                st.floats(low, high) if key != "motion_bucket_id" else st.integers(low, high)
            )
            body[key] = value
    if "fps" in body:
        body["fps"] = data.draw(st.integers(1, 30))
    if "strength" in body:
        body["strength"] = data.draw(st.floats(0.34, 1.0))
    if multipart:
        body["image"] = png(data.draw(side), data.draw(side))
        body.setdefault("prompt", "x")
        if body.get("prompt") == "":
            body["prompt"] = " "  # multipart drops empty fields (as Livepeer's runner does)
    if "fps" in body:  # the video route has no width/height check on the upload
        body.pop("strength", None)


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (width % 255, height % 255, 90)).save(buf, format="PNG")
    return buf.getvalue()


def test_every_contract_route_is_fuzzed() -> None:
    assert sorted(op.path for op in OPERATIONS) == [
        "/hardware/info",
        "/hardware/stats",
        "/health",
        "/image-to-image",
        "/image-to-video",
        "/text-to-image",
        "/version",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
def test_contract_holds_for_generated_requests(
    small_runner: RunnerProcess, operation: schemathesis.APIOperation, mode: GenerationMode
) -> None:
    if mode == GenerationMode.NEGATIVE and operation.method.upper() == "GET":
        pytest.skip("GET routes take no input to make invalid")
    seen: list[int] = []

    @given(data=st.data())
    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(data: st.DataObject) -> None:
        case = data.draw(operation.as_strategy(generation_mode=mode))
        if mode == GenerationMode.POSITIVE and isinstance(case.body, dict):
            steer(case.body, data, operation.path != "/text-to-image")
        response = case.call(base_url=small_runner.url, timeout=60)
        seen.append(response.status_code)
        case.validate_response(response, checks=CHECKS)

    run()
    assert seen, "no request was sent"
    assert 500 not in seen
    if mode == GenerationMode.POSITIVE and operation.method.upper() == "POST":
        assert 200 in seen, f"no generated request got through validation: {sorted(seen)}"
    assert small_runner.proc.poll() is None, small_runner.log_text()
