"""External runners: a real runner subprocess with a token, watched but never restarted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.errors import BadRequest, ModelNotLoaded, RunnerUnavailable
from core.runners import ExternalRunner, RestartPolicy, RunnerClient, RunnerState, error_message
from tests.conftest import RunnerProcess, free_port, start_runner

SDXL = "orchard-tiny/sdxl"
TOKEN = "external-s3cret"
FAST = RestartPolicy(poll_interval_s=0.1)


@pytest.fixture(scope="module")
def remote(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunnerProcess]:
    r = start_runner(
        tiny_models,
        tmp_path_factory.mktemp("external"),
        "--token",
        TOKEN,
        "--warm",
        f"text-to-image:{SDXL}",
    )
    yield r
    assert r.stop() in (0, -15), r.log_text()


async def test_ready_with_the_right_token(remote: RunnerProcess) -> None:
    runner = ExternalRunner("ext", remote.url, TOKEN, capacity=2, policy=FAST)
    assert runner.capacity == 2 and runner.device == "external" and runner.gpu_index is None
    try:
        await runner.start()
        status = await runner.wait_for(RunnerState.READY, timeout=10)
        assert status.url == remote.url and status.pid is None and status.container_id is None
        body = {"model_id": SDXL, "prompt": "x", "width": 64, "height": 64}
        response = await runner.client.generate(
            "text-to-image", json=body | {"num_inference_steps": 1}
        )
        assert response.status_code == 200, response.text
        # The runner's own error message comes through.
        bad = await runner.client.generate("text-to-image", json=body | {"model_id": "no/such"})
        assert bad.status_code == 400
        assert "'no/such' is not loaded" in error_message(bad)
        with pytest.raises(ModelNotLoaded, match="not loaded"):
            await runner.unload("image-to-image", "no/such")
        with pytest.raises(BadRequest) as info:
            await runner.load("no-such-pipeline", SDXL)
        assert info.value.status == 400
        await runner.stop()
        assert runner.status.state == RunnerState.STOPPED
        assert remote.proc.poll() is None  # stopping the handle leaves someone else's runner be
        with pytest.raises(RunnerUnavailable, match="was stopped"):
            await runner.client.health()
        await runner.start()  # a stopped handle starts again
        assert await runner.client.health() == "OK"
        await runner.wait_for(RunnerState.READY, timeout=10)
    finally:
        await runner.aclose()


async def test_wrong_token_is_unhealthy_with_a_clear_reason(remote: RunnerProcess) -> None:
    runner = ExternalRunner("ext-bad", remote.url, "not-the-token", policy=FAST)
    try:
        await runner.start()
        status = await runner.wait_for(RunnerState.UNHEALTHY, timeout=10)
    finally:
        await runner.aclose()
    assert "refused a token" in status.detail
    assert "invalid bearer token" in status.detail
    assert '"token"' in status.detail and remote.url in status.detail


async def test_unreachable_url_is_unhealthy_and_never_restarted() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    runner = ExternalRunner("ext-gone", url, TOKEN, policy=FAST)
    seen: list[RunnerState] = []
    runner.on_state(lambda s: seen.append(s.state))
    try:
        await runner.start()
        status = await runner.wait_for(RunnerState.UNHEALTHY, timeout=10)
        assert url in status.detail and "unreachable" in status.detail
        with pytest.raises(RunnerUnavailable, match=url):
            await runner.client.generate("text-to-image", json={"prompt": "x"})
    finally:
        await runner.aclose()
    assert RunnerState.RESTARTING not in seen and runner.status.restarts == 0


async def test_follow_ends_quietly_when_there_is_no_runner() -> None:
    async with RunnerClient(f"http://127.0.0.1:{free_port()}") as client:
        assert [e async for e in client.follow("nobody")] == []


def test_error_message_shapes() -> None:
    def answer(status: int, **kwargs: object) -> httpx.Response:
        return httpx.Response(status, **kwargs)  # type: ignore[arg-type]

    assert error_message(answer(400, json={"detail": {"msg": "too big"}})) == "too big"
    assert error_message(answer(401, json={"detail": "nope"})) == "nope"
    validation = {"detail": [{"loc": ["body", "prompt"], "msg": "Field required"}]}
    assert error_message(answer(422, json=validation)) == "body.prompt: Field required"
    assert error_message(answer(502, text="Bad Gateway")) == "Bad Gateway"
    assert error_message(answer(500)) == "HTTP 500"
