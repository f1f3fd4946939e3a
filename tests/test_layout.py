"""The layering rule (app -> widgets -> core) and a CLI that starts without heavy imports."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.conftest import ROOT

CHECK_CORE = """
import importlib, pkgutil, sys
import core
for m in pkgutil.walk_packages(core.__path__, "core."):
    if m.name.startswith("core.runner"):
        continue  # the runner process may import torch; it never imports Qt either (below)
    importlib.import_module(m.name)
heavy = {"PySide6", "qasync", "torch", "diffusers"}
bad = sorted(k for k in sys.modules if k.split(".")[0] in heavy)
print(",".join(bad))
"""

CHECK_RUNNER = """
import importlib, pkgutil, sys
import core.runner
for m in pkgutil.walk_packages(core.runner.__path__, "core.runner."):
    importlib.import_module(m.name)
print(",".join(sorted(k for k in sys.modules if k.split(".")[0] in {"PySide6", "qasync"})))
"""


def run_py(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""


def test_core_outside_the_runner_loads_no_qt_and_no_torch() -> None:
    assert run_py(CHECK_CORE) == ""


def test_runner_loads_no_qt() -> None:
    assert run_py(CHECK_RUNNER) == ""


def test_help_is_fast_and_imports_no_torch() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from app.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: main(['--help'])\n"
        "    except SystemExit: pass\n"
        "heavy = ('torch', 'diffusers', 'PySide6', 'fastapi')\n"
        "print(','.join(k for k in heavy if k in sys.modules))"
    )
    assert run_py(code) == ""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "app", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    elapsed = time.perf_counter() - t0
    assert "runner" in out.stdout and "models" in out.stdout
    assert elapsed < 1.0, f"orchard --help took {elapsed:.2f}s"


def test_cli_rejects_bad_arguments_with_a_message() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "app", "runner", "--warm", "text-to-imgae:a/b"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 2
    assert "unknown pipeline 'text-to-imgae'" in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "app", "runner", "--device", "gpu0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 2 and "device must be cpu or cuda:N" in out.stderr
