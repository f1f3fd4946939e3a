"""Screenshots of each page of the real app, for docs/screenshots/.

``python -m app.gui.screenshots [--out docs/screenshots] [--models-dir DIR]`` runs the app
offscreen on a fresh data directory with the demo configuration (tiny models, CPU), starts
the node, runs an image and a video job, grabs every page while a longer job is in flight,
and last runs a benchmark of the tiny model (``orchard bench``, a subprocess) for the
Benchmark page. The tiny models are built (in a subprocess) when ``--models-dir`` lacks them.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parent.parent.parent
SIZE = (1280, 820)


def _png(width: int = 320, height: int = 180) -> bytes:
    from PIL import Image

    img = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


async def shoot(out: Path, models_dir: Path, work: Path) -> list[Path]:
    from app.gui.pages.bench import BenchPage
    from app.gui.pages.generate import GeneratePage
    from app.gui.pages.jobs import JobsPage
    from app.gui.session import NodeSession
    from app.gui.settings import AppSettings
    from app.gui.tasks import drain
    from app.gui.window import PAGE_KEYS, MainWindow
    from core.runners.local import free_port
    from widgets.generate_form import GenerationRequest

    settings = AppSettings(work / "settings.ini")
    session = NodeSession(settings, work / "data", models_dir, work / "aiModels.json")
    await session.open()
    window = MainWindow(session, settings, use_tray=False)
    window.resize(*SIZE)
    window.show()
    saved: list[Path] = []

    async def grab(name: str, page: str) -> None:
        window.show_page(page)
        await asyncio.sleep(0.4)  # the loop runs Qt's events meanwhile: layouts, paints
        path = out / f"{name}.png"
        window.grab().save(str(path))
        saved.append(path)

    await asyncio.sleep(1.5)  # a first telemetry sample or two
    await grab("node-stopped", "node")
    ok = await session.start_node("127.0.0.1", free_port())
    if not ok:
        raise SystemExit("the node did not start; see the log above")
    gen = window.pages["generate"]
    assert isinstance(gen, GeneratePage)
    await asyncio.sleep(2.5)
    image = work / "input.png"
    image.write_bytes(_png())
    # A finished image and a finished video, for the history, the chart and the preview.
    await gen.generator.generate(
        GenerationRequest(
            "text-to-image",
            "orchard-tiny/sdxl",
            {
                "model_id": "orchard-tiny/sdxl",
                "prompt": "an apple orchard",
                "width": 256,
                "height": 256,
                "num_inference_steps": 6,
                "seed": 7,
            },
        )
    )
    await gen.generator.generate(
        GenerationRequest(
            "image-to-video",
            "orchard-tiny/svd",
            {
                "model_id": "orchard-tiny/svd",
                "width": 256,
                "height": 144,
                "num_inference_steps": 4,
                "seed": 3,
            },
            str(image),
        )
    )
    await asyncio.sleep(1.0)
    # A long job in flight while the pages are grabbed.
    form = gen.form
    form.pipeline.setCurrentText("text-to-image")
    form.prompt.setText("an apple orchard at dawn, watercolour")
    form.width_edit.setText("1024")
    form.height_edit.setText("1024")
    form.steps.setText("40")
    form.seed.setText("42")
    window.show_page("generate")
    form.submit.click()
    for _ in range(100):
        await asyncio.sleep(0.1)
        if gen.preview.previews_seen >= 3:
            break
    await grab("generate", "generate")
    jobs = window.pages["jobs"]
    assert isinstance(jobs, JobsPage)
    await grab("jobs", "jobs")
    for key in PAGE_KEYS:
        if key not in ("generate", "jobs", "bench"):
            await grab(key, key)
    # The preview of the finished video, and the form refusing bad input.
    while gen.form.submit.text() != "Generate":
        await asyncio.sleep(0.2)
    form.pipeline.setCurrentText("image-to-video")
    form.image.setText(str(image))
    form.width_edit.setText("500")
    form.steps.setText("four")
    form.submit.click()
    await grab("generate-invalid", "generate")
    form.steps.setText("4")
    form.width_edit.setText("256")
    form.height_edit.setText("144")
    form.submit.click()
    for _ in range(200):
        await asyncio.sleep(0.1)
        if gen.preview.media is not None:
            break
    await asyncio.sleep(0.5)
    await grab("generate-video", "generate")
    # A benchmark of the tiny model on the CPU, optimised and plain, its result shown (the
    # node runs on the CPU too: the page warns about that).
    bench = window.pages["bench"]
    assert isinstance(bench, BenchPage)
    window.show_page("bench")
    for _ in range(300):
        if bench.options is not None:
            break
        await asyncio.sleep(0.1)
    view = bench.view
    view.device.setCurrentIndex(view.device.findData("cpu"))
    view.select("text-to-image", "orchard-tiny/sdxl")
    view.width_spin.setValue(256)
    view.height_spin.setValue(256)
    view.steps.setValue(4)
    view.runs.setValue(8)
    view.concurrency.setText("1,2")
    view.paths["runner"].setChecked(True)
    view.flags.setText("CHANNELS_LAST,FUSE_QKV")
    view.flags.setCursorPosition(0)
    view.compare.setChecked(True)
    view.run_button.click()
    for _ in range(3000):
        await asyncio.sleep(0.2)
        if not bench.running:
            break
    await asyncio.sleep(0.5)
    await grab("bench", "bench")
    # The Speed flags dialog of the Models page, as an operator fills it in.
    from widgets.flags_dialog import FlagsDialog

    dialog = FlagsDialog(
        {"CHANNELS_LAST": True, "COMPILE": "unet", "BATCH": "8", "SFAST": True},
        "text-to-image · orchard-tiny/sdxl",
        parent=window,
    )
    dialog.show()
    await asyncio.sleep(0.5)
    path = out / "flags.png"
    dialog.grab().save(str(path))
    saved.append(path)
    dialog.reject()
    window.request_quit()
    await window.shutdown()
    await drain()
    return saved


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    p.add_argument("--models-dir", type=Path, default=ROOT / ".tiny-models")
    args = p.parse_args(argv)
    from app.gui.main import setup_logging

    setup_logging()
    import qasync
    from PySide6.QtWidgets import QApplication

    from app.gui.window import apply_style

    args.out.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    apply_style(app)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    try:
        with tempfile.TemporaryDirectory(prefix="orchard-shots-") as tmp:
            saved = loop.run_until_complete(shoot(args.out, args.models_dir, Path(tmp)))
        for path in saved:
            print(path)
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
