"""First start with nothing configured: the demo configuration on the tiny models, labelled
as noise output, built in a subprocess when missing (torch never loads here)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from app.gui import demo
from core import config
from tests.app.conftest import Env, run


def link_tiny(tiny_models: Path, into: Path) -> Path:
    for model_id in ("orchard-tiny/sdxl", "orchard-tiny/svd"):
        (into / model_id).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(tiny_models / model_id, into / model_id)
    return into


def test_first_start_writes_the_demo_configuration(env: Env, tmp_path: Path) -> None:
    env.models_dir = link_tiny(env.models_dir, tmp_path / "models")
    assert not env.config_path.exists()

    async def body() -> None:
        window = await env.window()
        session = window.session
        assert session.first_start and session.is_demo and session.free
        saved = config.load(env.config_path)
        assert [(e.pipeline, e.model_id, e.warm) for e in saved.entries] == [
            ("text-to-image", "orchard-tiny/sdxl", True),
            ("image-to-image", "orchard-tiny/sdxl", True),
            ("image-to-video", "orchard-tiny/svd", True),
        ]
        assert all(e.price_per_unit for e in saved.entries)
        node_page, models_page = window.pages["node"], window.pages["models"]
        for banner in (node_page.demo_banner, models_page.demo_banner):
            assert not banner.isHidden() and "output is noise" in banner.text()
        task = session.ensure_demo_models()
        assert task is not None
        await task  # the models are there: nothing is built
        assert session.demo_error is None
        assert env.settings().config_path == env.config_path
        await env.close(window)
        # the second start reads the file it wrote, and is no first start
        window = await env.window()
        assert not window.session.first_start and window.session.is_demo
        await env.close(window)

    env.run(body())


def test_demo_models_are_built_in_a_subprocess(tmp_path: Path, qloop) -> None:  # type: ignore[no-untyped-def]
    assert demo.make_tiny_command(tmp_path, "py") == [
        "py",
        "-m",
        "app",
        "models",
        "make-tiny",
        str(tmp_path),
    ]
    torch_before = "torch" in sys.modules
    run(qloop, demo.make_tiny(tmp_path / "models"), timeout=300)
    assert demo.tiny_present(tmp_path / "models")
    index = json.loads((tmp_path / "models/orchard-tiny/sdxl/model_index.json").read_text())
    assert index["_class_name"].startswith("StableDiffusionXL")
    assert torch_before or "torch" not in sys.modules


def test_a_failing_build_says_why(tmp_path: Path, qloop) -> None:  # type: ignore[no-untyped-def]
    """An install without the runner extra: the build's own error, and what to install."""
    python = tmp_path / "python"
    python.write_text(
        "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'torch'\" >&2\nexit 1\n"
    )
    python.chmod(0o755)
    try:
        run(qloop, demo.make_tiny(tmp_path / "models", str(python)), timeout=60)
    except demo.DemoError as exc:
        assert "building the demo models failed (1)" in exc.msg
        assert "pip install 'orchard[runner]'" in exc.msg
        assert "No module named 'torch'" in exc.msg
    else:
        raise AssertionError("the build should fail")
