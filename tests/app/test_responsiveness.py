"""The window stays responsive while jobs run and telemetry flows: the largest gap between
ticks of a 20 ms QTimer, on the Qt thread that also runs the node's asyncio loop.

Target: under 50 ms on a development machine. The assertions are generous so that a loaded
CI box does not fail them: the Qt thread's own CPU time within one gap under 250 ms (work the
app did without yielding), the wall-clock gap under a second; the figures are printed.
"""

from __future__ import annotations

import io
import statistics
import time
from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import QTimer

from core.runners.local import free_port
from tests.app.conftest import TINY_CONFIG, Env
from widgets.generate_form import GenerationRequest

TICK_MS = 20
JOBS = 8  # alternately a 256x256 image (8 steps) and a 128x128 video (4 steps)
BUDGET_S = 20.0  # on a busy machine, fewer jobs (two at least)
BOUND_S = 0.25


def test_timer_gaps_while_jobs_run(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env.write_config(TINY_CONFIG)
    image = tmp_path / "in.png"
    buf = io.BytesIO()
    Image.new("RGB", (128, 128), (200, 120, 40)).save(buf, "PNG")
    image.write_bytes(buf.getvalue())
    t2i = GenerationRequest(
        "text-to-image",
        "orchard-tiny/sdxl",
        {
            "model_id": "orchard-tiny/sdxl",
            "prompt": "x",
            "width": 256,
            "height": 256,
            "num_inference_steps": 8,
        },
    )
    i2v = GenerationRequest(
        "image-to-video",
        "orchard-tiny/svd",
        {"model_id": "orchard-tiny/svd", "width": 128, "height": 128, "num_inference_steps": 4},
        str(image),
    )
    gaps: list[float] = []
    busy: list[float] = []  # the Qt thread's own CPU time in each gap
    last = [time.perf_counter(), time.thread_time()]
    done = [0]

    def tick() -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        gaps.append(now - last[0])
        busy.append(cpu - last[1])
        last[0], last[1] = now, cpu

    pages = ["jobs", "gpus", "generate", "models", "pricing", "logs", "node"]

    async def body() -> float:
        window = await env.window(telemetry_interval=0.1)  # ten telemetry rounds a second
        assert await window.session.start_node("127.0.0.1", free_port())
        timer = QTimer()
        timer.setInterval(TICK_MS)
        timer.timeout.connect(tick)
        last[0], last[1] = time.perf_counter(), time.thread_time()
        timer.start()
        started = time.monotonic()
        while done[0] < JOBS and (done[0] < 2 or time.monotonic() - started < BUDGET_S):
            n = done[0]
            window.show_page(pages[n % len(pages)])  # every page shows and repaints in turn
            await window.generator.generate(t2i if n % 2 == 0 else i2v)
            done[0] += 1
        seconds = time.monotonic() - started
        timer.stop()
        await env.close(window)
        return seconds

    seconds = env.run(body(), timeout=300)
    ticks = sorted(gaps)
    worst = ticks[-1]
    p99 = ticks[int(len(ticks) * 0.99) - 1]
    with capsys.disabled():
        print(
            f"\nGUI responsiveness: {done[0]} jobs in {seconds:.1f} s, {len(gaps)} ticks of "
            f"{TICK_MS} ms: largest gap {worst * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
            f"median {statistics.median(gaps) * 1000:.1f} ms; the Qt thread's own work in one "
            f"gap at most {max(busy) * 1000:.1f} ms"
        )
    # Wall-clock gaps include the time the OS gave the CPU to others (a loaded 2-core box);
    # the Qt thread's CPU time in a gap is what the app itself blocked it for.
    assert max(busy) < BOUND_S, f"the Qt thread worked {max(busy) * 1000:.0f} ms without a break"
    assert worst < 4 * BOUND_S, f"the Qt thread stalled for {worst * 1000:.0f} ms"
