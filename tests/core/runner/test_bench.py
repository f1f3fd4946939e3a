"""``orchard bench`` smoke run on the tiny model (not a timed test), and the full-size
architectures' parameter counts against the published models."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from core.runner.archs import ARCHS, PUBLISHED_PARAMS_M, param_counts
from tests.conftest import ROOT


@pytest.mark.parametrize("arch", ARCHS)
def test_random_weight_architectures_match_published_sizes(arch: str) -> None:
    counts = param_counts(arch)  # on the meta device: no memory used
    published = PUBLISHED_PARAMS_M[arch]
    assert set(counts) == set(published)
    for name, millions in published.items():
        assert counts[name] / 1e6 == pytest.approx(millions, abs=1.0), name


def bench(tmp_path: Path, tiny_models: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "bench",
            "--models-dir",
            str(tiny_models),
            "--data-dir",
            str(tmp_path / "data"),
            "--json",
            str(tmp_path / "b.json"),
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )


def test_bench_smoke_direct_runner_node(tiny_models: Path, tmp_path: Path) -> None:
    out = bench(
        tmp_path,
        tiny_models,
        "--pipeline",
        "text-to-image",
        "--model",
        "orchard-tiny/sdxl",
        "--runs",
        "2",
        "--steps",
        "1",
        "--width",
        "64",
        "--height",
        "64",
        "--concurrency",
        "1,2",
        "--through",
        "direct,runner,node",
        "--chart",
        str(tmp_path / "b.png"),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "median ms" in out.stdout and "overhead of the node" in out.stdout
    rep = json.loads((tmp_path / "b.json").read_text())
    assert rep["device"] == "cpu" and rep["versions"]["torch"].startswith("2.13")
    assert datetime.fromisoformat(rep["date"]).tzinfo is not None
    paths = {r["path"]: r for r in rep["results"]}
    assert set(paths) == {"direct", "runner", "node"}
    for r in paths.values():
        assert r["median_s"] > 0 and r["cold_load_s"] > 0 and set(r["throughput"]) == {"1", "2"}
    assert set(rep["overhead_vs_direct_s"]) == {"runner", "node"}
    with Image.open(tmp_path / "b.png") as chart:
        assert chart.size == (640, 360)
    # the direct path's measurement is recorded for placement (on CPU: no memory figures)
    recorded = json.loads((tmp_path / "data" / "calibration.json").read_text())
    assert "orchard-tiny/sdxl" in json.dumps(recorded)


def test_bench_compares_optimized_with_plain_on_the_same_inputs(
    tiny_models: Path, tmp_path: Path
) -> None:
    """torch.compile (inductor, CPU), channels-last and batching against the plain path: the
    speed of both, in the same run, and the outputs compared pixel by pixel."""
    out = bench(
        tmp_path,
        tiny_models,
        "--pipeline",
        "text-to-image",
        "--model",
        "orchard-tiny/sdxl",
        "--runs",
        "3",
        "--steps",
        "2",
        "--width",
        "64",
        "--height",
        "64",
        "--concurrency",
        "1,3",
        "--through",
        "runner",  # --compare adds the direct path, where outputs are compared
        "--flags",
        "CHANNELS_LAST,COMPILE=unet,BATCH=3",
        "--compare",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rep = json.loads((tmp_path / "b.json").read_text())
    runs = {(r["path"], r["variant"]) for r in rep["results"]}
    assert runs == {(p, v) for p in ("direct", "runner") for v in ("plain", "optimized")}
    optimized = next(r for r in rep["results"] if r["variant"] == "optimized")
    assert optimized["flags"]["COMPILE"] == "unet" and optimized["flags"]["WARMUP"] == "64x64"
    assert "COMPILE: unet (mode default)" in optimized["optimizations"]
    assert optimized["warmup_s"] > 0
    assert set(rep["speedup"]) == {"direct", "runner"}
    eq = rep["equivalence"]
    assert eq["ok"] and eq["max_abs_diff"] <= 2 and eq["pixels_compared"] == 64 * 64 * 3
    assert "speed-up of optimized over plain, runner" in out.stdout
    assert "outputs, optimized vs plain" in out.stdout and "equivalent" in out.stdout


def test_bench_video_frames_on_the_direct_path(tiny_models: Path, tmp_path: Path) -> None:
    args = ["--pipeline", "image-to-video", "--model", "orchard-tiny/svd", "--runs", "1"]
    args += ["--steps", "1", "--width", "64", "--height", "64", "--frames", "4"]
    out = bench(tmp_path, tiny_models, *args)
    assert out.returncode == 0, out.stderr[-3000:]
    rep = json.loads((tmp_path / "b.json").read_text())
    assert rep["config"]["frames"] == 4 and "64x64, 4 frames" in out.stdout
    refused = bench(tmp_path, tiny_models, *args, "--through", "direct,runner")
    assert refused.returncode == 2 and "--frames needs --through direct" in refused.stderr


def test_bench_refuses_unknown_flags(tiny_models: Path, tmp_path: Path) -> None:
    out = bench(
        tmp_path, tiny_models, "--pipeline", "text-to-image", "--model", "m", "--flags", "TURBO"
    )
    assert out.returncode == 2 and "unknown optimization flag 'TURBO'" in out.stderr
    out = bench(tmp_path, tiny_models, "--pipeline", "text-to-image", "--model", "m", "--compare")
    assert out.returncode == 2 and "--compare needs --flags" in out.stderr


def test_bench_refuses_arch_without_random_weights(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "bench",
            "--pipeline",
            "text-to-image",
            "--arch",
            "sdxl-turbo",
            "--models-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 2 and "--random-weights" in out.stderr
