"""Livepeer's official Python SDK (``livepeer-ai``) against ``orchard gateway``.

An application written for Livepeer's gateways works unchanged against Orchard's: the SDK
calls text-to-image, image-to-image and image-to-video on an ``orchard gateway`` in front of
one ``orchard node`` (tiny models, one CPU runner) and gets its typed responses; errors
arrive as the SDK's typed errors with the gateway's message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.nodes import (
    SDXL,
    SVD,
    NodeProcess,
    Proc,
    png,
    start_gateway,
    start_nodes,
    stop_gateway,
    stop_node,
)

livepeer_ai = pytest.importorskip("livepeer_ai", reason="pip install livepeer-ai")
from livepeer_ai import Livepeer  # noqa: E402
from livepeer_ai.models import components, errors  # noqa: E402

CONFIG = [
    {"pipeline": p, "model_id": m, "warm": True, "price_per_unit": 1, "pixels_per_unit": 1}
    for p, m in (("text-to-image", SDXL), ("image-to-image", SDXL), ("image-to-video", SVD))
]


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from core.payments.sender import load_or_create_key

    path = tmp_path_factory.mktemp("sdk-key") / "gateway.json"
    load_or_create_key(path)
    return path


@pytest.fixture(scope="module")
def node(
    tiny_models: Path, key: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeProcess]:
    """A paid node; the gateway's address has an off-chain deposit there."""
    from core.payments.sender import load_or_create_key

    deposits = {str(load_or_create_key(key).address): 10**21}
    (n,) = start_nodes(tiny_models, tmp_path_factory.mktemp("sdk-node"), [CONFIG], deposits)
    yield n
    stop_node(n)


@pytest.fixture(scope="module")
def gateway(
    node: NodeProcess, key: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proc]:
    gw = start_gateway(
        tmp_path_factory.mktemp("sdk-gateway"), [node.url], "--max-price", "10", "--key", str(key)
    )
    yield gw
    stop_gateway(gw)


@pytest.fixture
def sdk(gateway: Proc) -> Iterator[Livepeer]:
    """The SDK as an application builds it, with clients this test closes."""
    client, async_client = httpx.Client(timeout=120), httpx.AsyncClient()
    try:
        with Livepeer(
            http_bearer="any-token",
            server_url=gateway.url,
            client=client,
            async_client=async_client,
        ) as lp:
            yield lp
    finally:
        client.close()
        asyncio.run(async_client.aclose())


def image(name: str = "in.png", size: tuple[int, int] = (64, 64)) -> dict[str, Any]:
    return {"file_name": name, "content": png(size), "content_type": "image/png"}


def test_text_to_image(sdk: Livepeer, node: NodeProcess) -> None:
    res = sdk.generate.text_to_image(
        request={
            "model_id": SDXL,
            "prompt": "a boat",
            "width": 64,
            "height": 64,
            "num_inference_steps": 2,
            "num_images_per_prompt": 2,
            "seed": 11,
        }
    )
    assert isinstance(res.image_response, components.ImageResponse)
    images = res.image_response.images
    assert [m.seed for m in images] == [11, 12] and not any(m.nsfw for m in images)
    assert all(m.url.startswith("data:image/png;base64,") for m in images)
    assert res.http_meta is not None
    assert res.http_meta.response.headers["X-Orchestrator"] == node.url


def test_image_to_image(sdk: Livepeer) -> None:
    res = sdk.generate.image_to_image(
        request=components.BodyGenImageToImage(
            image=components.Image(**image(size=(72, 64))),
            model_id=SDXL,
            prompt="a boat",
            num_inference_steps=2,
            strength=0.5,
            seed=3,
        )
    )
    assert res.image_response is not None
    (img,) = res.image_response.images
    assert img.seed == 3 and img.url.startswith("data:image/png;base64,")


def test_image_to_video(sdk: Livepeer) -> None:
    res = sdk.generate.image_to_video(
        request={
            "image": image(),
            "model_id": SVD,
            "width": 64,
            "height": 64,
            "num_inference_steps": 2,
            "seed": 5,
        }
    )
    assert isinstance(res.video_response, components.VideoResponse)
    frames = res.video_response.images
    assert len(frames) == 14 and {m.seed for m in frames} == {5}
    assert all(m.url.startswith("data:image/png;base64,") for m in frames)


def test_errors_arrive_typed(sdk: Livepeer) -> None:
    body = {"model_id": SDXL, "prompt": "x", "width": 100, "height": 64}
    with pytest.raises(errors.HTTPError) as bad:
        sdk.generate.text_to_image(request=body)
    assert "multiple of 8" in bad.value.data.detail.msg
    with pytest.raises(errors.SDKError) as none:
        sdk.generate.text_to_image(request={**body, "width": 64, "model_id": "acme/nothing"})
    assert none.value.status_code == 503
    assert "no orchestrator offers model acme/nothing" in none.value.body
