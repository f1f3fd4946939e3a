"""Where the app's files are: the stylesheet, icons and the model catalogue."""

from __future__ import annotations

from pathlib import Path

#: ``resources/`` of the source tree (packaging copies it beside the packages).
RESOURCES = Path(__file__).resolve().parent.parent.parent / "resources"
ICONS = RESOURCES / "icons"
STYLE = RESOURCES / "style.qss"
CATALOGUE = RESOURCES / "catalogue.json"


def icon_path(name: str) -> str:
    return str(ICONS / f"{name}.svg")
