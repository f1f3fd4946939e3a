"""What step previews add to a generation, through a real runner.

The same request is sent alternately with progress followed (X-Request-Id plus an SSE reader,
so previews are made) and without (no previews), and the medians are compared.

    .venv/bin/python bench/preview_cost.py [--runs 10] [--size 512] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid

import httpx
from _common import Runner, machine, median_ms, tiny_models

from core.runner.tiny import TINY_SDXL


def follow(url: str, counts: list[int]) -> None:
    previews = 0
    with httpx.stream("GET", url, timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                previews += len(event.get("previews", []))
                if event["event"] in ("done", "error"):
                    break
    counts.append(previews)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    models = tiny_models()
    body = {
        "model_id": TINY_SDXL,
        "prompt": "a lighthouse",
        "width": args.size,
        "height": args.size,
        "num_inference_steps": args.steps,
        "seed": 3,
    }
    plain, followed, unread, counts = [], [], [], []
    with Runner(models, f"text-to-image:{TINY_SDXL}") as r, httpx.Client(timeout=300) as c:
        c.post(f"{r.url}/text-to-image", json=body).raise_for_status()  # warm-up
        for _ in range(args.runs):
            t0 = time.perf_counter()
            c.post(f"{r.url}/text-to-image", json=body).raise_for_status()
            plain.append(time.perf_counter() - t0)
            rid = uuid.uuid4().hex
            reader = threading.Thread(target=follow, args=(f"{r.url}/progress/{rid}", counts))
            reader.start()
            time.sleep(0.05)
            t0 = time.perf_counter()
            c.post(f"{r.url}/text-to-image", json=body, headers={"X-Request-Id": rid})
            followed.append(time.perf_counter() - t0)
            reader.join()
            t0 = time.perf_counter()  # previews made and published, nobody reading
            c.post(f"{r.url}/text-to-image", json=body, headers={"X-Request-Id": uuid.uuid4().hex})
            unread.append(time.perf_counter() - t0)
    a, b, u = median_ms(plain), median_ms(followed), median_ms(unread)
    print(f"machine: {machine()}")
    print(f"request: tiny SDXL {args.size}x{args.size}, {args.steps} steps, {args.runs} runs each")
    print(f"without previews: {a:.1f} ms median")
    print(f"with previews:    {b:.1f} ms median ({sum(counts) / len(counts):.1f} previews/job)")
    print(f"previews made, stream not read: {u:.1f} ms median")
    print(
        f"previews add {100 * (b - a) / a:+.2f}% with a reader on this machine, "
        f"{100 * (u - a) / a:+.2f}% on the runner side alone (target < 2%)"
    )


if __name__ == "__main__":
    main()
