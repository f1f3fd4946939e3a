"""The benchmark view: its request from the fields, the output as it arrives, and a report
(``orchard bench --json``) as a table and sentences, new keys or old."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from PIL import Image
from pytestqt.qtbot import QtBot

from widgets._bench_report import flags_offer
from widgets.bench_view import BenchRequest, BenchView

GiB = 2**30


def result(path: str, variant: str | None, median: float, **extra: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "path": path,
        "cold_load_s": 2.75,
        "first_request_s": 0.41,
        "median_s": median,
        "p95_s": median * 1.1,
        "throughput": {"1": 1 / median, "4": 3.5 / median},
        "memory": {
            "torch_peak_allocated": int(7.96 * GiB) if path == "direct" else None,
            "torch_peak_reserved": int(9.13 * GiB) if path == "direct" else None,
            "nvml_used": int(10.4 * GiB),
            "nvml_delta": int(9.9 * GiB),
            "weights": int(6.46 * GiB),
        },
    }
    if variant is not None:
        r["variant"] = variant
        r["flags"] = {"CHANNELS_LAST": True, "VAE_FP16": True} if variant == "optimized" else {}
    return r | extra


REPORT: dict[str, Any] = {
    "date": "2026-11-28T08:16:11+00:00",
    "device": "cuda:0",
    "device_name": "NVIDIA H200",
    "cpu_count": 16,
    "versions": {"orchard": "0.1.0", "torch": "2.11.0", "diffusers": "0.42.1", "python": "3.11"},
    "config": {
        "pipeline": "text-to-image",
        "model": "stabilityai/sdxl-turbo",
        "width": 512,
        "height": 512,
        "steps": 4,
        "frames": None,
        "runs": 10,
        "concurrency": [1, 4],
        "through": ["direct", "runner"],
        "flags": {"CHANNELS_LAST": True, "VAE_FP16": True},
        "compare": True,
    },
    "results": [
        result("direct", "plain", 0.321),
        result("direct", "optimized", 0.174),
        result("runner", "plain", 0.335),
        result("runner", "optimized", 0.1862),
    ],
    "overhead_vs_direct_s": {"runner": 0.0122},
    "speedup": {"direct": 1.845, "runner": 1.80},
    "equivalence": {"max_abs_diff": 2.0, "mean_abs_diff": 0.0412, "psnr_db": 48.21, "ok": True},
}


def old_report() -> dict[str, Any]:
    """What ``orchard bench`` wrote before variants, flags, speed-up and equivalence."""
    rep = copy.deepcopy(REPORT)
    for key in ("speedup", "equivalence"):
        del rep[key]
    for key in ("flags", "compare", "frames"):
        del rep["config"][key]
    rep["config"]["concurrency"] = [1]
    rep["results"] = [result("direct", None, 0.0206), result("runner", None, 0.0312)]
    for r in rep["results"]:
        r["memory"].pop("nvml_delta")
        r["throughput"] = {"1": 1 / r["median_s"]}
    return rep


def view(qtbot: QtBot) -> BenchView:
    v = BenchView()
    qtbot.addWidget(v)
    v.resize(1100, 700)
    v.set_devices([("cuda:0", "GPU 0 · NVIDIA H200"), ("cpu", "CPU · x86_64")])
    v.set_models({"text-to-image": ["orchard-tiny/sdxl"], "image-to-video": ["orchard-tiny/svd"]})
    v.set_supported({"frames", "flags", "compare"})
    return v


def test_report_with_variants_speedup_and_equivalence(qtbot: QtBot) -> None:
    v = view(qtbot)
    assert v.result.empty.isVisibleTo(v) and not v.result.table.isVisibleTo(v)
    v.set_report(REPORT)
    assert not v.result.empty.isVisibleTo(v) and v.result.table.isVisibleTo(v)
    assert v.result.header_labels() == [
        "Path",
        "Variant",
        "Cold load",
        "First",
        "Median",
        "p95",
        "Jobs/s @1",
        "Jobs/s @4",
        "Peak VRAM",
    ]
    assert v.result.table.rowCount() == 4
    assert [v.result.cell_text(r, "Path") for r in range(4)] == [
        "direct",
        "direct",
        "runner",
        "runner",
    ]
    assert [v.result.cell_text(r, "Variant") for r in range(4)] == ["plain", "optimised"] * 2
    assert v.result.table.item(1, 1).toolTip() == "flags: CHANNELS_LAST, VAE_FP16"
    assert v.result.cell_text(0, "Cold load") == "2.75 s"
    assert v.result.cell_text(0, "First") == "410 ms"
    assert v.result.cell_text(0, "Median") == "321 ms"
    assert v.result.cell_text(1, "Median") == "174 ms"
    assert v.result.cell_text(0, "p95") == "353 ms"
    assert v.result.cell_text(0, "Jobs/s @1") == "3.12"
    assert v.result.cell_text(1, "Jobs/s @4") == "20.1"
    assert v.result.cell_text(0, "Peak VRAM") == "7.96 GiB"  # torch's peak allocated
    assert v.result.cell_text(2, "Peak VRAM") == "10.40 GiB (NVML)"  # only NVML over HTTP
    assert "added on the device (NVML): 9.90 GiB" in v.result.table.item(0, 8).toolTip()
    assert v.result.title.text() == (
        "text-to-image · stabilityai/sdxl-turbo · 512×512 · 4 steps · 10 timed runs"
    )
    meta = v.result.meta.text()
    assert meta.startswith("on NVIDIA H200 (cuda:0) · ")
    assert "orchard 0.1.0, torch 2.11.0, diffusers 0.42.1" in meta
    assert meta.endswith("flags: CHANNELS_LAST, VAE_FP16")
    assert v.result.overhead.text() == "Overhead over a direct call (median): runner +12.2 ms"
    assert v.result.speedup.isVisibleTo(v)
    assert v.result.speedup.text() == (
        "Speed-up of the optimised variant over plain: direct ×1.84, runner ×1.80"
    )
    assert v.result.equivalence.isVisibleTo(v)
    assert v.result.equivalence.text().startswith("✔ The optimised output matches the plain one")
    assert "PSNR 48.2 dB, largest pixel difference 2/255, mean 0.0412" in (
        v.result.equivalence.text()
    )
    assert v.result.equivalence.property("ok") == "true"


def test_an_output_that_differs_is_flagged(qtbot: QtBot) -> None:
    v = view(qtbot)
    rep = copy.deepcopy(REPORT)
    rep["equivalence"] = {"max_abs_diff": 161, "mean_abs_diff": 20.5, "psnr_db": 17.9, "ok": False}
    rep["speedup"] = {"direct": 0.93}
    v.set_report(rep)
    assert v.result.equivalence.text().startswith(
        "✖ The optimised output differs from the plain one"
    )
    assert v.result.equivalence.property("ok") == "false"
    assert v.result.speedup.text().endswith("direct ×0.93 (slower)")


def test_an_old_report_without_the_new_keys(qtbot: QtBot) -> None:
    v = view(qtbot)
    v.set_report(old_report())
    assert v.result.header_labels() == [
        "Path",
        "Cold load",
        "First",
        "Median",
        "p95",
        "Jobs/s @1",
        "Peak VRAM",
    ]
    assert v.result.cell_text(0, "Median") == "20.6 ms"
    assert v.result.cell_text(1, "Jobs/s @1") == "32.1"
    assert not v.result.speedup.isVisibleTo(v) and not v.result.equivalence.isVisibleTo(v)
    assert "flags" not in v.result.meta.text()
    # a report with next to nothing in it still shows
    v.set_report({"results": [{"path": "direct", "median_s": 0.5}]})
    assert v.result.cell_text(0, "Median") == "500 ms"
    assert v.result.cell_text(0, "Cold load") == "—" and v.result.cell_text(0, "Peak VRAM") == "—"


def test_the_chart_is_shown(qtbot: QtBot, tmp_path: Path) -> None:
    png = tmp_path / "chart.png"
    Image.new("RGB", (640, 360), "white").save(png)
    v = view(qtbot)
    v.set_report(REPORT, str(png))
    qtbot.waitUntil(v.result.has_chart, timeout=5000)
    assert v.result.chart.isVisibleTo(v)
    v.set_report(old_report(), None)
    assert not v.result.has_chart() and not v.result.chart.isVisibleTo(v)


def test_the_request_from_the_fields(qtbot: QtBot) -> None:
    v = view(qtbot)
    got: list[BenchRequest] = []
    v.run_requested.connect(got.append)
    v.select("text-to-image", "orchard-tiny/sdxl")
    v.width_spin.setValue(64)
    v.height_spin.setValue(64)
    v.steps.setValue(2)
    v.runs.setValue(3)
    v.concurrency.setText("1, 2,4")
    v.paths["runner"].setChecked(True)
    v.flags_menu.aboutToShow.emit()
    v.flag_actions["CHANNELS_LAST"].setChecked(True)
    v.flag_actions["VAE_FP16"].setChecked(True)
    assert v.flags.text() == "CHANNELS_LAST,VAE_FP16"
    v.flag_actions["CHANNELS_LAST"].setChecked(False)
    v.compare.setChecked(True)
    v.run_button.click()
    assert got == [
        BenchRequest(
            device="cuda:0",
            pipeline="text-to-image",
            model="orchard-tiny/sdxl",
            width=64,
            height=64,
            steps=2,
            runs=3,
            concurrency=(1, 2, 4),
            through=("direct", "runner"),
            frames=None,
            compare=True,
            flags="VAE_FP16",
        )
    ]
    # video: its own defaults, and frames
    v.pipeline.setCurrentText("image-to-video")
    assert v.form.isRowVisible(v.frames)
    assert v.model.currentText() == "orchard-tiny/svd"
    v.device.setCurrentIndex(1)
    v.run_button.click()
    assert got[-1].device == "cpu" and got[-1].frames == 14 and got[-1].pipeline == "image-to-video"


def test_wrong_fields_are_said_and_nothing_runs(qtbot: QtBot) -> None:
    v = view(qtbot)
    got: list[BenchRequest] = []
    v.run_requested.connect(got.append)
    v.paths["direct"].setChecked(False)
    v.concurrency.setText("1,many")
    v.flags.setText("CHANNEL_LAST")
    v.run_button.click()
    assert not got
    text = v.form_error.text()
    assert "Through: tick at least one" in text
    assert "Concurrency: 'many'" in text
    assert 'did you mean "CHANNELS_LAST"' in text


def test_options_the_runtime_lacks_are_off(qtbot: QtBot) -> None:
    v = view(qtbot)
    v.set_supported(set())
    assert not v.compare.isEnabled() and not v.flags_row.isEnabled()
    assert "--compare" in v.compare.toolTip()
    got: list[BenchRequest] = []
    v.run_requested.connect(got.append)
    v.compare.setChecked(True)
    v.select("text-to-image", "orchard-tiny/sdxl")
    v.run_button.click()
    assert got and got[0].compare is False and got[0].flags == ""


def test_running_output_and_error(qtbot: QtBot) -> None:
    v = view(qtbot)
    v.set_running(True)
    assert not v.run_button.isEnabled() and v.stop_button.isEnabled()
    assert v.bar.isVisibleTo(v)
    v.append_output("loading…")
    v.append_output("Loading weights:  10%|#", transient=True)
    v.append_output("Loading weights:  60%|######", transient=True)
    v.append_output("\x1b[ALoading weights: 100%|##########")
    v.append_output("done")
    assert v.output_lines() == ["loading…", "Loading weights: 100%|##########", "done"]
    v.show_error("The benchmark failed (exit code 1). Its last lines:", ["Traceback", "boom"])
    v.finish("failed")
    assert v.run_button.isEnabled() and not v.stop_button.isEnabled()
    assert not v.bar.isVisibleTo(v)
    assert v.status.text().startswith("Failed after ")
    assert (
        v.result.error_box.isVisibleTo(v) and v.result.error_tail.toPlainText() == "Traceback\nboom"
    )
    assert not v.result.empty.isVisibleTo(v)
    v.set_running(True)  # a new run clears the error and the output
    assert not v.result.error_box.isVisibleTo(v) and v.output_lines() == []
    v.finish("stopped")
    assert v.status.text().startswith("Stopped after ")


def test_warning_does_not_block(qtbot: QtBot) -> None:
    v = view(qtbot)
    got: list[BenchRequest] = []
    v.run_requested.connect(got.append)
    v.set_warning("The running node uses GPU 0.")
    assert v.warning.isVisibleTo(v)
    v.run_button.click()
    assert len(got) == 1
    v.set_warning("")
    assert not v.warning.isVisibleTo(v)


def test_identical_output_and_what_was_applied(qtbot: QtBot) -> None:
    v = view(qtbot)
    rep = copy.deepcopy(REPORT)
    rep["equivalence"] = {"max_abs_diff": 0.0, "mean_abs_diff": 0.0, "psnr_db": None, "ok": True}
    rep["results"][1]["optimizations"] = ["CHANNELS_LAST: unet", "VAE_FP16: vae"]
    rep["results"][1]["warmup_s"] = 12.5
    v.set_report(rep)
    assert v.result.equivalence.text() == (
        "✔ The optimised output matches the plain one (identical pixels)."
    )
    tip = v.result.table.item(1, 1).toolTip()
    assert tip == "flags: CHANNELS_LAST, VAE_FP16\napplied: CHANNELS_LAST: unet; VAE_FP16: vae"
    assert "12.5 s warming up" in v.result.table.item(1, 2).toolTip()


CONFIGURED = ("text-to-image", "stabilityai/sdxl-turbo")


def test_flags_worth_keeping_are_offered_for_a_configured_model(qtbot: QtBot) -> None:
    v = view(qtbot)
    v.set_report(REPORT)  # outputs match, faster on both paths
    use = v.result.use_flags
    assert v.result.use_row.isVisibleTo(v)
    assert use.text() == "Use these flags for stabilityai/sdxl-turbo"
    assert not use.isEnabled()  # not in the node's aiModels.json
    why = "stabilityai/sdxl-turbo is not in the node's aiModels.json for text-to-image"
    assert use.toolTip().startswith(why)
    assert v.result.use_note.text().startswith(why)
    v.set_configured({CONFIGURED: {"MYSTERY": "1"}})
    assert use.isEnabled() and v.result.use_note.text() == ""
    assert use.toolTip().startswith("Write CHANNELS_LAST, VAE_FP16 into the optimization_flags")
    with qtbot.waitSignal(v.use_flags_requested) as got:
        use.click()
    assert got.args == [*CONFIGURED, {"CHANNELS_LAST": True, "VAE_FP16": True}]
    v.show_flags_saved("✔ Saved in aiModels.json")
    assert v.result.use_note.text() == "✔ Saved in aiModels.json"
    v.set_configured({CONFIGURED: {"CHANNELS_LAST": "true", "vae_fp16": True, "SFAST": True}})
    assert not use.isEnabled()
    assert v.result.use_note.text() == (
        "stabilityai/sdxl-turbo (text-to-image) already has these flags in aiModels.json."
    )
    v.set_report(None)
    assert not v.result.use_row.isVisibleTo(v)


def test_no_offer_without_matching_output_and_a_speed_up(qtbot: QtBot) -> None:
    v = view(qtbot)
    v.set_configured({CONFIGURED: {}})
    for change in (
        {"equivalence": {"psnr_db": 17.9, "ok": False}},
        {"speedup": {"direct": 1.3, "runner": 0.97}},  # slower through the runner
        {"speedup": {}},
    ):
        v.set_report(REPORT | change)
        assert not v.result.use_row.isVisibleTo(v), change
    v.set_report(old_report())
    assert not v.result.use_row.isVisibleTo(v)
    plain = copy.deepcopy(REPORT)
    plain["config"]["flags"] = {}
    v.set_report(plain)
    assert not v.result.use_row.isVisibleTo(v)


def test_the_offer_leaves_out_the_warmup_the_benchmark_adds() -> None:
    rep = copy.deepcopy(REPORT)
    rep["config"]["flags"] = {"COMPILE": "unet"}  # as asked: --flags COMPILE=unet
    rep["results"][1]["flags"] = {"COMPILE": "unet", "WARMUP": "512x512"}  # as run
    assert flags_offer(rep) == (*CONFIGURED, {"COMPILE": "unet"})
    rep["config"]["flags"] = {"COMPILE": "unet", "WARMUP": "1024x1024"}  # asked for
    assert flags_offer(rep) == (*CONFIGURED, {"COMPILE": "unet", "WARMUP": "1024x1024"})
