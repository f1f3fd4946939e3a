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


def test_bench_smoke_direct_runner_node(tiny_models: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "bench",
            "--pipeline",
            "text-to-image",
            "--model",
            "orchard-tiny/sdxl",
            "--models-dir",
            str(tiny_models),
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
            "--json",
            str(tmp_path / "b.json"),
            "--chart",
            str(tmp_path / "b.png"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
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
