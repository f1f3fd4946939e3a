"""First start with nothing configured: the tiny demo models and a configuration on them.

The tiny models are built by ``python -m app models make-tiny DIR`` in a subprocess: building
them imports torch, which never loads in the GUI process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

from app.gui.catalogue import TINY_SDXL, TINY_SVD
from core.config import ModelEntry, ModelsConfig
from core.errors import OrchardError
from core.modelstore import MODEL_INDEX
from core.runners.local import SOURCE_ROOT

log = logging.getLogger(__name__)

DEMO_PREFIX = "orchard-tiny/"
DEMO_NOTE = (
    "Demo configuration: tiny local models whose output is noise, so you can see the whole "
    "path (node, job, preview, fee) before downloading gigabytes."
)


class DemoError(OrchardError):
    """The demo models could not be built."""


def demo_config(source: str) -> ModelsConfig:
    """Text-to-image and image-to-image on tiny SDXL, image-to-video on tiny SVD, warm, with
    Livepeer-like prices (wei per pixel)."""
    entries = [
        ModelEntry("text-to-image", TINY_SDXL, warm=True, price_per_unit=Fraction(4768371)),
        ModelEntry("image-to-image", TINY_SDXL, warm=True, price_per_unit=Fraction(4768371)),
        ModelEntry("image-to-video", TINY_SVD, warm=True, price_per_unit=Fraction(3390842)),
    ]
    return ModelsConfig.from_entries(entries, source=source)


def is_demo(config: ModelsConfig) -> bool:
    """Whether every model of ``config`` is a demo model (and there is at least one)."""
    return bool(config.entries) and all(e.model_id.startswith(DEMO_PREFIX) for e in config.entries)


def tiny_present(models_dir: Path) -> bool:
    """Blocking: whether both tiny models are in ``models_dir``."""
    return all((models_dir / m / MODEL_INDEX).is_file() for m in (TINY_SDXL, TINY_SVD))


def make_tiny_command(models_dir: Path, python: str = sys.executable) -> list[str]:
    return [python, "-m", "app", "models", "make-tiny", str(models_dir)]


async def make_tiny(models_dir: Path, python: str = sys.executable) -> None:
    """Build the tiny models into ``models_dir`` in a subprocess; DemoError says why not."""
    env = dict(os.environ)
    if (SOURCE_ROOT / "pyproject.toml").is_file():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE_ROOT), env.get("PYTHONPATH")]))
    cmd = make_tiny_command(models_dir, python)
    log.info("building the tiny demo models: %s", " ".join(cmd))

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=600
        )

    try:
        done = await asyncio.to_thread(run)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DemoError(f"could not build the demo models: {exc}") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        hint = ""
        if "No module named" in tail:
            hint = " The runner extra is missing: pip install 'orchard[runner]'."
        raise DemoError(f"building the demo models failed ({done.returncode}).{hint}\n{tail}")
