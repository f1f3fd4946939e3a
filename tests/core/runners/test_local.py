"""Local runners: real ``orchard runner`` subprocesses on CPU with the tiny models.

Lifecycle (ready, jobs, load/unload, crash, restart with its models, stop), giving up into
``failed``, and no orphan process: after ``stop()`` and after the node is killed with -9.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from core.errors import Unauthorized
from core.runners import LocalRunner, RestartPolicy, RunnerClient, RunnerState, RunnerStatus
from core.runners.logsink import LogSink
from tests.conftest import ROOT

SDXL = "orchard-tiny/sdxl"
T2I = {"model_id": SDXL, "prompt": "a cat", "width": 64, "height": 64, "num_inference_steps": 2}
FAST = RestartPolicy(poll_interval_s=0.2, start_timeout_s=90.0, stop_timeout_s=10.0)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a reaper counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_backoff_doubles_and_caps() -> None:
    policy = RestartPolicy()
    assert [policy.backoff(n) for n in range(1, 10)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


def test_cuda_device_pins_one_gpu(tmp_path: Path) -> None:
    r = LocalRunner("g1", "cuda:1", tmp_path, warm=[("text-to-image", SDXL)], port=9999)
    assert r.gpu_index == 1 and r.device == "cuda:1"
    cmd = r.command()
    assert cmd[cmd.index("--device") + 1] == "cuda:0"
    assert cmd[cmd.index("--port") + 1] == "9999"
    assert cmd[cmd.index("--warm") + 1] == f"text-to-image:{SDXL}"
    assert r.token and r.token not in " ".join(cmd)  # the token travels in the environment
    env = r.child_env()
    assert env["CUDA_VISIBLE_DEVICES"] == "1"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["ORCHARD_RUNNER_TOKEN"] == r.token
    with pytest.raises(ValueError, match="cpu or cuda:N"):
        LocalRunner("bad", "gpu0", tmp_path)


def test_log_sink_rotates_and_keeps_a_tail(tmp_path: Path) -> None:
    sink = LogSink(tmp_path / "r.log", max_bytes=1000, backups=2, tail_lines=5)
    for i in range(300):
        sink.write(f"line {i:04d}")
    sink.close()
    assert sink.tail() == [f"line {i:04d}" for i in range(295, 300)]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["r.log", "r.log.1", "r.log.2"]
    assert all((tmp_path / f).stat().st_size <= 1000 for f in files)
    assert (tmp_path / "r.log").read_text().splitlines()[-1] == "line 0299"


async def _follow(client: RunnerClient, rid: str) -> list[dict[str, Any]]:
    return [event async for event in client.follow(rid)]


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_lifecycle_crash_restart_and_stop(tiny_models: Path, tmp_path: Path) -> None:
    log_path = tmp_path / "logs" / "cpu.log"
    runner = LocalRunner(
        "cpu0", "cpu", tiny_models, warm=[("text-to-image", SDXL)], log_path=log_path, policy=FAST
    )
    seen: list[RunnerStatus] = []
    unsubscribe = runner.on_state(seen.append)
    try:
        await runner.start()
        status = await runner.wait_for(RunnerState.READY, timeout=90)
        first_pid = status.pid
        assert first_pid is not None and alive(first_pid)
        assert status.url == runner.url and status.restarts == 0
        assert [s.state for s in seen][:1] == [RunnerState.STARTING]

        # A job through the client, its progress followed by request id.
        follower = asyncio.create_task(_follow(runner.client, "job-1"))
        response = await runner.client.generate("text-to-image", json=T2I, request_id="job-1")
        assert response.status_code == 200, response.text
        assert response.headers["X-Request-Id"] == "job-1"
        assert len(response.json()["images"]) == 1
        events = await asyncio.wait_for(follower, 30)
        assert events[-1]["event"] == "done"
        assert {"queued", "started", "step"} <= {e["event"] for e in events}

        # The runner wants the random token: a client without it is refused.
        async with RunnerClient(runner.url) as anonymous:
            with pytest.raises(Unauthorized, match="bearer token"):
                await anonymous.models()

        # load/unload go through the handle, which remembers what to re-warm.
        await runner.load("image-to-image", SDXL)
        assert runner.warm_models == [("text-to-image", SDXL), ("image-to-image", SDXL)]
        await runner.unload("image-to-image", SDXL)
        assert runner.warm_models == [("text-to-image", SDXL)]
        await runner.load("image-to-image", SDXL)

        # kill -9: noticed, restarted after the backoff, with both models warm again.
        # A progress stream open at that moment just ends.
        orphan_follower = asyncio.create_task(_follow(runner.client, "never-sent"))
        await asyncio.sleep(0.2)
        os.kill(first_pid, signal.SIGKILL)
        crashed = await runner.wait_for(RunnerState.RESTARTING, timeout=10)
        assert await asyncio.wait_for(orphan_follower, 10) == []
        assert "SIGKILL" in crashed.detail and "restarting in 0.5 s" in crashed.detail
        status = await runner.wait_for(RunnerState.READY, timeout=90)
        assert status.restarts == 1 and status.pid not in (None, first_pid)
        assert not alive(first_pid)
        loaded = {(m["pipeline"], m["model_id"]) for m in (await runner.client.models())["models"]}
        assert loaded == {("text-to-image", SDXL), ("image-to-image", SDXL)}
        response = await runner.client.generate("text-to-image", json=T2I)
        assert response.status_code == 200, response.text

        assert any(line.startswith("--- orchard: started") for line in runner.log_tail())
        assert "--- orchard: started" in log_path.read_text()
        second_pid = status.pid
        assert second_pid is not None
    finally:
        await runner.aclose()
        unsubscribe()
    assert runner.status.state == RunnerState.STOPPED and runner.status.pid is None
    assert not alive(second_pid)
    assert not Path(f"/proc/{second_pid}").exists()


async def test_gives_up_after_quick_crashes(tmp_path: Path) -> None:
    policy = RestartPolicy(poll_interval_s=0.05, backoff_initial_s=0.01, max_quick_crashes=3)
    runner = LocalRunner("broken", "cpu", tmp_path, extra_args=["--no-such-flag"], policy=policy)
    states: list[RunnerState] = []
    runner.on_state(lambda s: states.append(s.state))
    try:
        await runner.start()
        status = await runner.wait_for(RunnerState.FAILED, timeout=60)
    finally:
        await runner.aclose()
    assert states.count(RunnerState.RESTARTING) == 2
    assert "crashed 3 times in a row" in status.detail
    assert "exit code 2" in status.detail
    assert "unrecognized arguments: --no-such-flag" in status.detail  # the log tail
    assert status.restarts == 2


async def test_stop_while_starting_leaves_no_process(tiny_models: Path) -> None:
    runner = LocalRunner("early", "cpu", tiny_models, warm=[("text-to-image", SDXL)])
    await runner.start()
    await runner.wait_for(RunnerState.STARTING, timeout=5)
    for _ in range(100):
        if runner.status.pid is not None:
            break
        await asyncio.sleep(0.01)
    pid = runner.status.pid
    assert pid is not None
    await runner.aclose()
    assert not alive(pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_runner_dies_with_a_node_killed_hard(tiny_models: Path, tmp_path: Path) -> None:
    """The node is killed with -9 (no clean-up runs); the kernel ends its runner."""
    node = textwrap.dedent(
        f"""
        import asyncio
        from pathlib import Path
        from core.runners import LocalRunner

        async def main():
            runner = LocalRunner("orphan", "cpu", Path({str(tiny_models)!r}))
            await runner.start()
            while runner.status.pid is None:
                await asyncio.sleep(0.01)
            print(runner.status.pid, flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", node], stdout=subprocess.PIPE, cwd=ROOT, text=True
    )
    child = None
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line.strip().isdigit(), f"the node printed {line!r}"
        child = int(line)
        assert alive(child)
        parent.kill()
        parent.wait(10)
        assert wait_dead(child, 10), f"runner {child} outlived its node"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        if parent.stdout is not None:
            parent.stdout.close()
        if child is not None and alive(child):
            os.killpg(child, signal.SIGKILL)


async def test_a_model_that_will_not_warm_is_unhealthy_with_the_reason(
    tiny_models: Path,
) -> None:
    runner = LocalRunner(
        "cold", "cpu", tiny_models, warm=[("text-to-image", "no-org/no-model")], policy=FAST
    )
    try:
        await runner.start()
        status = await runner.wait_for(RunnerState.UNHEALTHY, timeout=90)
    finally:
        await runner.aclose()
    assert "reports ERROR" in status.detail
    assert "text-to-image:no-org/no-model" in status.detail and status.restarts == 0
