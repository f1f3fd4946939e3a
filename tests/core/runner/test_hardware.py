"""The runner API's /hardware/info and /hardware/stats payloads (core/runner/hardware.py).

Payloads are checked against the contract's ``HardwareInformation`` and ``HardwareStats``
schemas after a JSON round trip. Real NVML gives the no-GPU case on this machine; the GPU
cases use ``FakeNvml`` from tests/core/test_gpus.py, a stand-in for ``pynvml`` used ONLY
because no NVIDIA GPU exists where these tests are written and run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from core.gpus import Nvml, probe
from core.runner.hardware import hardware_info, hardware_stats, visible_gpus
from tests.contract import validate
from tests.core.test_gpus import GiB, two_gpus

PIPELINE, MODEL = "text-to-image", "orchard-tiny/sdxl"


def wire(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as a client receives it."""
    return json.loads(json.dumps(payload))


@pytest.fixture(autouse=True)
def _unpinned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_without_a_gpu_both_reports_are_empty_and_valid() -> None:
    if probe().gpus:
        pytest.skip("an NVIDIA GPU is present")
    info, stats = hardware_info(PIPELINE, MODEL), hardware_stats(PIPELINE, MODEL)
    validate(wire(info), "HardwareInformation")
    validate(wire(stats), "HardwareStats")
    assert info == {"pipeline": PIPELINE, "model_id": MODEL, "gpu_info": {}}
    assert stats == {"pipeline": PIPELINE, "model_id": MODEL, "gpu_stats": {}}


def test_hardware_info_lists_every_gpu_by_index() -> None:
    with Nvml(two_gpus()) as nvml:
        info = wire(hardware_info(PIPELINE, MODEL, nvml))
    validate(info, "HardwareInformation")
    assert info["pipeline"] == PIPELINE and info["model_id"] == MODEL
    assert info["gpu_info"] == {
        "0": {
            "id": "GPU-aaaa-0000",
            "name": "NVIDIA GeForce RTX 4090",
            "memory_total": 24 * GiB,
            "memory_free": 18 * GiB,
            "major": 8,
            "minor": 9,
        },
        "1": {
            "id": "GPU-bbbb-1111",
            "name": "NVIDIA A10",
            "memory_total": 23 * GiB,
            "memory_free": 23 * GiB,
            "major": 8,
            "minor": 6,
        },
    }


def test_hardware_stats_reports_utilisation() -> None:
    with Nvml(two_gpus()) as nvml:
        stats = wire(hardware_stats(PIPELINE, MODEL, nvml))
    validate(stats, "HardwareStats")
    first = stats["gpu_stats"]["0"]
    assert (first["id"], first["memory_free"]) == ("GPU-aaaa-0000", 18 * GiB)
    assert (first["utilization_compute"], first["utilization_memory"]) == (87, 41)
    assert set(stats["gpu_stats"]) == {"0", "1"}


def test_keys_are_ints_until_serialised() -> None:
    with Nvml(two_gpus()) as nvml:
        assert list(hardware_stats(PIPELINE, MODEL, nvml)["gpu_stats"]) == [0, 1]


def test_a_runner_pinned_to_gpu_1_reports_it_as_its_gpu_0(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with Nvml(two_gpus()) as nvml:
        info = wire(hardware_info(PIPELINE, MODEL, nvml))
        stats = wire(hardware_stats(PIPELINE, MODEL, nvml))
    validate(info, "HardwareInformation")
    validate(stats, "HardwareStats")
    assert list(info["gpu_info"]) == ["0"]
    assert info["gpu_info"]["0"]["id"] == "GPU-bbbb-1111"
    assert stats["gpu_stats"]["0"]["name"] == "NVIDIA A10"


@pytest.mark.parametrize(
    ("spec", "uuids"),
    [
        ("1,0", ["GPU-bbbb-1111", "GPU-aaaa-0000"]),
        (" 0 , 1 ", ["GPU-aaaa-0000", "GPU-bbbb-1111"]),
        ("GPU-bbbb", ["GPU-bbbb-1111"]),  # a unique UUID prefix
        ("GPU-", []),  # ambiguous prefix
        ("1,7,0", ["GPU-bbbb-1111"]),  # the list ends at the first invalid entry, as in CUDA
        ("-1", []),
        ("1,1", ["GPU-bbbb-1111"]),
        ("MIG-0b7e4f5a", []),
        ("", []),
    ],
)
def test_cuda_visible_devices(spec: str, uuids: list[str]) -> None:
    gpus = probe(two_gpus()).gpus
    assert [g.uuid for g in visible_gpus(gpus, spec)] == uuids


def test_unset_cuda_visible_devices_shows_every_gpu() -> None:
    gpus = probe(two_gpus()).gpus
    assert visible_gpus(gpus, None) == list(gpus)


def test_an_empty_cuda_visible_devices_hides_every_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with Nvml(two_gpus()) as nvml:
        stats = wire(hardware_stats(PIPELINE, MODEL, nvml))
    validate(stats, "HardwareStats")
    assert stats["gpu_stats"] == {}


def test_a_lost_gpu_is_left_out() -> None:
    fake = two_gpus()
    with Nvml(fake) as nvml:
        nvml.probe()
        fake.gpus[0].lost = True
        stats = wire(hardware_stats(PIPELINE, MODEL, nvml))
    validate(stats, "HardwareStats")
    assert list(stats["gpu_stats"]) == ["1"]


def test_importing_hardware_does_not_import_torch() -> None:
    code = "import sys, core.runner.hardware; sys.exit('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[3]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False).returncode == 0
