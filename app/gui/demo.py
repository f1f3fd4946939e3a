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
from pathlib import Path

from core.demo import DEMO_PREFIX, TINY_SDXL, TINY_SVD, demo_config, is_demo

__all__ = [
    "DEMO_NOTE",
    "DEMO_PREFIX",
    "DemoError",
    "demo_config",
    "is_demo",
    "make_tiny",
    "tiny_present",
]
from core.errors import OrchardError
from core.modelstore import MODEL_INDEX
from core.runners.local import SOURCE_ROOT

log = logging.getLogger(__name__)

DEMO_NOTE = (
    "Demo configuration: tiny local models whose output is noise, so you can see the whole "
    "path (node, job, preview, fee) before downloading gigabytes."
)


class DemoError(OrchardError):
    """The demo models could not be built."""


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
