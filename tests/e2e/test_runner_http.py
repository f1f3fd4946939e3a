"""A real runner process, tiny models on CPU, driven over HTTP on loopback.

Every contract route, its defaults, every error the issue lists, determinism by seed,
concurrent requests, progress events with previews, and the MP4 of a video.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from core.runner.media import mp4_info
from tests.conftest import TINY_WARM, RunnerProcess, start_runner
from tests.contract import validate

SDXL = "orchard-tiny/sdxl"
SVD = "orchard-tiny/svd"
TINY_FRAMES = 14


def png_bytes(
    size: tuple[int, int] = (64, 64), color: tuple[int, int, int] = (200, 30, 30)
) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def decode(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def t2i(client: httpx.Client, **body: Any) -> httpx.Response:
    body.setdefault("prompt", "a lighthouse at dusk")
    return client.post("/text-to-image", json=body)


def assert_error(r: httpx.Response, status: int, *fragments: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    if status == 422:
        validate(body, "HTTPValidationError")
    else:
        validate(body, "HTTPError")
        for f in fragments:
            assert f in body["detail"]["msg"], body


# ------------------------------------------------------------------------- status routes
def test_status_routes_answer_in_contract_shape(runner: RunnerProcess) -> None:
    with runner.client() as c:
        health = c.get("/health").json()
        validate(health, "HealthCheck")
        assert health == {"status": "OK"}
        version = c.get("/version").json()
        validate(version, "Version")
        assert version["pipeline"] == "text-to-image" and version["model_id"] == SDXL
        info = c.get("/hardware/info").json()
        validate(info, "HardwareInformation")
        assert info["gpu_info"] == {}  # CPU runner: no GPU to describe
        validate(c.get("/hardware/stats").json(), "HardwareStats")


def test_models_lists_warm_models_sharing_weights(runner: RunnerProcess) -> None:
    with runner.client() as c:
        body = c.get("/models").json()
    assert body["device"] == "cpu" and body["dtype"] == "float32"
    models = {(m["pipeline"], m["model_id"]): m for m in body["models"]}
    assert set(models) == {
        ("text-to-image", SDXL),
        ("image-to-image", SDXL),
        ("image-to-video", SVD),
    }
    t, i = models[("text-to-image", SDXL)], models[("image-to-image", SDXL)]
    assert t["shares_weights_with"] == ["image-to-image"]
    assert t["weights_bytes"] == i["weights_bytes"] > 0
    assert set(t["vram"]) == {
        "allocated_after_load",
        "reserved_after_load",
        "peak_allocated_last_run",
        "peak_reserved_last_run",
    }


# ------------------------------------------------------------------------- generation
def test_text_to_image_defaults(runner: RunnerProcess) -> None:
    """Only a prompt: the contract's defaults (1024x576, one image, a random seed)."""
    with runner.client() as c:
        r = c.post("/text-to-image", json={"prompt": "a red fox"})
    assert r.status_code == 200, r.text
    body = r.json()
    validate(body, "ImageResponse")
    assert len(body["images"]) == 1
    media = body["images"][0]
    assert decode(media["url"]).size == (1024, 576)
    assert isinstance(media["seed"], int) and 0 <= media["seed"] < 2**32
    assert media["nsfw"] is False


def test_text_to_image_same_seed_same_image(runner: RunnerProcess) -> None:
    with runner.client() as c:
        a = t2i(c, width=128, height=96, num_inference_steps=3, seed=42).json()
        b = t2i(c, width=128, height=96, num_inference_steps=3, seed=42).json()
        d = t2i(c, width=128, height=96, num_inference_steps=3, seed=43).json()
    assert a["images"][0]["seed"] == 42
    assert decode(a["images"][0]["url"]).tobytes() == decode(b["images"][0]["url"]).tobytes()
    assert decode(a["images"][0]["url"]).tobytes() != decode(d["images"][0]["url"]).tobytes()


def test_text_to_image_several_images_and_split_prompt(runner: RunnerProcess) -> None:
    with runner.client() as c:
        r = t2i(
            c,
            prompt="a cat | a watercolour",
            width=64,
            height=64,
            num_inference_steps=2,
            num_images_per_prompt=3,
            seed=7,
        )
        single = t2i(
            c, prompt="a cat | a watercolour", width=64, height=64, num_inference_steps=2, seed=8
        )
    assert r.status_code == 200, r.text
    images = r.json()["images"]
    assert [m["seed"] for m in images] == [7, 8, 9]
    assert all(decode(m["url"]).size == (64, 64) for m in images)
    # Image i of a batch is the image of seed + i alone.
    diff = [
        abs(x - y)
        for x, y in zip(
            decode(images[1]["url"]).tobytes(),
            decode(single.json()["images"][0]["url"]).tobytes(),
            strict=True,
        )
    ]
    assert max(diff) <= 2


