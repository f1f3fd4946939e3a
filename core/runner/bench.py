"""``orchard bench``: load time, latency, throughput and memory of one model, directly and
through the runner's HTTP API or the whole node, in the same run.

The direct path runs in this process (it imports torch: never call this from the GUI process;
the app runs ``orchard bench`` as a subprocess).
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

import core
from core import optimizations as optim
from core.pipelines import Capability, parse_capability

PATHS = ("direct", "runner", "node")


@dataclass
class BenchConfig:
    pipeline: str
    model: str
    models_dir: Path
    device: str = "cpu"
    runs: int = 5
    steps: int | None = None
    width: int | None = None
    height: int | None = None
    concurrency: list[int] = field(default_factory=lambda: [1])
    through: list[str] = field(default_factory=lambda: ["direct"])
    seed: int = 1
    frames: int | None = None  # image-to-video only; None: the model's own count
    #: optimization flags of the optimised variant (empty: the plain path only)
    flags: dict[str, Any] = field(default_factory=dict)
    #: also run the plain path, and compare speed and outputs
    compare: bool = False
    #: where measurements are recorded for the placement planner (None: not recorded)
    data_dir: Path | None = None

    def variants(self) -> list[tuple[str, dict[str, Any]]]:
        if not self.flags:
            return [("plain", {})]
        optimized = ("optimized", dict(self.flags))
        return [("plain", {}), optimized] if self.compare else [optimized]


@dataclass
class PathResult:
    path: str
    cold_load_s: float
    first_request_s: float
    median_s: float
    p95_s: float
    throughput: dict[int, float]  # concurrency -> jobs per second
    memory: dict[str, int | None] = field(default_factory=dict)
    variant: str = "plain"
    flags: dict[str, Any] = field(default_factory=dict)
    #: part of the cold load spent warming up (compiling), direct path only
    warmup_s: float | None = None
    #: what the runner did with each flag, direct path only
    optimizations: list[str] = field(default_factory=list)


def _p95(xs: list[float]) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _defaults(cfg: BenchConfig) -> tuple[int, int, int]:
    cap = parse_capability(cfg.pipeline)
    if cap == Capability.IMAGE_TO_VIDEO:
        return cfg.width or 1024, cfg.height or 576, cfg.steps or 25
    return cfg.width or 512, cfg.height or 512, cfg.steps or 4


def _input_png(width: int, height: int) -> bytes:
    from PIL import Image

    img = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _request(cfg: BenchConfig) -> tuple[dict[str, Any] | None, dict[str, str] | None, bytes | None]:
    """(json, form, image) for the HTTP paths."""
    width, height, steps = _defaults(cfg)
    cap = parse_capability(cfg.pipeline)
    common = {"model_id": cfg.model, "num_inference_steps": steps, "seed": cfg.seed}
    if cap == Capability.TEXT_TO_IMAGE:
        return (
            {**common, "prompt": "a lighthouse at dusk", "width": width, "height": height},
            None,
            None,
        )
    form = {k: str(v) for k, v in common.items()}
    if cap == Capability.IMAGE_TO_IMAGE:
        form |= {"prompt": "a lighthouse at dusk", "strength": "1.0"}
    else:
        form |= {"width": str(width), "height": str(height)}
    return None, form, _input_png(width, height)


# ---------------------------------------------------------------------------- direct
def bench_direct(
    cfg: BenchConfig, variant: str = "plain", flags: dict[str, Any] | None = None
) -> tuple[PathResult, Any]:
    """The direct path, and the first request's output (pixels) for the equivalence check."""
    import numpy as np
    import torch

    from core.pipelines.image_to_image import ImageToImageParams
    from core.pipelines.image_to_video import ImageToVideoParams
    from core.pipelines.text_to_image import TextToImageParams
    from core.runner.engine import Engine

    cap = parse_capability(cfg.pipeline)
    # NVML before this process touched the GPU: the delta then counts its CUDA context too
    nvml_before = _NVML_BASELINE.setdefault(cfg.device, _nvml_used(cfg.device))
    engine = Engine(cfg.device, cfg.models_dir)
    if cfg.model not in _PRELOADED:
        # One untimed load first, so the first variant does not pay alone for importing
        # diffusers' and transformers' model classes or for reading the files from disk:
        # every variant then loads the same way, from page cache.
        engine.load(cap, cfg.model)
        engine.unload(cap, cfg.model)
        _PRELOADED.add(cfg.model)
    t0 = time.perf_counter()
    model = engine.load(cap, cfg.model, flags)
    cold = time.perf_counter() - t0
    body, form, png = _request(cfg)
    image = None
    if png is not None:
        from PIL import Image

        image = Image.open(io.BytesIO(png)).convert("RGB")

    def once() -> list[Any]:
        if cap == Capability.TEXT_TO_IMAGE:
            return engine.text_to_image(model, TextToImageParams(**(body or {})), cfg.seed).images
        if cap == Capability.IMAGE_TO_IMAGE:
            params: Any = ImageToImageParams.model_validate(form or {})
            return engine.image_to_image(model, params, image, cfg.seed).images
        video: Any = ImageToVideoParams.model_validate(form or {})
        return engine.image_to_video(model, video, image, cfg.seed, None, cfg.frames).frames

    t0 = time.perf_counter()
    output = np.stack([np.asarray(img) for img in once()])
    first = time.perf_counter() - t0
    times = []
    for _ in range(cfg.runs):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    nvml_after = _nvml_used(cfg.device)
    delta = None if nvml_after is None or nvml_before is None else nvml_after - nvml_before
    memory = {
        "torch_peak_allocated": model.peak_allocated_last_run,
        "torch_peak_reserved": model.peak_reserved_last_run,
        "nvml_used": nvml_after,
        "nvml_delta": delta,
        "weights": model.weights_bytes,
    }
    engine.shutdown()
    engine.unload(cap, cfg.model)  # frees the device for the next path
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    # one worker per device: concurrency does not raise throughput on the direct path
    tput = {c: 1.0 / median for c in cfg.concurrency}
    result = PathResult(
        "direct",
        cold,
        first,
        median,
        _p95(times),
        tput,
        memory,
        variant,
        dict(flags or {}),
        warmup_s=model.warmup_seconds,
        optimizations=list(model.optimization_notes),
    )
    return result, output


