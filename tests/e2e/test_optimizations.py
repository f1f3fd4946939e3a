"""Optimisation flags end to end: a real runner given flags on its command line and through
POST /models/load, concurrent requests batched into one pipeline call, and a node passing the
flags of its aiModels.json to its runner."""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from tests.conftest import start_runner
from tests.e2e.nodes import SDXL, small, spawn_node, stop_node, wait_node


def pixels(url: str) -> np.ndarray:
    data = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def test_runner_batches_concurrent_requests_and_keeps_each_image(
    tiny_models: Path, tmp_path: Path
) -> None:
    r = start_runner(
        tiny_models,
        tmp_path,
        "--warm",
        f"text-to-image:{SDXL}",
        "--flags",
        f"{SDXL}:CHANNELS_LAST,BATCH=4,PNG_LEVEL=0",
    )
    try:
        with r.client() as c:
            (model,) = c.get("/models").json()["models"]
            assert model["optimization_flags"] == {
                "CHANNELS_LAST": True,
                "BATCH": "4",
                "PNG_LEVEL": "0",
            }
            assert any(n.startswith("CHANNELS_LAST: unet") for n in model["optimizations"])
            assert "BATCH: up to 4 images per call" in model["optimizations"]
            bodies = [
                small(prompt=f"boat {i}", seed=100 + i, num_inference_steps=6) for i in range(4)
            ]
            alone = [c.post("/text-to-image", json=b).json()["images"][0] for b in bodies]
            runs_before = c.get("/models").json()["models"][0]["runs"]

        async def together() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=r.url, timeout=120) as ac:
                return list(
                    await asyncio.gather(*(ac.post("/text-to-image", json=b) for b in bodies))
                )

        responses = asyncio.run(together())
        assert [x.status_code for x in responses] == [200] * 4
        with r.client() as c:
            calls = c.get("/models").json()["models"][0]["runs"] - runs_before
        # the first request may start alone before the others arrive; the rest wait together
        assert calls < 4, calls
        for solo, resp in zip(alone, responses, strict=True):
            (img,) = resp.json()["images"]
            assert img["seed"] == solo["seed"]
            assert np.abs(pixels(img["url"]) - pixels(solo["url"])).max() <= 2
            # PNG_LEVEL=0: stored, not compressed (noise at level 1 is smaller than this)
            raw = base64.b64decode(img["url"].split(",", 1)[1])
            assert len(raw) >= 64 * 64 * 3
    finally:
        r.stop()


def test_load_with_bad_flags_is_400_and_the_runner_keeps_serving(
    tiny_models: Path, tmp_path: Path
) -> None:
    r = start_runner(tiny_models, tmp_path, "--warm", f"text-to-image:{SDXL}")
    try:
        with r.client() as c:
            bad = c.post(
                "/models/load",
                json={
                    "pipeline": "image-to-image",
                    "model_id": SDXL,
                    "optimization_flags": {"COMPILE_MOD": "default"},
                },
            )
            assert bad.status_code == 400, bad.text
            assert 'did you mean "COMPILE_MODE"' in bad.json()["detail"]["msg"]
            ok = c.post(
                "/models/load",
                json={
                    "pipeline": "image-to-image",
                    "model_id": SDXL,
                    "optimization_flags": {"FUSE_QKV": True},
                },
            )
            assert ok.status_code == 200, ok.text
            assert c.post("/text-to-image", json=small()).status_code == 200
    finally:
        r.stop()


def test_node_passes_its_configured_flags_to_the_runner(tiny_models: Path, tmp_path: Path) -> None:
    config: list[dict[str, Any]] = [
        {
            "pipeline": "text-to-image",
            "model_id": SDXL,
            "warm": True,
            "capacity": 4,
            "optimization_flags": {"CHANNELS_LAST": True, "BATCH": "4", "SFAST": True},
        }
    ]
    node = wait_node(spawn_node(tiny_models, tmp_path, config, "--free"))
    try:
        with node.client() as c:
            info = c.get("/info").json()
            model = info["capabilities"]["per_capability"]["27"]["models"][SDXL]
            assert model["optimization_flags"] == {
                "CHANNELS_LAST": True,
                "BATCH": "4",
                "SFAST": True,
            }
            notes = model["optimizations"]
            assert any(n.startswith("CHANNELS_LAST: unet") for n in notes), notes
            assert any(n.startswith("SFAST: ignored") for n in notes), notes
            r = c.post("/text-to-image", json=small())
            assert r.status_code == 200, r.text
        assert 'optimization flag "SFAST"' in node.log_text()  # the config warning
    finally:
        stop_node(node)
