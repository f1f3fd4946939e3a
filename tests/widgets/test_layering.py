"""app -> widgets -> core: widgets never import the app, and loading every widget (and the
app's window module) loads no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_widgets_do_not_import_the_app() -> None:
    for path in sorted((ROOT / "widgets").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] != "app", f"{path.name} imports {name}"


def test_the_gui_modules_load_no_torch() -> None:
    code = (
        "import importlib, pkgutil, sys, widgets, app.gui, app.gui.pages\n"
        "for pkg in (widgets, app.gui, app.gui.pages):\n"
        "    for m in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "print(','.join(k for k in ('torch', 'diffusers', 'transformers') if k in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "", out.stdout


def test_one_public_widget_per_module() -> None:
    for path in sorted(Path(ROOT / "widgets").glob("[!_]*.py")):
        tree = ast.parse(path.read_text())
        public = [
            n.name
            for n in tree.body
            if isinstance(n, ast.ClassDef)
            and not n.name.startswith("_")
            and any(isinstance(b, ast.Name) and b.id.startswith(("Q", "Toggle")) for b in n.bases)
        ]
        assert len(public) == 1, f"{path.name}: {public}"