def test_image_to_image_keeps_input_size(runner: RunnerProcess) -> None:
    with runner.client() as c:
        r = c.post(
            "/image-to-image",
            data={
                "prompt": "make it blue",
                "num_inference_steps": "4",
                "strength": "0.5",
                "seed": "5",
                "model_id": SDXL,
            },
            files={"image": ("in.png", png_bytes((96, 64)), "image/png")},
        )
    assert r.status_code == 200, r.text
    body = r.json()
    validate(body, "ImageResponse")
    assert decode(body["images"][0]["url"]).size == (96, 64)
    assert body["images"][0]["seed"] == 5


def test_image_to_image_defaults_and_odd_input_size(runner: RunnerProcess) -> None:
    """Defaults (strength 0.8, 100 steps); a 70x75 photo is centre-cropped to 64x72."""
    with runner.client() as c:
        r = c.post(
            "/image-to-image",
            data={"prompt": "x"},
            files={"image": ("in.png", png_bytes((70, 75)), "image/png")},
        )
    assert r.status_code == 200, r.text
    assert decode(r.json()["images"][0]["url"]).size == (64, 72)


def test_image_to_video_frames_and_mp4(runner: RunnerProcess) -> None:
    with runner.client() as c:
        r = c.post(
            "/image-to-video",
            data={
                "width": "64",
                "height": "64",
                "num_inference_steps": "2",
                "fps": "8",
                "seed": "11",
            },
            files={"image": ("in.jpg", png_bytes((80, 80)), "image/png")},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        validate(body, "VideoResponse")
        assert len(body["frames"]) == 1 and len(body["frames"][0]) == TINY_FRAMES
        assert all(f["seed"] == 11 and decode(f["url"]).size == (64, 64) for f in body["frames"][0])
        video = c.get(r.headers["X-Video-Url"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    frames, width, height, fps = mp4_info(video.content)
    assert (frames, width, height) == (TINY_FRAMES, 64, 64)
    assert fps == pytest.approx(8)


# ------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"prompt": "x", "width": 100}, 400, "width must be a positive multiple of 8"),
        ({"prompt": "x", "height": 0}, 400, "height must be a positive multiple of 8"),
        ({"prompt": "x", "height": 32}, 400, "height 32 is below this runner's minimum of 64"),
        ({"prompt": "x", "width": 4096}, 400, "above this runner's limit"),
        ({"prompt": "x", "num_inference_steps": 0}, 400, "num_inference_steps"),
        ({"prompt": "x", "num_images_per_prompt": 0}, 400, "num_images_per_prompt"),
        ({"prompt": "x", "seed": -1}, 400, "seed must be between"),
        ({"prompt": "x", "model_id": "nobody/nothing"}, 400, "not loaded"),
        ({"prompt": "x", "loras": '{"a/b": 1.0}'}, 400, "loras"),
        ({"width": 64}, 422, ""),
        ({"prompt": "x", "width": "wide"}, 422, ""),
        ({"prompt": ["a", "b"]}, 422, ""),
    ],
    ids=[
        "width-not-8",
        "height-zero",
        "too-small",
        "too-wide",
        "zero-steps",
        "zero-images",
        "negative-seed",
        "unknown-model",
        "loras",
        "missing-prompt",
        "wrong-type",
        "prompt-list",
    ],
)
def test_text_to_image_bad_values(
    runner: RunnerProcess, body: dict[str, Any], status: int, fragment: str
) -> None:
    with runner.client() as c:
        assert_error(c.post("/text-to-image", json=body), status, fragment)


def test_bad_json_is_422(runner: RunnerProcess) -> None:
    with runner.client() as c:
        r = c.post(
            "/text-to-image",
            content=b'{"prompt": "x",',
            headers={"Content-Type": "application/json"},
        )
    assert_error(r, 422)
    assert r.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.parametrize("path", ["/image-to-image", "/image-to-video"])
def test_uploads_that_are_not_images(runner: RunnerProcess, path: str) -> None:
    data = {"prompt": "x"} if path == "/image-to-image" else {"width": "64", "height": "64"}
    with runner.client() as c:
        missing = c.post(path, data=data)
        text = c.post(path, data=data, files={"image": ("a.png", b"hello, not a png", "image/png")})
        empty = c.post(path, data=data, files={"image": ("a.png", b"", "image/png")})
        truncated = c.post(
            path, data=data, files={"image": ("a.png", png_bytes()[:60], "image/png")}
        )
    assert_error(missing, 422)
    assert missing.json()["detail"][0]["loc"] == ["body", "image"]
    assert_error(text, 400, "is not an image")
    assert_error(empty, 400, "empty")
    assert_error(truncated, 400, "image")


def test_image_to_video_bad_values(runner: RunnerProcess) -> None:
    files = {"image": ("a.png", png_bytes(), "image/png")}
    with runner.client() as c:
        assert_error(c.post("/image-to-video", data={"width": "65"}, files=files), 400, "width")
        assert_error(
            c.post(
                "/image-to-video", data={"fps": "0", "width": "64", "height": "64"}, files=files
            ),
            400,
            "fps",
        )
        assert_error(
            c.post(
                "/image-to-video",
                data={"width": "64", "height": "64", "model_id": SDXL},
                files=files,
            ),
            400,
            "not loaded",
        )
        assert_error(c.post("/image-to-video", data={"motion_bucket_id": "many"}, files=files), 422)


def test_image_to_image_bad_values(runner: RunnerProcess) -> None:
    files = {"image": ("a.png", png_bytes(), "image/png")}
    with runner.client() as c:
        assert_error(
            c.post("/image-to-image", data={"prompt": "x", "strength": "1.5"}, files=files),
            400,
            "strength",
        )
        assert_error(
            c.post("/image-to-image", data={"prompt": "x", "model_id": SVD}, files=files),
            400,
            "not loaded",
        )


def test_unknown_route_and_method(runner: RunnerProcess) -> None:
    with runner.client() as c:
        assert_error(c.get("/nope"), 404, "Not Found")
        assert_error(c.get("/text-to-image"), 405, "Method Not Allowed")


def test_runner_keeps_serving_after_errors(runner: RunnerProcess) -> None:
    with runner.client() as c:
        for _ in range(3):
            c.post(
                "/text-to-image",
                content=b"\xff\xfe garbage",
                headers={"Content-Type": "application/json"},
            )
            c.post("/image-to-image", data={"prompt": "x"}, files={"image": ("a", b"\x00" * 99)})
        assert t2i(c, width=64, height=64, num_inference_steps=1).status_code == 200
        assert c.get("/health").json() == {"status": "OK"}


# ------------------------------------------------------------------------- token and size
@pytest.fixture(scope="module")
def guarded(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    r = start_runner(
        tiny_models,
        tmp_path_factory.mktemp("guarded"),
        "--token",
        "s3cret",
        "--max-upload-mb",
        "0.25",
        "--warm",
        f"image-to-image:{SDXL}",
    )
    yield r
    r.stop()


def test_token_required_on_generation_not_on_health(guarded: RunnerProcess) -> None:
    files = {"image": ("a.png", png_bytes(), "image/png")}
    data = {"prompt": "x", "num_inference_steps": "2"}
    with guarded.client() as c:
        assert c.get("/health").status_code == 200
        assert c.get("/version").status_code == 200
        assert_error(c.post("/image-to-image", data=data, files=files), 401, "missing bearer token")
        assert_error(c.get("/models"), 401, "bearer token")
    with guarded.client("wrong") as c:
        assert_error(c.post("/image-to-image", data=data, files=files), 401, "invalid bearer token")
    with guarded.client("s3cret") as c:
        assert c.post("/image-to-image", data=data, files=files).status_code == 200


def test_oversize_upload_is_413_and_runner_continues(guarded: RunnerProcess) -> None:
    big = Image.frombytes("RGB", (400, 400), bytes(range(256)) * 1875)
    buf = io.BytesIO()
    big.save(buf, format="BMP")  # ~480 KB, over the 0.25 MiB limit
    with guarded.client("s3cret") as c:
        r = c.post(
            "/image-to-image",
            data={"prompt": "x"},
            files={"image": ("big.bmp", buf.getvalue(), "image/bmp")},
        )
        assert_error(r, 413, "upload limit")

        def chunks() -> Any:  # no Content-Length: the limit is enforced while streaming
            yield b'--zz\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\n'
            for _ in range(40):
                yield b"x" * 16384

        r = c.post(
            "/image-to-image",
            content=chunks(),
            headers={"Content-Type": "multipart/form-data; boundary=zz"},
        )
        assert_error(r, 413, "upload limit")
        ok = c.post(
            "/image-to-image",
            data={"prompt": "x", "num_inference_steps": "2"},
            files={"image": ("a.png", png_bytes(), "image/png")},
        )
        assert ok.status_code == 200


# ------------------------------------------------------------------------- concurrency
def test_concurrent_requests_all_complete_and_health_answers(runner: RunnerProcess) -> None:
    async def main() -> tuple[list[httpx.Response], list[float]]:
        async with httpx.AsyncClient(base_url=runner.url, timeout=120) as c:
            jobs = [
                asyncio.create_task(
                    c.post(
                        "/text-to-image",
                        json={
                            "prompt": f"job {i}",
                            "width": 192,
                            "height": 192,
                            "num_inference_steps": 20,
                            "seed": i,
                        },
                    )
                )
                for i in range(6)
            ]
            health_times = []
            await asyncio.sleep(0.05)
            while not all(j.done() for j in jobs):
                t0 = time.perf_counter()
                h = await c.get("/health")
                health_times.append(time.perf_counter() - t0)
                assert h.json() == {"status": "OK"}
                await asyncio.sleep(0.1)
            return list(await asyncio.gather(*jobs)), health_times

    responses, health_times = asyncio.run(main())
    assert [r.status_code for r in responses] == [200] * 6
    assert [r.json()["images"][0]["seed"] for r in responses] == list(range(6))
    assert health_times, "the jobs finished before /health could be asked"
    assert max(health_times) < 1.0, health_times


# ------------------------------------------------------------------------- progress
def read_events(url: str, out: list[dict[str, Any]]) -> None:
    with httpx.stream("GET", url, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))


def test_progress_stream_steps_and_previews(runner: RunnerProcess) -> None:
    events: list[dict[str, Any]] = []
    rid = "progress-test-1"
    reader = threading.Thread(target=read_events, args=(f"{runner.url}/progress/{rid}", events))
    reader.start()
    with runner.client() as c:
        r = c.post(
            "/text-to-image",
            headers={"X-Request-Id": rid},
            json={"prompt": "x", "width": 128, "height": 128, "num_inference_steps": 5},
        )
    reader.join(30)
    assert r.status_code == 200 and r.headers["X-Request-Id"] == rid
    kinds = [e["event"] for e in events]
    assert kinds[:2] == ["queued", "started"] and kinds[-1] == "done"
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4, 5]
    assert all(e["steps"] == 5 for e in steps)
    for e in (steps[0], steps[-1]):  # first and last steps always carry a preview
        assert len(e["previews"]) == 1
        img = Image.open(io.BytesIO(base64.b64decode(e["previews"][0].split(",", 1)[1])))
        assert img.format == "JPEG" and max(img.size) <= 128


