"""The Benchmark page in the real window: ``orchard bench`` really runs, as a subprocess, on
the CPU against the tiny model; its report is shown and kept; a failing run says why; Stop
ends it; the page warns when the node uses the chosen device; a report's flags are written
into the node's aiModels.json."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from app.gui.pages.bench import BenchPage, bench_command
from app.gui.window import MainWindow
from core import config
from core.procstream import split_lines
from core.runners.local import free_port
from tests.app.conftest import TINY_CONFIG, Env, pid_alive, wait_until
from widgets.bench_view import BenchRequest, BenchView


def page_of(window: MainWindow) -> BenchPage:
    page = window.pages["bench"]
    assert isinstance(page, BenchPage)
    return page


def small_run(view: BenchView, model: str = "orchard-tiny/sdxl", runs: int = 2) -> None:
    """Tiny sizes on the CPU, the direct path only."""
    view.device.setCurrentIndex(view.device.findData("cpu"))
    view.select("text-to-image", model)
    view.width_spin.setValue(64)
    view.height_spin.setValue(64)
    view.steps.setValue(2)
    view.runs.setValue(runs)
    view.concurrency.setText("1")
    for name, box in view.paths.items():
        box.setChecked(name == "direct")


def test_a_benchmark_runs_and_its_result_is_kept(env: Env) -> None:
    env.write_config(TINY_CONFIG)

    async def body() -> None:
        window = await env.window()
        page = page_of(window)
        view = page.view
        window.show_page("bench")
        assert view.device.itemData(view.device.count() - 1) == "cpu"
        assert view.report is None and view.result.empty.isVisibleTo(view)
        await wait_until(
            lambda: "orchard-tiny/sdxl" in view.models.get("image-to-image", []), 20, "models"
        )
        assert view.models["text-to-image"][0] == "orchard-tiny/sdxl"  # configured first
        small_run(view)
        view.run_button.click()
        assert page.running
        assert not view.run_button.isEnabled() and view.stop_button.isEnabled()
        await wait_until(lambda: not page.running, 240, "the benchmark")
        result = view.result
        assert result.error_box.isHidden(), (
            f"{result.error_text.text()}\n{result.error_tail.toPlainText()}"
        )
        assert view.status.text().startswith("Finished in ")
        assert view.run_button.isEnabled() and not view.stop_button.isEnabled()
        assert result.table.rowCount() == 1
        assert result.cell_text(0, "Path") == "direct"
        assert re.fullmatch(r"[\d.]+ (ms|s)", result.cell_text(0, "Median"))
        assert result.cell_text(0, "Jobs/s @1") != "—"
        assert result.title.text().startswith("text-to-image · orchard-tiny/sdxl · 64×64 · 2 steps")
        lines = view.output_lines()
        assert lines[0].startswith("$ orchard bench --pipeline text-to-image")
        assert any(line.startswith("orchard bench: text-to-image") for line in lines)  # stdout
        await wait_until(result.has_chart, 10, "the chart")
        cmd = page.last_command
        assert cmd[:4] == [sys.executable, "-m", "app", "bench"]
        assert cmd[cmd.index("--device") + 1] == "cpu"
        assert cmd[cmd.index("--through") + 1] == "direct"
        kept = env.data_dir / "bench" / "last.json"
        assert json.loads(kept.read_text())["config"]["model"] == "orchard-tiny/sdxl"
        assert (env.data_dir / "bench" / "last.png").is_file()
        assert not (env.data_dir / "bench" / "run.json").exists()
        await env.close(window)

        again = await env.window()  # the app opened again: the last result is there
        view = page_of(again).view
        await wait_until(lambda: view.report is not None, 10, "the last result")
        assert view.result.cell_text(0, "Path") == "direct"
        await wait_until(view.result.has_chart, 10, "the last chart")
        await env.close(again)

    env.run(body(), timeout=300)


def test_a_failing_run_shows_why(env: Env) -> None:
    env.write_config(TINY_CONFIG)

    async def body() -> None:
        window = await env.window()
        page = page_of(window)
        view = page.view
        window.show_page("bench")
        small_run(view, model="nope/unknown")
        view.run_button.click()
        await wait_until(lambda: not page.running, 120, "the failing benchmark")
        result = view.result
        assert result.error_box.isVisibleTo(view)
        assert result.error_text.text().startswith("The benchmark failed (exit code 1)")
        assert "nope/unknown" in result.error_tail.toPlainText()
        assert view.status.text().startswith("Failed after ")
        assert view.run_button.isEnabled()
        assert view.report is None and not result.empty.isVisibleTo(view)
        assert not (env.data_dir / "bench" / "last.json").exists()
        await env.close(window)

    env.run(body(), timeout=180)


def test_stop_ends_the_benchmark_and_what_it_started(env: Env) -> None:
    env.write_config(TINY_CONFIG)

    async def body() -> None:
        window = await env.window()
        page = page_of(window)
        view = page.view
        small_run(view, runs=100_000)
        view.run_button.click()
        await wait_until(lambda: page.process is not None and page.process.pid, 30, "the start")
        assert page.process is not None
        pid = page.process.pid
        assert pid is not None
        await wait_until(lambda: len(view.output_lines()) > 1, 60, "some output")
        view.stop_button.click()
        await wait_until(lambda: not page.running, 30, "the stop")
        assert view.status.text().startswith("Stopped after ")
        assert view.result.error_box.isHidden()
        assert not pid_alive(pid)
        await env.close(window)

    env.run(body(), timeout=180)


def test_a_warning_when_the_node_uses_the_device(env: Env) -> None:
    env.write_config(TINY_CONFIG)

    async def body() -> None:
        window = await env.window()
        view = page_of(window).view
        view.device.setCurrentIndex(view.device.findData("cpu"))
        assert view.warning.isHidden()
        assert await window.session.start_node("127.0.0.1", free_port())
        await wait_until(lambda: not view.warning.isHidden(), 10, "the warning")
        assert view.warning.text().startswith("The running node uses the CPU")
        assert view.run_button.isEnabled()  # a warning, not a block
        await window.session.stop_node()
        await wait_until(lambda: view.warning.isHidden(), 10, "the warning to go")
        await env.close(window)

    env.run(body(), timeout=180)


def comparison_report(model: str, flags: dict[str, object]) -> dict[str, object]:
    """What ``orchard bench --flags ... --compare`` writes, in the parts the page reads."""
    run = {"cold_load_s": 0.1, "first_request_s": 0.05, "p95_s": 0.06, "throughput": {"1": 20}}
    return {
        "date": "2026-11-28T09:00:00+00:00",
        "device": "cpu",
        "config": {"pipeline": "text-to-image", "model": model, "flags": flags, "compare": True},
        "results": [
            {"path": "direct", "variant": "plain", "median_s": 0.050, **run},
            {"path": "direct", "variant": "optimized", "median_s": 0.043, **run},
        ],
        "speedup": {"direct": 1.16},
        "equivalence": {"max_abs_diff": 1.0, "mean_abs_diff": 0.0002, "psnr_db": 85.3, "ok": True},
    }


def test_a_reports_flags_are_written_into_the_nodes_file(env: Env) -> None:
    entries = [dict(e) for e in TINY_CONFIG]
    entries[0]["optimization_flags"] = {"PNG_LEVEL": "0", "MYSTERY": "kept"}
    env.write_config(entries)
    bench = env.data_dir / "bench"
    bench.mkdir(parents=True)
    flags = {"CHANNELS_LAST": True, "COMPILE": "unet"}
    (bench / "last.json").write_text(json.dumps(comparison_report("orchard-tiny/sdxl", flags)))

    async def body() -> None:
        window = await env.window()
        page = page_of(window)
        view = page.view
        await wait_until(lambda: view.report is not None, 10, "the last result")
        use = view.result.use_flags
        assert use.text() == "Use these flags for orchard-tiny/sdxl" and use.isEnabled()
        use.click()
        await wait_until(lambda: view.result.use_note.text().startswith("✔"), 10, "saving")
        assert view.result.use_note.text() == (
            "✔ Saved in aiModels.json: orchard-tiny/sdxl (text-to-image) now runs with "
            "CHANNELS_LAST, COMPILE=unet. They apply when the node starts."
        )
        saved = json.loads(env.config_path.read_text())
        assert saved[0]["optimization_flags"] == {
            "CHANNELS_LAST": True,
            "COMPILE": "unet",
            "MYSTERY": "kept",  # a flag Orchard does not know stays; PNG_LEVEL is replaced
        }
        assert saved[0]["price_per_unit"] == 4768371 and saved[0]["warm"] is True
        assert "optimization_flags" not in saved[1]  # another model: untouched
        assert (env.config_path.parent / "aiModels.json.bak").exists()  # the session's save
        assert not use.isEnabled()  # now the model's flags
        # a model the node does not have: the button says why it is off
        only_svd = config.ModelsConfig(window.session.config.entries[1:])
        await window.session.set_config(only_svd)
        assert not use.isEnabled()
        assert use.toolTip() == (
            "orchard-tiny/sdxl is not in the node's aiModels.json for text-to-image: add it on "
            "the Models page first."
        )
        await env.close(window)

    env.run(body())


def test_the_command_line() -> None:
    req = BenchRequest(
        device="cuda:1",
        pipeline="image-to-video",
        model="stabilityai/svd",
        width=1024,
        height=576,
        steps=25,
        runs=3,
        concurrency=(1, 2),
        through=("direct", "node"),
        frames=14,
        compare=True,
        flags="CHANNELS_LAST,COMPILE=unet",
    )
    where = {
        "models_dir": Path("/m"),
        "json_path": Path("/d/bench/run.json"),
        "chart_path": Path("/d/bench/run.png"),
        "data_dir": Path("/d"),
    }
    cmd = bench_command("/py", req, **where)  # type: ignore[arg-type]
    assert cmd == [
        "/py", "-m", "app", "bench",
        "--pipeline", "image-to-video", "--model", "stabilityai/svd",
        "--models-dir", "/m", "--device", "cuda:1", "--runs", "3", "--steps", "25",
        "--width", "1024", "--height", "576", "--concurrency", "1,2", "--through", "direct,node",
        "--frames", "14", "--flags", "CHANNELS_LAST,COMPILE=unet", "--compare",
        "--data-dir", "/d", "--json", "/d/bench/run.json", "--chart", "/d/bench/run.png",
    ]  # fmt: skip
    older = bench_command("/py", req, options=set(), **where)  # type: ignore[arg-type]
    for option in ("--frames", "--flags", "--compare", "--data-dir"):
        assert option not in older


def test_output_lines_and_progress_bars() -> None:
    got: list[tuple[str, bool]] = []

    def emit(text: str, transient: bool) -> None:
        got.append((text, transient))

    rest = split_lines("one\ntwo\r\nbar 10%\rbar 60%\rbar 100%\nhalf", emit)
    assert got == [
        ("one", False),
        ("two", False),
        ("bar 10%", True),
        ("bar 60%", True),
        ("bar 100%", False),
    ]
    assert rest == "half"
    got.clear()
    assert split_lines("end\r", emit) == "end\r"  # a \n may follow in the next chunk
    assert got == []
