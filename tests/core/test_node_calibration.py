"""The node's placement uses ``orchard bench`` measurements from ``<data_dir>/calibration.json``.

A GPU measurement cannot be taken on the machines this suite runs on (no CUDA), so each test
writes one by hand into a real calibration file under ``tmp_path``, as ``orchard bench``
would. The model is a diffusers folder whose safetensors header declares SDXL-Turbo's fp16
weights (6.46 GiB) with no tensor data behind it: the estimate reads only headers, so the
family estimate comes out at full size, 10.4 GiB.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from core.config import ModelEntry, ModelsConfig
from core.orchestrator.node import Node, NodeSettings, estimate_footprint
from core.pipelines import Capability
from core.placement import (
    CalibrationStore,
    GiB,
    GpuBudget,
    Measurement,
    ModelDemand,
    PlanError,
    footprint_bytes,
    plan,
)

SDXL = "stabilityai/sdxl-turbo"
WEIGHTS = round(6.46 * GiB) // 2 * 2  # even: a whole number of fp16 values
T2I = Capability.TEXT_TO_IMAGE


def write_model(models_dir: Path, model_id: str = SDXL, weights: int = WEIGHTS) -> None:
    """An SDXL-Turbo folder: index, UNet config, and a header-only fp16 weights file."""
    folder = models_dir / model_id
    (folder / "unet").mkdir(parents=True)
    index = {"_class_name": "StableDiffusionXLPipeline", "unet": ["diffusers", "UNet2D"]}
    (folder / "model_index.json").write_text(json.dumps(index))
    (folder / "unet" / "config.json").write_text(json.dumps({"sample_size": 64}))
    n = weights // 2
    header = json.dumps({"weight": {"dtype": "F16", "shape": [n], "data_offsets": [0, 2 * n]}})
    raw = header.encode()
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(
        len(raw).to_bytes(8, "little") + raw
    )


def measured(
    nvml_delta: int,
    *,
    width: int = 512,
    height: int = 512,
    device_name: str = "NVIDIA H200",
    flags: dict[str, bool] | None = None,
    date: str = "2026-12-01T10:00:00+00:00",
) -> Measurement:
    """A CUDA measurement of SDXL-Turbo, written by hand (no GPU here)."""
    return Measurement(
        pipeline="text-to-image",
        model_id=SDXL,
        device_name=device_name,
        width=width,
        height=height,
        flags=flags or {},
        weights=WEIGHTS,
        peak_allocated=round(7.96 * GiB),
        peak_reserved=round(9.13 * GiB),
        nvml_delta=nvml_delta,
        date=date,
    )


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    write_model(tmp_path / "models")
    return tmp_path / "models"


def test_without_a_measurement_the_estimate_stands(models_dir: Path, tmp_path: Path) -> None:
    store = CalibrationStore.in_dir(tmp_path)  # no file yet
    for fp in (
        estimate_footprint(models_dir, T2I, SDXL),
        estimate_footprint(models_dir, T2I, SDXL, calibration=store),
    ):
        assert not fp.measured
        assert fp.estimate is not None and fp.estimate.weights == WEIGHTS
        assert round(fp.need / GiB, 1) == 10.4


def test_a_bench_measurement_replaces_the_estimate(
    models_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = CalibrationStore.in_dir(tmp_path)
    store.add([measured(round(9.0 * GiB))])
    with caplog.at_level(logging.INFO, logger="core.orchestrator.node"):
        fp = estimate_footprint(
            models_dir, T2I, SDXL, calibration=CalibrationStore.in_dir(tmp_path)
        )
    assert fp.measured and fp.need == round(9.0 * GiB)
    assert fp.estimate is not None and fp.shared == WEIGHTS  # weights still shared
    (line,) = [r.getMessage() for r in caplog.records if "orchard bench" in r.getMessage()]
    assert SDXL in line and "NVIDIA H200" in line and "2026-12-01" in line


def test_a_measurement_at_a_smaller_size_is_carried_to_the_native_one(
    models_dir: Path, tmp_path: Path
) -> None:
    m = measured(round(9.0 * GiB), width=256, height=256)
    CalibrationStore.in_dir(tmp_path).add([m])
    fp = estimate_footprint(models_dir, T2I, SDXL, calibration=CalibrationStore.in_dir(tmp_path))
    assert fp.need == footprint_bytes(m, 512, 512) > round(9.0 * GiB)  # SDXL-Turbo: 512x512


def test_a_cpu_measurement_does_not_replace_the_estimate(models_dir: Path, tmp_path: Path) -> None:
    cpu = Measurement("text-to-image", SDXL, "CPU: x86_64", 512, 512, weights=WEIGHTS)
    CalibrationStore.in_dir(tmp_path).add([cpu])
    fp = estimate_footprint(models_dir, T2I, SDXL, calibration=CalibrationStore.in_dir(tmp_path))
    assert not fp.measured


def test_the_planner_follows_the_measured_figure(models_dir: Path, tmp_path: Path) -> None:
    """A 10 GiB card (budget 9.5 GiB): the 10.4 GiB estimate is refused, a 9.0 GiB
    measurement fits, and a 9.8 GiB one is refused again."""
    card = GpuBudget(0, "NVIDIA GeForce RTX 3080", total=10 * GiB, free=10 * GiB)

    def place(store: CalibrationStore | None) -> None:
        fp = estimate_footprint(models_dir, T2I, SDXL, calibration=store)
        plan([card], [ModelDemand.from_footprint(fp, warm=True)])

    with pytest.raises(PlanError, match=r"needs 10\.4 GiB"):
        place(None)
    CalibrationStore.in_dir(tmp_path).add([measured(round(9.0 * GiB))])
    place(CalibrationStore.in_dir(tmp_path))
    CalibrationStore.in_dir(tmp_path).add([measured(round(9.8 * GiB), date="2026-12-02")])
    with pytest.raises(PlanError, match=r"needs 9\.8 GiB"):
        place(CalibrationStore.in_dir(tmp_path))


def test_a_corrupt_calibration_file_does_not_stop_the_node(
    models_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "calibration.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        fp = estimate_footprint(
            models_dir, T2I, SDXL, calibration=CalibrationStore.in_dir(tmp_path)
        )
    assert not fp.measured
    assert str(tmp_path / "calibration.json") in caplog.text


def node(models_dir: Path, data_dir: Path) -> Node:
    return Node(NodeSettings(config=ModelsConfig(), data_dir=data_dir, models_dir=models_dir))


def test_the_node_reads_its_data_dirs_file_for_its_gpus(models_dir: Path, tmp_path: Path) -> None:
    """The node's slots: on a GPU node the measurement taken on its card with the entry's
    optimisation flags; on a CPU-only node the estimate."""
    data_dir = tmp_path / "data"
    CalibrationStore.in_dir(data_dir).add(
        [
            measured(round(9.0 * GiB), date="2026-12-01T00:00:00+00:00"),
            measured(round(8.5 * GiB), flags={"CHANNELS_LAST": True}, date="2026-12-01"),
            measured(round(9.9 * GiB), device_name="NVIDIA A100", date="2026-12-05"),
        ]
    )
    h200 = [GpuBudget(i, "NVIDIA H200", 140 * GiB, 140 * GiB) for i in (0, 1)]
    plain = ModelEntry("text-to-image", SDXL, warm=True)
    i2i = ModelEntry("image-to-image", SDXL, warm=True)  # no measurement for this pipeline
    flagged = ModelEntry(
        "text-to-image", SDXL, warm=True, optimization_flags={"CHANNELS_LAST": True}
    )

    n = node(models_dir, data_dir)
    (slot,) = n._make_slots([plain], h200)
    assert slot.footprint.need == round(9.0 * GiB)
    (slot,) = n._make_slots([flagged], h200)
    assert slot.footprint.need == round(8.5 * GiB)
    (slot,) = n._make_slots([i2i], h200)
    assert not slot.footprint.measured
    mixed = [h200[0], GpuBudget(1, "NVIDIA A100", 80 * GiB, 80 * GiB)]
    (slot,) = n._make_slots([plain], mixed)  # no one card name: the newest plain one
    assert slot.footprint.need == round(9.9 * GiB)
    cpu = [GpuBudget(-1, "CPU (x86_64)", 64 * GiB, 64 * GiB)]
    (slot,) = n._make_slots([plain], cpu)
    assert not slot.footprint.measured