_NVML_BASELINE: dict[str, int | None] = {}
_PRELOADED: set[str] = set()


def _nvml_used(device: str) -> int | None:
    if not device.startswith("cuda"):
        return None
    from core.gpus import Nvml

    try:
        with Nvml() as nvml:
            return nvml.sample(int(device.partition(":")[2] or 0)).memory_used
    except Exception:
        return None


# ---------------------------------------------------------------------------- over HTTP
async def _http_path(
    name: str, url: str, cfg: BenchConfig, cold: float, variant: str, flags: dict[str, Any]
) -> PathResult:
    body, form, png = _request(cfg)
    route = f"{url}/{cfg.pipeline}"

    async def once(c: httpx.AsyncClient) -> float:
        t0 = time.perf_counter()
        if body is not None:
            r = await c.post(route, json=body)
        else:
            r = await c.post(route, data=form, files={"image": ("in.png", png or b"", "image/png")})
        if r.status_code != 200:
            raise RuntimeError(f"{name}: HTTP {r.status_code}: {r.text[:300]}")
        return time.perf_counter() - t0

    async with httpx.AsyncClient(timeout=3600) as c:
        first = await once(c)
        times = [await once(c) for _ in range(cfg.runs)]
        tput = {}
        for conc in cfg.concurrency:
            jobs = max(cfg.runs, conc * 2)
            sem = asyncio.Semaphore(conc)

            async def limited(sem: asyncio.Semaphore) -> float:
                async with sem:
                    return await once(c)

            t0 = time.perf_counter()
            await asyncio.gather(*(limited(sem) for _ in range(jobs)))
            tput[conc] = jobs / (time.perf_counter() - t0)
        memory: dict[str, int | None] = {"nvml_used": _nvml_used(cfg.device)}
    median = statistics.median(times)
    return PathResult(name, cold, first, median, _p95(times), tput, memory, variant, flags)


def _wait_health(url: str, proc: subprocess.Popen[bytes], timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).json().get("status") == "OK":
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} was not ready in {timeout:.0f} s")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "app", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def bench_runner(
    cfg: BenchConfig, variant: str = "plain", flags: dict[str, Any] | None = None
) -> PathResult:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = _spawn(
        [
            "runner",
            "--device",
            cfg.device,
            "--port",
            str(port),
            "--models-dir",
            str(cfg.models_dir),
            "--warm",
            f"{cfg.pipeline}:{cfg.model}",
            *(["--flags", f"{cfg.model}:{json.dumps(flags)}"] if flags else []),
        ]
    )
    try:
        _wait_health(url, proc)
        cold = time.perf_counter() - t0
        return asyncio.run(_http_path("runner", url, cfg, cold, variant, dict(flags or {})))
    finally:
        _stop(proc)