def test_progress_stream_for_video_has_frame_previews(runner: RunnerProcess) -> None:
    with runner.client() as c:
        rid = "progress-video-1"
        r = c.post(
            "/image-to-video",
            headers={"X-Request-Id": rid},
            data={"width": "64", "height": "64", "num_inference_steps": "2"},
            files={"image": ("a.png", png_bytes(), "image/png")},
        )
        assert r.status_code == 200
    events: list[dict[str, Any]] = []
    read_events(f"{runner.url}/progress/{rid}", events)  # a late follower gets the history
    steps = [e for e in events if e["event"] == "step"]
    assert len(steps) == 2 and len(steps[-1]["previews"]) == 8  # 14 frames shown as 8
    assert events[-1]["event"] == "done" and events[-1]["frames"] == TINY_FRAMES


def test_progress_stream_reports_errors(runner: RunnerProcess) -> None:
    with runner.client() as c:
        rid = "progress-error-1"
        r = c.post(
            "/text-to-image", headers={"X-Request-Id": rid}, json={"prompt": "x", "width": 12}
        )
        assert r.status_code == 400
    events: list[dict[str, Any]] = []
    read_events(f"{runner.url}/progress/{rid}", events)
    assert events[-1]["event"] == "error" and events[-1]["status"] == 400
    assert "multiple of 8" in events[-1]["msg"]


