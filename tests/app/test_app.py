"""The real main window on CPU with the tiny models: a node, a test generation with step
previews and the final image in the preview pane, a clean stop, and no torch in this
process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from app.gui import main as gui_main
from app.gui.pages.generate import GeneratePage
from app.gui.pages.jobs import JobsPage
from app.gui.pages.node import NodePage
from core.runners.local import free_port
from tests.app.conftest import TINY_CONFIG, Env, pid_alive, wait_until
from tests.conftest import ROOT


def test_a_generation_from_the_window_end_to_end(env: Env) -> None:
    torch_before = "torch" in sys.modules
    env.write_config(TINY_CONFIG)
    env.run(end_to_end(env))
    assert torch_before or "torch" not in sys.modules


async def end_to_end(env: Env) -> None:
    window = await env.window()
    session = window.session
    assert session.free  # the tiny models' configuration starts in free mode
    node_page = window.pages["node"]
    assert isinstance(node_page, NodePage)
    window.show_page("node")
    node_page.panel.port.setValue(free_port())
    node_page.panel.start_button.click()
    await wait_until(lambda: session.state in ("running", "failed"), 120, "the node")
    assert session.state == "running", node_page.panel.error_text.text()
    pids = session.runner_pids()
    assert pids and all(pid_alive(p) for p in pids)
    assert node_page.panel.status.text() == "Running"
    await wait_until(lambda: node_page.panel.offers.topLevelItemCount() == 2, 5, "/info")

    gen = window.pages["generate"]
    assert isinstance(gen, GeneratePage)
    window.show_page("generate")
    form = gen.form
    assert form.model.currentText() == "orchard-tiny/sdxl"
    form.prompt.setText("an apple orchard")
    form.width_edit.setText("128")
    form.height_edit.setText("128")
    form.steps.setText("6")
    form.seed.setText("1")
    form.submit.click()
    assert form.error.isHidden()
    await wait_until(lambda: gen.preview.media is not None, 60, "the final image")
    preview = gen.preview
    assert preview.previews_seen >= 1  # step previews arrived before the image
    assert preview.state == "done" and preview.steps == 6
    assert [(f.width(), f.height()) for f in preview.frames] == [(128, 128)]
    assert preview.outputs and preview.outputs[0].endswith(".png")
    assert "done in" in preview.status.text()
    await wait_until(lambda: form.submit.text() == "Generate", 5, "the form to be ready")

    jobs = window.pages["jobs"]
    assert isinstance(jobs, JobsPage)
    row = jobs.list.rows()[0]
    assert (row.capability, row.model_id, row.state, row.device) == (
        "text-to-image",
        "orchard-tiny/sdxl",
        "done",
        "CPU",
    )
    assert jobs.preview.job_id == row.job_id  # the jobs page followed it too
    assert window.pages["gpus"].panel.cards[-1].vram.models  # footprints on the CPU card

    # closing while the node runs asks first; "cancel" keeps everything as it is
    window.ask_on_close = lambda: "cancel"
    window.close()
    assert window.isVisible() and session.state == "running"
    window.ask_on_close = lambda: "quit"
    quit_asked: list[bool] = []
    window.quit_requested.connect(lambda: quit_asked.append(True))
    window.close()
    await wait_until(lambda: bool(quit_asked), 5, "quit_requested")
    await env.close(window)  # what the app does on quit_requested: shutdown()
    assert session.state == "stopped"
    for pid in pids:
        assert not pid_alive(pid), f"runner {pid} outlived the node"


def test_gui_process_never_imports_torch(tiny_models) -> None:  # type: ignore[no-untyped-def]
    """The same path in a fresh interpreter, where any import of torch would show; test
    generations go through the in-process gateway, in free mode and then paid with tickets."""
    code = textwrap.dedent(
        f"""
        import asyncio, os, sys, tempfile
        from pathlib import Path
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        import qasync
        from PySide6.QtWidgets import QApplication
        from app.gui.session import NodeSession
        from app.gui.settings import AppSettings
        from app.gui.window import MainWindow
        from core.runners.local import free_port
        from widgets.generate_form import GenerationRequest
        app = QApplication([])
        loop = qasync.QEventLoop(app)
        asyncio.set_event_loop(loop)
        tmp = Path(tempfile.mkdtemp())
        async def flow():
            settings = AppSettings(tmp / "s.ini")
            session = NodeSession(settings, tmp / "d", Path({str(tiny_models)!r}),
                                  tmp / "aiModels.json")
            await session.open()
            window = MainWindow(session, settings, use_tray=False)
            window.show()
            assert await session.start_node("127.0.0.1", free_port())
            req = GenerationRequest("text-to-image", "orchard-tiny/sdxl",
                {{"model_id": "orchard-tiny/sdxl", "prompt": "a", "width": 64, "height": 64,
                  "num_inference_steps": 2}})
            await window.generator.generate(req)
            # paid mode: the app's own gateway pays its node with tickets (off-chain deposit)
            await session.stop_node()
            session.set_free(False)
            assert await session.start_node("127.0.0.1", free_port())
            await window.generator.generate(req)
            import httpx
            async with httpx.AsyncClient() as c:
                earned = (await c.get(session.url() + "/earnings")).json()
            assert earned["free"] is False and earned["jobs"] == 1, earned
            assert int(earned["total_fees"]) > 0, earned
            window.request_quit()
            await window.shutdown()
        loop.run_until_complete(flow())
        loop.close()
        heavy = ("torch", "diffusers", "transformers")
        print("HEAVY=" + ",".join(m for m in heavy if m in sys.modules))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=180
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "HEAVY=\n" in out.stdout + "\n", out.stdout


