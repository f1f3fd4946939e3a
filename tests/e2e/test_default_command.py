"""``orchard`` with no command and no display: the node runs headless on the demo
configuration (tiny models made on first start, free mode), as the README's `make run` does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import ROOT


def test_no_display_runs_the_demo_node(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")
    }
    env["ORCHARD_HOME"] = str(tmp_path)
    log = tmp_path / "orchard.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app"], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get("http://127.0.0.1:8935/health", timeout=1).json()["status"] == "OK":
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        r = httpx.post(
            "http://127.0.0.1:8935/text-to-image",
            timeout=60,
            json={"prompt": "a cat", "width": 64, "height": 64, "num_inference_steps": 1},
        )
        assert r.status_code == 200, r.text
        text = log.read_text()
        assert "demo configuration" in text and "noise" in text
        assert (tmp_path / "models" / "orchard-tiny" / "sdxl" / "model_index.json").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