# ------------------------------------------------------------------------- load / unload
def test_load_unload_and_shared_weights(runner: RunnerProcess) -> None:
    with runner.client() as c:
        r = c.post("/models/unload", json={"pipeline": "image-to-image", "model_id": SDXL})
        assert r.status_code == 200, r.text
        files = {"image": ("a.png", png_bytes(), "image/png")}
        assert_error(
            c.post("/image-to-image", data={"prompt": "x"}, files=files),
            400,
            "no model is loaded for image-to-image",
        )
        # text-to-image of the same model still works: its weights were not dropped
        assert t2i(c, width=64, height=64, num_inference_steps=1).status_code == 200
        loaded = c.post("/models/load", json={"pipeline": "image-to-image", "model_id": SDXL})
        assert loaded.status_code == 200, loaded.text
        assert loaded.json()["load_seconds"] < 0.5  # components reused, nothing read from disk
        r = c.post("/image-to-image", data={"prompt": "x", "num_inference_steps": "2"}, files=files)
        assert r.status_code == 200
        assert_error(
            c.post("/models/unload", json={"pipeline": "image-to-image", "model_id": "a/b"}),
            404,
            "not loaded",
        )


def test_load_errors_name_the_problem(runner: RunnerProcess, tiny_models: Path) -> None:
    with runner.client() as c:
        r = c.post("/models/load", json={"pipeline": "text-to-image", "model_id": "acme/missing"})
        assert_error(
            r,
            400,
            "not on disk",
            str(tiny_models / "acme/missing"),
            str(tiny_models / "models--acme--missing"),
        )
        assert_error(
            c.post("/models/load", json={"pipeline": "text-to-imgae", "model_id": SDXL}),
            400,
            "unknown pipeline",
        )
        assert_error(
            c.post("/models/load", json={"pipeline": "text-to-image", "model_id": SVD}),
            400,
            "serves image-to-video",
        )
        assert c.get("/health").json() == {"status": "OK"}


