"""What the orchestrator adds: the same request sent to a runner directly and through
``orchard node`` (which forwards it to its own runner), tiny model on CPU, one run.

Prints median latency each way, the added latency, jobs per second at a concurrency, and the
ratios.

    .venv/bin/python bench/node_overhead.py [--runs 20] [--concurrency 4] [--size 128]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _common import ROOT, Runner, free_port, machine, median_ms, p95_ms, tiny_models

from core.runner.tiny import TINY_SDXL


def latency(url: str, body: dict[str, object], runs: int) -> list[float]:
    out = []
    with httpx.Client(timeout=120) as c:
        for i in range(runs + 2):
            t0 = time.perf_counter()
            c.post(f"{url}/text-to-image", json=body).raise_for_status()
            if i >= 2:
                out.append(time.perf_counter() - t0)
    return out


async def throughput(url: str, body: dict[str, object], jobs: int, concurrency: int) -> float:
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=300) as c:

        async def one() -> None:
            async with sem:
                (await c.post(f"{url}/text-to-image", json=body)).raise_for_status()

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(jobs)))
        return jobs / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    models = tiny_models()
    body = {
        "model_id": TINY_SDXL,
        "prompt": "a boat",
        "width": args.size,
        "height": args.size,
        "num_inference_steps": args.steps,
        "seed": 2,
    }
    jobs = args.runs * 2

    with Runner(models, f"text-to-image:{TINY_SDXL}") as r:
        direct = latency(r.url, body, args.runs)
        direct_tput = asyncio.run(throughput(r.url, body, jobs, args.concurrency))

    tmp = Path(tempfile.mkdtemp())
    (tmp / "aiModels.json").write_text(
        json.dumps(
            [
                {
                    "pipeline": "text-to-image",
                    "model_id": TINY_SDXL,
                    "warm": True,
                    "capacity": args.concurrency,
                }
            ]
        )
    )
    port = free_port()
    node = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app",
            "node",
            "--models",
            str(tmp / "aiModels.json"),
            "--gpus",
            "cpu",
            "--port",
            str(port),
            "--models-dir",
            str(models),
            "--data-dir",
            str(tmp / "d"),
            "--free",  # no prices in this config: the payment check is bench/payment_cost.py
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if node.poll() is not None:
                raise SystemExit(f"orchard node exited with {node.returncode}")
            try:
                if httpx.get(f"{url}/health", timeout=2).json()["status"] == "OK":
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        via = latency(url, body, args.runs)
        via_tput = asyncio.run(throughput(url, body, jobs, args.concurrency))
    finally:
        os.kill(node.pid, signal.SIGTERM)
        node.wait(30)

    d, v = median_ms(direct), median_ms(via)
    print(f"machine: {machine()}")
    print(
        f"request: tiny SDXL {args.size}x{args.size}, {args.steps} steps; {args.runs} runs; "
        f"throughput: {jobs} jobs at concurrency {args.concurrency}"
    )
    print(f"{'':24}{'median ms':>10}{'p95 ms':>10}{'jobs/s':>10}")
    print(f"{'runner directly':24}{d:10.1f}{p95_ms(direct):10.1f}{direct_tput:10.2f}")
    print(f"{'through the node':24}{v:10.1f}{p95_ms(via):10.1f}{via_tput:10.2f}")
    print(
        f"added latency {v - d:.1f} ms (ratio {v / d:.3f}); throughput ratio "
        f"{via_tput / direct_tput:.3f}"
    )


if __name__ == "__main__":
    main()