def bench_node(
    cfg: BenchConfig, variant: str = "plain", flags: dict[str, Any] | None = None
) -> PathResult:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    tmp = Path(tempfile.mkdtemp(prefix="orchard-bench-"))
    entry = {
        "pipeline": cfg.pipeline,
        "model_id": cfg.model,
        "warm": True,
        "capacity": max(cfg.concurrency) * 2,
        "price_per_unit": 0,
    }
    if flags:
        entry["optimization_flags"] = dict(flags)
    (tmp / "aiModels.json").write_text(json.dumps([entry]))
    gpus = "cpu" if cfg.device == "cpu" else cfg.device.partition(":")[2] or "0"
    t0 = time.perf_counter()
    proc = _spawn(
        [
            "node",
            "--models",
            str(tmp / "aiModels.json"),
            "--gpus",
            gpus,
            "--port",
            str(port),
            "--models-dir",
            str(cfg.models_dir),
            "--data-dir",
            str(tmp / "data"),
            "--free",
        ]
    )
    try:
        _wait_health(url, proc)
        cold = time.perf_counter() - t0
        return asyncio.run(_http_path("node", url, cfg, cold, variant, dict(flags or {})))
    finally:
        _stop(proc)


def _with_warmup(cfg: BenchConfig, flags: dict[str, Any]) -> dict[str, Any]:
    """Compiled variants warm up at the benchmark's size, as an operator would configure."""
    if "WARMUP" in flags or optim.parse(flags).compile is None:
        return flags  # flags come from parse_cli: names are upper case
    width, height, _ = _defaults(cfg)
    return {**flags, "WARMUP": f"{width}x{height}"}


def run(cfg: BenchConfig) -> dict[str, Any]:
    """Every requested path and variant, one after the other, and the report."""
    results = []
    outputs: dict[str, Any] = {}
    for path in cfg.through:
        for variant, given in cfg.variants():
            flags = _with_warmup(cfg, given)
            _say(f"{path}, {variant}" + (f" ({_flag_text(flags)})" if flags else "") + "...")
            if path == "direct":
                result, outputs[variant] = bench_direct(cfg, variant, flags)
            else:
                fn = {"runner": bench_runner, "node": bench_node}[path]
                result = fn(cfg, variant, flags)
            _say(f"  median {result.median_s * 1000:.1f} ms, cold load {result.cold_load_s:.2f} s")
            results.append(result)
    rep = report(cfg, results)
    if "plain" in outputs and "optimized" in outputs:
        rep["equivalence"] = equivalence(outputs["plain"], outputs["optimized"], cfg.device)
    if cfg.data_dir is not None:
        rep["calibration"] = record_calibration(rep, cfg.data_dir)
    return rep


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _flag_text(flags: dict[str, Any]) -> str:
    return ",".join(k if v is True else f"{k}={v}" for k, v in flags.items())


def equivalence(plain: Any, optimized: Any, device: str) -> dict[str, Any]:
    """How far the optimised path's pixels are from the plain path's, on the same inputs.

    ``ok`` allows floating-point noise: on CPU (fp32) at most 2 levels of 255 anywhere; on a
    GPU (fp16, where fused kernels and CUDA graphs reorder sums) a PSNR of 35 dB or more.
    """
    import numpy as np

    a = np.asarray(plain, dtype=np.float64)
    b = np.asarray(optimized, dtype=np.float64)
    if a.shape != b.shape:
        return {"ok": False, "detail": f"shapes differ: {a.shape} vs {b.shape}"}
    diff = np.abs(a - b)
    mse = float((diff**2).mean())
    psnr = None if mse == 0 else float(10 * np.log10(255.0**2 / mse))
    max_diff = float(diff.max())
    ok = max_diff <= 2 if device == "cpu" else (psnr is None or psnr >= 35.0)
    return {
        "max_abs_diff": max_diff,
        "mean_abs_diff": float(diff.mean()),
        "psnr_db": psnr,
        "ok": bool(ok),
        "pixels_compared": int(a.size),
    }


def record_calibration(rep: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    """Keep the direct path's measurements for the placement planner (docs/placement.md)."""
    from core.placement.calibration import CalibrationStore, measurements_from_report

    path = Path(data_dir) / "calibration.json"
    found = measurements_from_report(rep)
    CalibrationStore(path).add(found)
    return {"file": str(path), "measurements": len(found)}


def report(cfg: BenchConfig, results: list[PathResult]) -> dict[str, Any]:
    import diffusers
    import torch

    width, height, steps = _defaults(cfg)
    device_name = "CPU: " + (platform.processor() or platform.machine())
    if cfg.device.startswith("cuda") and torch.cuda.is_available():
        device_name = torch.cuda.get_device_name(int(cfg.device.partition(":")[2] or 0))
    base = next((r for r in results if r.path == "direct"), None)
    out: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": cfg.device,
        "device_name": device_name,
        "cpu_count": os.cpu_count(),
        "versions": {
            "orchard": core.__version__,
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "python": platform.python_version(),
        },
        "config": {
            **asdict(cfg),
            "models_dir": str(cfg.models_dir),
            "data_dir": str(cfg.data_dir) if cfg.data_dir else None,
            "width": width,
            "height": height,
            "steps": steps,
        },
        "results": [asdict(r) for r in results],
    }
    if base is not None:
        out["overhead_vs_direct_s"] = {
            r.path: r.median_s - base.median_s
            for r in results
            if r.path != "direct" and r.variant == base.variant
        }
    speedup = {}
    for r in results:
        if r.variant == "optimized":
            plain = next((p for p in results if p.path == r.path and p.variant == "plain"), None)
            if plain is not None:
                speedup[r.path] = plain.median_s / r.median_s
    if speedup:
        out["speedup"] = speedup
    return out


