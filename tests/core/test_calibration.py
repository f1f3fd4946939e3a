"""``orchard bench`` measurements as placement calibration: reports, the JSON store, scaling.

Every store test uses a real ``calibration.json`` under ``tmp_path``. The GPU figures are
written by hand (this suite runs on machines without CUDA); they follow the H200 SDXL-Turbo
run of ``docs/placement.md``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest

from core.placement import (
    CALIBRATION_FILENAME,
    CalibrationStore,
    GiB,
    Measurement,
    calibration_path,
    footprint_bytes,
    measurements_from_report,
)
from core.placement.calibration import normal_flags

SDXL = "stabilityai/sdxl-turbo"
WEIGHTS = round(6.46 * GiB)
RESERVED = round(9.13 * GiB)
DELTA = round(10.4 * GiB)


def gpu(
    *,
    model_id: str = SDXL,
    pipeline: str = "text-to-image",
    device_name: str = "NVIDIA H200",
    width: int = 512,
    height: int = 512,
    frames: int | None = 1,
    flags: dict[str, Any] | None = None,
    delta: int | None = DELTA,
    reserved: int | None = RESERVED,
    weights: int | None = WEIGHTS,
    date: str = "2026-12-01T10:00:00+00:00",
) -> Measurement:
    """A CUDA measurement, written by hand."""
    return Measurement(
        pipeline=pipeline,
        model_id=model_id,
        device_name=device_name,
        width=width,
        height=height,
        frames=frames,
        flags=flags or {},
        weights=weights,
        peak_allocated=round(7.96 * GiB) if reserved is not None else None,
        peak_reserved=reserved,
        nvml_delta=delta,
        median_s=0.05,
        date=date,
    )


def report(**over: Any) -> dict[str, Any]:
    """An ``orchard bench`` report as the current bench writes it (direct, runner; 2 variants)."""
    memory = {
        "torch_peak_allocated": round(7.96 * GiB),
        "torch_peak_reserved": RESERVED,
        "nvml_used": round(11.0 * GiB),
        "nvml_delta": DELTA,
        "weights": WEIGHTS,
    }
    result = {
        "cold_load_s": 3.0,
        "first_request_s": 0.5,
        "median_s": 0.05,
        "p95_s": 0.06,
        "throughput": {"1": 20.0},
        "memory": memory,
    }
    rep: dict[str, Any] = {
        "date": "2026-12-01T10:00:00+00:00",
        "device": "cuda:0",
        "device_name": "NVIDIA H200",
        "cpu_count": 16,
        "versions": {"orchard": "0.1", "torch": "2.11", "diffusers": "0.42.1"},
        "config": {
            "pipeline": "text-to-image",
            "model": SDXL,
            "width": 512,
            "height": 512,
            "steps": 1,
            "frames": None,
            "concurrency": [1, 4],
            "through": ["direct", "runner"],
        },
        "results": [
            {**result, "path": "direct", "variant": "plain", "flags": {}},
            {
                **result,
                "path": "direct",
                "variant": "optimized",
                "flags": {"CHANNELS_LAST": True, "VAE_FP16": True},
                "median_s": 0.04,
                "memory": {**memory, "nvml_delta": DELTA - GiB},
            },
            {**result, "path": "runner", "variant": "plain", "flags": {}},
        ],
    }
    rep.update(over)
    return rep


# --- reports -------------------------------------------------------------------------------


def test_a_report_gives_one_measurement_per_direct_result() -> None:
    ms = measurements_from_report(report(), source="bench.json")
    assert [m.variant for m in ms] == ["plain", "optimized"]
    plain, optimized = ms
    assert plain == Measurement(
        pipeline="text-to-image",
        model_id=SDXL,
        device_name="NVIDIA H200",
        width=512,
        height=512,
        frames=1,
        batch=1,
        flags={},
        weights=WEIGHTS,
        peak_allocated=round(7.96 * GiB),
        peak_reserved=RESERVED,
        nvml_delta=DELTA,
        median_s=0.05,
        date="2026-12-01T10:00:00+00:00",
        variant="plain",
        source="bench.json",
    )
    assert optimized.flags == {"CHANNELS_LAST": True, "VAE_FP16": True}
    assert optimized.nvml_delta == DELTA - GiB
    assert all(m.usable for m in ms)


def test_an_old_report_reads_as_plain_without_flags_frames_or_nvml_delta() -> None:
    rep = report()
    del rep["config"]["frames"]
    old = {k: v for k, v in rep["results"][0].items() if k not in ("variant", "flags")}
    del old["memory"]["nvml_delta"]
    rep["results"] = [old]
    (m,) = measurements_from_report(rep)
    assert (m.variant, m.flags, m.frames, m.nvml_delta, m.source) == ("plain", {}, 1, None, None)
    assert m.weights == WEIGHTS
    assert not m.usable


def test_a_cpu_report_is_kept_without_memory_figures() -> None:
    rep = report(device="cpu", device_name="CPU: x86_64")
    cpu_memory = {
        "torch_peak_allocated": None,
        "torch_peak_reserved": None,
        "nvml_used": None,
        "nvml_delta": None,
        "weights": 12_345,
    }
    rep["results"] = [{**rep["results"][0], "memory": cpu_memory}]
    (m,) = measurements_from_report(rep)
    assert m.device_name == "CPU: x86_64"
    assert (m.peak_allocated, m.peak_reserved, m.nvml_delta, m.weights) == (
        None,
        None,
        None,
        12_345,
    )
    assert not m.usable


def test_a_video_report_without_frames_keeps_the_models_default() -> None:
    rep = report()
    rep["config"] |= {"pipeline": "image-to-video", "width": 1024, "height": 576}
    assert {m.frames for m in measurements_from_report(rep)} == {None}
    rep["config"]["frames"] = 14
    assert {m.frames for m in measurements_from_report(rep)} == {14}


@pytest.mark.parametrize(
    "broken",
    [
        [],
        {"results": []},
        {"config": {"pipeline": "text-to-image", "model": SDXL}, "results": []},
        {"config": {"pipeline": "text-to-image", "width": 512, "height": 512}, "results": []},
    ],
)
def test_what_is_not_a_bench_report_is_refused(broken: Any) -> None:
    with pytest.raises(ValueError, match="report"):
        measurements_from_report(broken)


def test_a_bad_figure_in_a_report_is_refused() -> None:
    rep = report()
    rep["results"][0]["memory"]["nvml_delta"] = -5
    with pytest.raises(ValueError, match="nvml_delta must not be negative"):
        measurements_from_report(rep)


# --- the store -----------------------------------------------------------------------------


def test_round_trip_through_the_file(tmp_path: Path) -> None:
    ms = measurements_from_report(report(), source="orchard bench --json bench.json")
    store = CalibrationStore.in_dir(tmp_path)
    assert store.path == tmp_path / CALIBRATION_FILENAME == calibration_path(tmp_path)
    assert store.measurements() == []
    store.add(ms)
    data = json.loads(store.path.read_text())
    assert data["version"] == 1
    assert len(data["measurements"]) == 2
    again = CalibrationStore(store.path)
    assert sorted(again.load(), key=lambda m: m.variant) == sorted(ms, key=lambda m: m.variant)
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_newest_measurement_per_key_wins(tmp_path: Path) -> None:
    store = CalibrationStore.in_dir(tmp_path)
    old = gpu(delta=DELTA, date="2026-11-01T00:00:00+00:00")
    new = gpu(delta=DELTA + GiB, date="2026-12-01T00:00:00+00:00")
    store.add([new])
    store.add([old])  # older than what is kept: ignored
    assert CalibrationStore(store.path).measurements() == [new]
    newer = gpu(delta=DELTA + 2 * GiB, date="2026-12-02T00:00:00+00:00")
    other_size = gpu(width=1024, height=1024, date="2026-10-01T00:00:00+00:00")
    store.add([newer, other_size])
    kept = CalibrationStore(store.path).measurements()
    assert sorted(kept, key=lambda m: m.width) == [newer, other_size]


def test_flags_that_are_off_are_the_plain_setup(tmp_path: Path) -> None:
    assert normal_flags({"channels_last": "true", "COMPILE": False, "PNG_LEVEL": "0"}) == {
        "CHANNELS_LAST": True
    }
    store = CalibrationStore.in_dir(tmp_path)
    first = gpu(flags={"CHANNELS_LAST": False}, date="2026-11-01T00:00:00+00:00")
    second = gpu(flags={}, date="2026-11-02T00:00:00+00:00")
    store.add([first, second])
    assert store.measurements() == [second]


def test_add_keeps_what_another_process_wrote_since_load(tmp_path: Path) -> None:
    mine, theirs = CalibrationStore.in_dir(tmp_path), CalibrationStore.in_dir(tmp_path)
    mine.load()
    theirs.add([gpu(model_id="org/other")])
    mine.add([gpu()])
    assert {m.model_id for m in CalibrationStore.in_dir(tmp_path).load()} == {SDXL, "org/other"}


def test_a_corrupt_file_is_empty_with_a_warning_and_set_aside_on_add(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = calibration_path(tmp_path)
    path.write_text('{"version": 1, "measurements": [')
    store = CalibrationStore(path)
    with caplog.at_level(logging.WARNING, logger="core.placement.calibration"):
        assert store.load() == []
        assert store.lookup("text-to-image", SDXL) is None
    assert str(path) in caplog.text and "corrupt" in caplog.text
    store.add([gpu()])
    assert store.corrupt_path.read_text() == '{"version": 1, "measurements": ['
    assert CalibrationStore(path).load() == [gpu()]


@pytest.mark.parametrize("content", [b"[1, 2]", b"\xff\xfe not text", b'{"measurements": 3}'])
def test_a_file_of_the_wrong_shape_counts_as_corrupt(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = calibration_path(tmp_path)
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="core.placement.calibration"):
        assert CalibrationStore(path).load() == []
    assert str(path) in caplog.text


def test_unreadable_entries_are_skipped_and_the_file_kept_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = calibration_path(tmp_path)
    good = gpu().to_json()
    text = json.dumps({"version": 1, "measurements": [good, {"pipeline": 5}, "x"]})
    path.write_text(text)
    with caplog.at_level(logging.WARNING, logger="core.placement.calibration"):
        assert CalibrationStore(path).load() == [gpu()]
    assert "2 measurement(s)" in caplog.text
    CalibrationStore(path).add([gpu(model_id="org/other")])
    assert CalibrationStore(path).corrupt_path.read_text() == text
    assert len(CalibrationStore(path).load()) == 2


def test_an_unreadable_path_does_not_raise(tmp_path: Path) -> None:
    path = calibration_path(tmp_path)
    path.mkdir()  # a folder where the file should be: reading it fails with an OSError
    assert CalibrationStore(path).load() == []


def test_unknown_fields_in_the_file_are_ignored(tmp_path: Path) -> None:
    path = calibration_path(tmp_path)
    entry = {**gpu().to_json(), "from_a_newer_orchard": 1}
    path.write_text(json.dumps({"version": 2, "measurements": [entry]}))
    assert CalibrationStore(path).load() == [gpu()]


# --- lookup --------------------------------------------------------------------------------


def test_lookup_prefers_the_device_then_the_flags_then_the_newest(tmp_path: Path) -> None:
    store = CalibrationStore.in_dir(tmp_path)
    h200_plain_old = gpu(date="2026-11-01T00:00:00+00:00")
    h200_fast_new = gpu(flags={"CHANNELS_LAST": True}, date="2026-11-20T00:00:00+00:00")
    rtx_plain_newest = gpu(device_name="NVIDIA GeForce RTX 4090", date="2026-12-01T00:00:00Z")
    cpu_newest = gpu(device_name="CPU: x86_64", delta=None, reserved=None, date="2027-01-01")
    other_model = gpu(model_id="org/other", date="2027-01-01T00:00:00+00:00")
    other_pipeline = gpu(pipeline="image-to-image", date="2027-01-01T00:00:00+00:00")
    store.add(
        [
            h200_plain_old,
            h200_fast_new,
            rtx_plain_newest,
            cpu_newest,
            other_model,
            other_pipeline,
        ]
    )
    store = CalibrationStore.in_dir(tmp_path)

    def find(**kw: Any) -> Measurement | None:
        return store.lookup("text-to-image", SDXL, **kw)

    assert find() == rtx_plain_newest  # no preference: the newest usable (not the CPU one)
    assert find(device_name="nvidia h200") == h200_fast_new
    assert find(device_name="NVIDIA H200", flags={}) == h200_plain_old
    assert find(device_name="NVIDIA H200", flags={"channels_last": "true"}) == h200_fast_new
    assert find(device_name="NVIDIA A100", flags={}) == rtx_plain_newest
    assert find(flags={"CHANNELS_LAST": True}) == h200_fast_new
    assert store.lookup("text-to-image", "org/missing") is None
    assert store.lookup("image-to-video", SDXL) is None


def test_lookup_breaks_a_tie_with_the_larger_figure(tmp_path: Path) -> None:
    """Plain and optimized variants of one report share its date: the larger one is safer."""
    store = CalibrationStore.in_dir(tmp_path)
    store.add(measurements_from_report(report()))
    found = store.lookup("text-to-image", SDXL)
    assert found is not None and found.nvml_delta == DELTA
    fast = store.lookup("text-to-image", SDXL, flags={"CHANNELS_LAST": True, "VAE_FP16": True})
    assert fast is not None and fast.nvml_delta == DELTA - GiB


def test_a_delta_smaller_than_the_weights_is_not_usable(tmp_path: Path) -> None:
    store = CalibrationStore.in_dir(tmp_path)
    store.add([gpu(delta=WEIGHTS - 1), gpu(model_id="org/zero", delta=0)])
    assert store.lookup("text-to-image", SDXL) is None
    assert store.lookup("text-to-image", "org/zero") is None


# --- scaling -------------------------------------------------------------------------------


def test_the_measured_size_gives_the_measured_figure() -> None:
    assert footprint_bytes(gpu(), 512, 512) == DELTA


def test_a_smaller_size_is_never_scaled_down() -> None:
    assert footprint_bytes(gpu(), 256, 256) == DELTA
    assert footprint_bytes(gpu(width=1024, height=1024), 512, 512) == DELTA


def test_a_larger_size_grows_what_torch_reserved_beyond_the_weights() -> None:
    # 4x the pixels: the reserved activations (9.13 - 6.46 GiB) four times, the rest as measured.
    got = footprint_bytes(gpu(), 1024, 1024)
    assert got == DELTA + math.ceil((RESERVED - WEIGHTS) * 3)
    assert round(got / GiB, 2) == 18.41  # the family estimate of SDXL at 1024x1024 agrees
    assert footprint_bytes(gpu(), 512, 512, batch=2) == DELTA + (RESERVED - WEIGHTS)


def test_without_peak_reserved_everything_beyond_the_weights_grows() -> None:
    m = gpu(reserved=None)
    assert footprint_bytes(m, 1024, 512) == DELTA + (DELTA - WEIGHTS)
    no_weights = gpu(reserved=None, weights=None)
    assert footprint_bytes(no_weights, 1024, 512) == 2 * DELTA


def test_frames_scale_like_pixels_and_a_default_count_reads_as_given() -> None:
    svd = gpu(pipeline="image-to-video", width=1024, height=576, frames=14)
    assert footprint_bytes(svd, 1024, 576, 14) == DELTA
    assert footprint_bytes(svd, 1024, 576, 28) == DELTA + (RESERVED - WEIGHTS)
    default = gpu(pipeline="image-to-video", width=1024, height=576, frames=None)
    assert footprint_bytes(default, 1024, 576, 28, default_frames=14) == DELTA + (
        RESERVED - WEIGHTS
    )
    assert footprint_bytes(default, 1024, 576, 25) == DELTA  # taken as measured at 25


def test_scaling_needs_a_usable_measurement() -> None:
    with pytest.raises(ValueError, match="no NVML figure"):
        footprint_bytes(gpu(delta=None), 512, 512)
    with pytest.raises(ValueError, match="width"):
        footprint_bytes(gpu(), 0, 512)


@pytest.mark.parametrize(
    "bad",
    [
        {"width": 0},
        {"width": 512.0},
        {"frames": 0},
        {"frames": True},
        {"weights": -1},
        {"nvml_delta": 1.5},
        {"flags": ["CHANNELS_LAST"]},
        {"model_id": ""},
    ],
)
def test_a_measurement_checks_its_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Measurement.from_json({**gpu().to_json(), **bad})


def test_weights_measured_at_load_replace_only_the_weights() -> None:
    """A runner sees only the weights right after loading (CUDA: no GPU here, so the
    figure is written by hand); activations keep the bench measurement or the estimate."""
    from core.placement import Footprint, VramEstimate

    gib_ = 2**30
    est = Footprint(("text-to-image", "m"), VramEstimate(6 * gib_, 4 * gib_, 10 * gib_))
    loaded = est.with_loaded_weights(int(6.5 * gib_))
    assert loaded.need == int(10.5 * gib_) and loaded.measured
    # loading again (after an eviction) does not count the activations twice
    assert loaded.with_loaded_weights(int(6.5 * gib_)).need == loaded.need
    bench = Footprint(est.model_key, est.estimate, 12 * gib_)  # a bench measurement
    assert bench.with_loaded_weights(int(6.5 * gib_)).need == int(12.5 * gib_)
