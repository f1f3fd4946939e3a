"""``orchard node`` as a real process: two CPU runners, several models, over loopback HTTP.

Warm models answer without a load, a cold model loads on first use, jobs past a model's
capacity get 503 at once, a runner killed with -9 mid-job comes back with its models, and
nothing is left running after shutdown.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, free_port
from tests.e2e.nodes import pid_alive, png, small

SDXL = "orchard-tiny/sdxl"
SDXL_B = "orchard-tiny/sdxl-b"  # a second copy, configured cold
SVD = "orchard-tiny/svd"

CONFIG = [
    {
        "pipeline": "text-to-image",
        "model_id": SDXL,
        "warm": True,
        "capacity": 1,
        "price_per_unit": 4768371,
    },
    {"pipeline": "image-to-image", "model_id": SDXL, "warm": True, "capacity": 1},
    {
        "pipeline": "image-to-video",
        "model_id": SVD,
        "warm": True,
        "capacity": 1,
        "price_per_unit": 3390842,
        "pixels_per_unit": 1,
    },
    {"pipeline": "text-to-image", "model_id": SDXL_B, "capacity": 2},
]


@dataclass
class NodeProcess:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    data_dir: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def runner_pids(self) -> list[int]:
        return [h["pid"] for h in httpx.get(f"{self.url}/info").json()["hardware"] if h["pid"]]


def start_node(
    models_dir: Path,
    tmp: Path,
    config: list[dict[str, Any]],
    *args: str,
    wait: bool = True,
    free: bool = True,
    env: dict[str, str] | None = None,
) -> NodeProcess:
    """``orchard node`` on the tiny models; in free mode unless ``free=False``."""
    if free:
        args = ("--free", *args)
    cfg = tmp / "aiModels.json"
    cfg.write_text(json.dumps(config))
    port = free_port()
    log = tmp / "node.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app",
                "node",
                "--models",
                str(cfg),
                "--gpus",
                "cpu:2",
                "--port",
                str(port),
                "--models-dir",
                str(models_dir),
                "--data-dir",
                str(tmp / "data"),
                *args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )
    node = NodeProcess(f"http://127.0.0.1:{port}", proc, log, tmp / "data")
    if not wait:
        return node
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"node exited with {proc.returncode}:\n{node.log_text()}")
        try:
            if httpx.get(f"{node.url}/health", timeout=2).json()["status"] == "OK":
                return node
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"node did not start:\n{node.log_text()}")


def stop_node(node: NodeProcess) -> None:
    pids = node.runner_pids() if node.proc.poll() is None else []
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(30) == 0, node.log_text()
    for pid in pids:
        assert not pid_alive(pid), f"runner {pid} outlived the node"


@pytest.fixture(scope="module")
def node_models(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = tmp_path_factory.mktemp("node-models")
    for model_id in (SDXL, SVD):
        (models / model_id).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(tiny_models / model_id, models / model_id)
    shutil.copytree(tiny_models / SDXL, models / SDXL_B)
    return models


@pytest.fixture(scope="module")
def node(node_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    n = start_node(node_models, tmp_path_factory.mktemp("node"), CONFIG)
    yield n
    stop_node(n)


def test_info_advertises_models_prices_and_hardware(node: NodeProcess) -> None:
    info = httpx.get(f"{node.url}/info").json()
    per_cap = info["capabilities"]["per_capability"]
    assert set(per_cap) == {"27", "28", "29"}
    assert per_cap["27"]["name"] == "text-to-image"
    t2i = per_cap["27"]["models"]
    assert t2i[SDXL] | {"runner_version": "x", "gpus": []} == {
        "warm": True,
        "capacity": 1,
        "capacity_in_use": 0,
        "runner_version": "x",
        "loaded": True,
        "gpus": [],
        "optimization_flags": {},
        "optimizations": [],
    }
    assert len(t2i[SDXL]["gpus"]) == 1
    assert t2i[SDXL_B]["warm"] is False and t2i[SDXL_B]["capacity"] == 2
    assert per_cap["29"]["models"][SVD]["loaded"] is True
    prices = {(p["capability"], p["constraint"]): p for p in info["capabilities_prices"]}
    # free mode (explicit) advertises every model at 0; priced nodes: tests/e2e/test_payments.py
    assert prices[(27, SDXL)]["price_per_unit"] == "0"
    assert prices[(29, SVD)]["price_per_unit"] == "0" and len(prices) == 4
    assert info["payment"] == {
        "free": True,
        "recipient": None,
        "ledger": "off-chain",
        "ticket_params_url": None,
    }
    assert [h["gpu"] for h in info["hardware"]] == [-1, -2]
    assert all(h["runner_state"] == "ready" for h in info["hardware"])


def test_warm_model_answers_and_the_job_is_recorded(node: NodeProcess) -> None:
    with node.client() as c:
        r = c.post("/text-to-image", json=small(seed=4))
        assert r.status_code == 200, r.text
        assert r.json()["images"][0]["seed"] == 4
        job = c.get(f"/jobs/{r.headers['X-Request-Id']}").json()
    assert job["state"] == "done" and job["model_id"] == SDXL
    assert job["pixels"] == 64 * 64
    assert len(job["outputs"]) == 1 and Path(job["outputs"][0]).read_bytes()[:4] == b"\x89PNG"


def test_image_to_image_and_video_through_the_node(node: NodeProcess) -> None:
    with node.client() as c:
        r = c.post(
            "/image-to-image",
            data={"prompt": "x", "num_inference_steps": "2"},
            files={"image": ("a.png", png((72, 64)), "image/png")},
        )
        assert r.status_code == 200, r.text
        v = c.post(
            "/image-to-video",
            data={"width": "64", "height": "64", "num_inference_steps": "2"},
            files={"image": ("a.png", png(), "image/png")},
        )
        assert v.status_code == 200, v.text
        assert len(v.json()["frames"][0]) == 14
        job = c.get(f"/jobs/{v.headers['X-Request-Id']}").json()
    assert job["outputs"][0].endswith(".mp4") and job["pixels"] == 64 * 64 * 25


def test_cold_model_loads_on_first_use(node: NodeProcess) -> None:
    with node.client() as c:
        assert (
            c.get("/info").json()["capabilities"]["per_capability"]["27"]["models"][SDXL_B][
                "loaded"
            ]
            is False
        )
        r = c.post("/text-to-image", json=small(SDXL_B))
        assert r.status_code == 200, r.text
        assert (
            c.get("/info").json()["capabilities"]["per_capability"]["27"]["models"][SDXL_B][
                "loaded"
            ]
            is True
        )


def test_past_capacity_is_503_at_once(node: NodeProcess) -> None:
    async def main() -> list[tuple[int, float, str]]:
        async with httpx.AsyncClient(base_url=node.url, timeout=120) as c:

            async def one(i: int) -> tuple[int, float, str]:
                t0 = time.perf_counter()
                r = await c.post(
                    "/text-to-image", json=small(steps=25, width=128, height=128, seed=i)
                )
                return r.status_code, time.perf_counter() - t0, r.text

            return list(await asyncio.gather(*(one(i) for i in range(4))))

    results = asyncio.run(main())
    codes = sorted(code for code, _, _ in results)
    assert codes == [200, 503, 503, 503], results
    for code, elapsed, text in results:
        if code == 503:
            assert elapsed < 2.0 and "insufficient capacity" in text
    with node.client() as c:  # nothing is stuck afterwards
        assert c.post("/text-to-image", json=small()).status_code == 200


def test_bad_requests_are_refused_by_the_node(node: NodeProcess) -> None:
    with node.client() as c:
        r = c.post("/text-to-image", json=small(width=100))
        assert r.status_code == 400 and "multiple of 8" in r.json()["detail"]["msg"]
        r = c.post("/text-to-image", json=small("acme/none"))
        assert r.status_code == 400 and "not offered" in r.json()["detail"]["msg"]
        r = c.post("/image-to-image", data={"prompt": "x"}, files={"image": ("a", b"nope")})
        assert r.status_code == 400 and "not an image" in r.json()["detail"]["msg"]
        assert c.post("/text-to-image", json={"width": 64}).status_code == 422


def test_metrics(node: NodeProcess) -> None:
    text = httpx.get(f"{node.url}/metrics").text
    assert 'orchard_jobs_total{outcome="done"}' in text
    assert 'orchard_runner_up{runner="runner-cpu0",gpu="-1"} 1' in text
    assert f'orchard_capacity_in_use{{pipeline="text-to-image",model="{SDXL}"}} 0' in text


def test_runner_killed_mid_job_recovers(node: NodeProcess) -> None:
    info = httpx.get(f"{node.url}/info").json()
    svd_gpu = info["capabilities"]["per_capability"]["29"]["models"][SVD]["gpus"][0]
    victim = next(h["pid"] for h in info["hardware"] if h["gpu"] == svd_gpu)

    async def main() -> httpx.Response:
        async with httpx.AsyncClient(base_url=node.url, timeout=180) as c:
            job = asyncio.create_task(
                c.post(
                    "/image-to-video",
                    data={"width": "128", "height": "128", "num_inference_steps": "20"},
                    files={"image": ("a.png", png(), "image/png")},
                )
            )
            await asyncio.sleep(1.5)
            os.kill(victim, signal.SIGKILL)
            return await job

    r = asyncio.run(main())
    # Either the job was retried on the restarted runner, or it failed with a clear message.
    if r.status_code != 200:
        assert r.status_code == 503, r.text
        assert "stopped while running this job" in r.json()["detail"]["msg"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        hw = httpx.get(f"{node.url}/info").json()["hardware"]
        if all(h["runner_state"] == "ready" for h in hw) and victim not in [h["pid"] for h in hw]:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"runner did not come back:\n{node.log_text()}")
    models = httpx.get(f"{node.url}/info").json()["capabilities"]["per_capability"]
    assert models["29"]["models"][SVD]["loaded"] is True  # re-warmed
    with node.client() as c:
        v = c.post(
            "/image-to-video",
            data={"width": "64", "height": "64", "num_inference_steps": "2"},
            files={"image": ("a.png", png(), "image/png")},
        )
        assert v.status_code == 200, v.text


def test_impossible_plan_is_an_error_before_anything_loads(
    node_models: Path, tmp_path: Path
) -> None:
    n = start_node(node_models, tmp_path, CONFIG, "--reserve", "cpu=100000", wait=False)
    try:
        assert n.proc.wait(60) == 1
    finally:
        n.proc.kill()
    log = n.log_text()
    assert "cannot place warm model" in log and "GiB" in log
    assert "orchard-tiny" in log


def test_bad_config_file_is_refused(node_models: Path, tmp_path: Path) -> None:
    n = start_node(
        node_models, tmp_path, [{"pipeline": "text-to-imgae", "model_id": "a/b"}], wait=False
    )
    try:
        assert n.proc.wait(30) == 2
    finally:
        n.proc.kill()
    assert 'unknown pipeline "text-to-imgae"' in n.log_text()


def test_out_of_memory_evicts_an_idle_cold_model_and_retries(
    node_models: Path, tmp_path: Path
) -> None:
    """A CUDA out-of-memory error cannot happen without a GPU: the runners are told to raise
    torch's real OutOfMemoryError in their next two runs (ORCHARD_RUNNER_INJECT_OOM, which the
    node's runners inherit). The node's handling is the real code: the first job (the cold
    model, nothing else to evict) fails with the message; the second (the warm model) evicts
    the idle cold model, retries once and succeeds."""
    config = [
        {"pipeline": "text-to-image", "model_id": SDXL, "warm": True},
        {"pipeline": "text-to-image", "model_id": SDXL_B},
    ]
    n = start_node(
        node_models, tmp_path, config, "--gpus", "cpu", env={"ORCHARD_RUNNER_INJECT_OOM": "2"}
    )
    try:
        with n.client() as c:
            first = c.post("/text-to-image", json=small(SDXL_B))
            assert first.status_code == 500 and "GPU out of memory" in first.text
            models = c.get("/info").json()["capabilities"]["per_capability"]["27"]["models"]
            assert models[SDXL_B]["loaded"] is True
            second = c.post("/text-to-image", json=small(SDXL))
            assert second.status_code == 200, second.text
            models = c.get("/info").json()["capabilities"]["per_capability"]["27"]["models"]
            assert models[SDXL_B]["loaded"] is False  # evicted to make room
            assert c.post("/text-to-image", json=small(SDXL_B)).status_code == 200
    finally:
        stop_node(n)