def table(rep: dict[str, Any]) -> str:
    cfg = rep["config"]
    frames = f", {cfg['frames']} frames" if cfg.get("frames") else ""
    conc = cfg["concurrency"]
    lines = [
        f"orchard bench: {cfg['pipeline']} {cfg['model']} {cfg['width']}x{cfg['height']}"
        f"{frames}, {cfg['steps']} steps, {cfg['runs']} runs on {rep['device_name']} "
        f"({rep['device']}), {rep['date']}",
        f"{'path':8}{'variant':11}{'cold load s':>12}{'first s':>10}{'median ms':>11}"
        f"{'p95 ms':>10}"
        + "".join(f"{f'jobs/s @{c}':>12}" for c in conc)
        + f"{'peak alloc':>12}{'NVML used':>11}",
    ]
    for r in rep["results"]:
        mem = r["memory"]
        tput = {int(k): v for k, v in r["throughput"].items()}
        lines.append(
            f"{r['path']:8}{r.get('variant', 'plain'):11}{r['cold_load_s']:12.2f}"
            f"{r['first_request_s']:10.3f}{r['median_s'] * 1000:11.1f}{r['p95_s'] * 1000:10.1f}"
            + "".join(f"{tput[c]:12.2f}" for c in conc)
            + f"{_gib(mem.get('torch_peak_allocated')):>12}{_gib(mem.get('nvml_used')):>11}"
        )
    results = rep["results"]
    for path, extra in rep.get("overhead_vs_direct_s", {}).items():
        base = next(r for r in results if r["path"] == "direct")["median_s"]
        lines.append(
            f"overhead of the {path} over a direct call: {extra * 1000:.1f} ms "
            f"(ratio {(base + extra) / base:.3f})"
        )
    flags = cfg.get("flags") or {}
    if flags:
        lines.append(f"optimized = {_flag_text(flags)}")
        for r in results:
            if r.get("variant") == "optimized" and r.get("optimizations"):
                lines.append("  " + "; ".join(r["optimizations"]))
                if (r.get("warmup_s") or 0) >= 0.01:
                    lines.append(f"  warm-up (compiling) took {r['warmup_s']:.2f} s of the load")
                break
    for path, ratio in rep.get("speedup", {}).items():
        lines.append(f"speed-up of optimized over plain, {path}: {ratio:.2f}x")
    eq = rep.get("equivalence")
    if eq:
        if "max_abs_diff" in eq:
            psnr = "identical" if eq["psnr_db"] is None else f"PSNR {eq['psnr_db']:.1f} dB"
            lines.append(
                f"outputs, optimized vs plain: max difference {eq['max_abs_diff']:.0f}/255, "
                f"mean {eq['mean_abs_diff']:.3f}, {psnr}: "
                + ("equivalent" if eq["ok"] else "NOT EQUIVALENT")
            )
        else:
            lines.append(f"outputs, optimized vs plain: NOT EQUIVALENT ({eq.get('detail')})")
    cal = rep.get("calibration")
    if cal:
        lines.append(f"recorded {cal['measurements']} measurement(s) in {cal['file']}")
    return "\n".join(lines)


def _gib(n: int | None) -> str:
    return "-" if not n else f"{n / 2**30:.2f} GiB"


def chart(rep: dict[str, Any], path: Path) -> None:
    """A PNG bar chart of median latency per path (Pillow; no plotting library needed)."""
    from PIL import Image, ImageDraw

    results = rep["results"]
    w, h, pad = 640, 360, 50
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    top = max(r["median_s"] for r in results) or 1.0
    bar = (w - 2 * pad) // max(len(results), 1)
    d.text(
        (pad, 10), f"median latency, {rep['config']['model']} on {rep['device_name']}", fill="black"
    )
    for i, r in enumerate(results):
        x0 = pad + i * bar + 10
        y0 = h - pad - int((h - 2 * pad) * r["median_s"] / top)
        color = (70, 130, 180) if r.get("variant", "plain") == "plain" else (60, 160, 90)
        d.rectangle([x0, y0, x0 + bar - 20, h - pad], fill=color)
        label = r["path"] + ("" if r.get("variant", "plain") == "plain" else " opt")
        d.text((x0, h - pad + 5), label, fill="black")
        d.text((x0, y0 - 14), f"{r['median_s'] * 1000:.1f} ms", fill="black")
    d.line([pad, h - pad, w - pad, h - pad], fill="black")
    img.save(path)
