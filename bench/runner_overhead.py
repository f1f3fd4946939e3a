"""What the runner's HTTP API adds to a generation, against a direct in-process call.

Same tiny model, same request, same device (CPU), one run. Prints medians of:
the direct pipeline call, PNG encoding of its output, and the full HTTP round trip through
``orchard runner``; the overhead is (HTTP - direct), and the part left after PNG encoding.

    .venv/bin/python bench/runner_overhead.py [--runs 30] [--size 256] [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import time

import httpx
from _common import Runner, machine, median_ms, p95_ms, tiny_models

from core.pipelines.text_to_image import TextToImageParams
from core.runner.engine import Engine
from core.runner.media import png_data_url
from core.runner.tiny import TINY_SDXL


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    models = tiny_models()
    body = {
        "model_id": TINY_SDXL,
        "prompt": "a lighthouse at dusk",
        "width": args.size,
        "height": args.size,
        "num_inference_steps": args.steps,
        "seed": 1,
    }

    engine = Engine("cpu", models)
    model = engine.load("text-to-image", TINY_SDXL)
    params = TextToImageParams(**body)
    direct, png = [], []
    for i in range(args.runs + 2):
        t0 = time.perf_counter()
        result = engine.text_to_image(model, params, 1)
        t1 = time.perf_counter()
        png_data_url(result.images[0])
        t2 = time.perf_counter()
        if i >= 2:  # warm-up
            direct.append(t1 - t0)
            png.append(t2 - t1)
    engine.shutdown()

    with Runner(models, f"text-to-image:{TINY_SDXL}") as r, httpx.Client(timeout=120) as c:
        http = []
        for i in range(args.runs + 2):
            t0 = time.perf_counter()
            resp = c.post(f"{r.url}/text-to-image", json=body)
            resp.raise_for_status()
            if i >= 2:
                http.append(time.perf_counter() - t0)

    d, p, h = median_ms(direct), median_ms(png), median_ms(http)
    print(f"machine: {machine()}")
    print(f"request: tiny SDXL, {args.size}x{args.size}, {args.steps} steps, {args.runs} runs")
    print(f"{'':28}{'median ms':>10}{'p95 ms':>10}")
    print(f"{'direct pipeline call':28}{d:10.1f}{p95_ms(direct):10.1f}")
    print(f"{'PNG encode (level 1)':28}{p:10.1f}{p95_ms(png):10.1f}")
    print(f"{'through runner HTTP':28}{h:10.1f}{p95_ms(http):10.1f}")
    print(
        f"overhead: {h - d:.1f} ms, of which PNG {p:.1f} ms; HTTP and queueing {h - d - p:.1f} ms"
        f" (target < 10 ms); ratio HTTP/direct {h / d:.3f}"
    )
    print(
        json.dumps(
            {
                "direct_ms": d,
                "png_ms": p,
                "http_ms": h,
                "overhead_ms": h - d,
                "overhead_without_png_ms": h - d - p,
            }
        )
    )


if __name__ == "__main__":
    main()