def test_hugging_face_cache_layout(runner: RunnerProcess, tiny_models: Path) -> None:
    """``models--org--name/snapshots/<rev>`` with ``refs/main``, as huggingface_hub writes."""
    cache = tiny_models / "models--orchard-tiny--cached"
    snapshot = cache / "snapshots" / "0123abcd"
    if not snapshot.exists():
        import shutil

        shutil.copytree(tiny_models / SDXL, snapshot)
        (cache / "refs").mkdir(parents=True, exist_ok=True)
        (cache / "refs" / "main").write_text("0123abcd")
    with runner.client() as c:
        r = c.post(
            "/models/load", json={"pipeline": "text-to-image", "model_id": "orchard-tiny/cached"}
        )
        assert r.status_code == 200, r.text
        assert r.json()["path"] == str(snapshot)
        out = t2i(c, model_id="orchard-tiny/cached", width=64, height=64, num_inference_steps=1)
        assert out.status_code == 200
        assert (
            c.post(
                "/models/unload",
                json={"pipeline": "text-to-image", "model_id": "orchard-tiny/cached"},
            ).status_code
            == 200
        )


# ------------------------------------------------------------------------- faults
def test_gpu_out_of_memory_is_reported_and_runner_recovers(
    tiny_models: Path, tmp_path: Path
) -> None:
    """A CUDA OOM cannot happen on this CPU-only machine, so the runner is told to raise
    torch's real ``OutOfMemoryError`` in its next run (ORCHARD_RUNNER_INJECT_OOM); the error
    mapping, the memory release and the recovery are the real code."""
    r = start_runner(
        tiny_models,
        tmp_path,
        "--warm",
        f"text-to-image:{SDXL}",
        env={"ORCHARD_RUNNER_INJECT_OOM": "1"},
    )
    try:
        with r.client() as c:
            first = t2i(c, width=64, height=64, num_inference_steps=1)
            assert_error(first, 500, "GPU out of memory", "memory was released")
            again = t2i(c, width=64, height=64, num_inference_steps=1)
            assert again.status_code == 200
    finally:
        r.stop()


def test_warm_failure_is_reported_by_health(tiny_models: Path, tmp_path: Path) -> None:
    r = start_runner(tiny_models, tmp_path, "--warm", "text-to-image:acme/missing", wait_ok=False)
    try:
        with r.client() as c:
            assert c.get("/health").json() == {"status": "ERROR"}
            errors = c.get("/models").json()["warm_errors"]
            assert "acme/missing" in errors[0] and "not on disk" in errors[0]
    finally:
        r.stop()


def test_runner_stops_cleanly_on_sigterm(tiny_models: Path, tmp_path: Path) -> None:
    r = start_runner(tiny_models, tmp_path, *TINY_WARM[:2])
    code = r.stop()
    assert code in (0, -15), r.log_text()