def test_without_a_display_it_says_how_to_run_headless(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert gui_main.main([]) == 2
    err = capsys.readouterr().err
    assert "orchard node --models aiModels.json" in err and "DISPLAY" in err


def test_display_detection() -> None:
    assert not gui_main.display_available({}, "linux")
    assert gui_main.display_available({"DISPLAY": ":0"}, "linux")
    assert gui_main.display_available({"WAYLAND_DISPLAY": "wayland-0"}, "linux")
    assert gui_main.display_available({"QT_QPA_PLATFORM": "offscreen"}, "linux")
    assert gui_main.display_available({}, "darwin")
    assert gui_main.display_available({}, "win32")


def test_a_failed_start_is_shown_with_what_to_do(env: Env) -> None:
    env.write_config([{"pipeline": "text-to-image", "model_id": "org/missing", "warm": True}])

    async def body() -> None:
        window = await env.window()
        window.session.set_free(True)
        panel = window.pages["node"].panel
        panel.port.setValue(free_port())
        started = time.monotonic()
        panel.start_button.click()
        await wait_until(lambda: window.session.state == "failed", 30, "the failure")
        assert time.monotonic() - started < 15  # it fails before any runner starts
        assert not panel.error_box.isHidden()
        assert "org/missing" in panel.error_text.text()
        assert "not on disk" in panel.error_text.text()
        assert "Download the model on the Models page" in panel.error_action.text()
        assert "failed" in window.node_status.text()
        assert window.session.runner_pids() == []
        await env.close(window)

    env.run(body())


def test_main_opens_the_window_and_quits_cleanly(tmp_path, tiny_models) -> None:  # type: ignore[no-untyped-def]
    """``app.gui.main.main`` as ``orchard`` runs it: the window opens, Quit closes it, the
    loop and its threads end, exit status 0 (no abort at interpreter exit)."""
    code = textwrap.dedent(
        f"""
        import sys
        from PySide6.QtCore import QTimer
        from PySide6.QtWidgets import QApplication
        from app.gui import main as gui_main
        from app.gui.window import MainWindow
        app = QApplication(sys.argv[:1])
        seen = []
        def poll():
            wins = [w for w in app.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
            if wins:
                seen.append(wins[0].windowTitle())
                wins[0].request_quit()
            else:
                QTimer.singleShot(50, poll)
        QTimer.singleShot(0, poll)
        code = gui_main.main(["--data-dir", {str(tmp_path / "d")!r},
                              "--settings", {str(tmp_path / "s.ini")!r},
                              "--config", {str(tmp_path / "aiModels.json")!r},
                              "--models-dir", {str(tiny_models)!r}])
        print("TITLE=" + ",".join(seen), "CODE=" + str(code))
        """
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "TITLE=Orchard CODE=0" in out.stdout
    assert (tmp_path / "aiModels.json").exists()  # first start: the demo configuration
