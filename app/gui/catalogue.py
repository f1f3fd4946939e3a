"""The catalogue of well-known models (``resources/catalogue.json``) and what is on disk."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from app.gui.resources import CATALOGUE
from core import modelstore
from core.errors import ModelNotFound
from widgets.model_catalogue import CatalogueRow

log = logging.getLogger(__name__)

#: Model ids of the tiny demo models (core.runner.tiny, without importing it: torch).
TINY_SDXL = "orchard-tiny/sdxl"
TINY_SVD = "orchard-tiny/svd"


@dataclass(frozen=True)
class CatalogueModel:
    name: str
    repo_id: str
    pipelines: tuple[str, ...]
    family: str
    size_bytes: int
    demo: bool = False
    notes: str = ""


@dataclass(frozen=True)
class Catalogue:
    models: tuple[CatalogueModel, ...]
    files: tuple[str, ...]  # download patterns

    def get(self, repo_id: str) -> CatalogueModel | None:
        return next((m for m in self.models if m.repo_id == repo_id), None)


def load_catalogue(path: Path = CATALOGUE) -> Catalogue:
    """Read the catalogue (blocking: a small file). Without it, an empty catalogue."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("no model catalogue (%s): %s", path, exc)
        return Catalogue((), ())
    models = tuple(
        CatalogueModel(
            name=m["name"],
            repo_id=m["repo_id"],
            pipelines=tuple(m["pipelines"]),
            family=m["family"],
            size_bytes=int(m.get("size_bytes", 0)),
            demo=bool(m.get("demo", False)),
            notes=m.get("notes", ""),
        )
        for m in data["models"]
    )
    return Catalogue(models, tuple(data.get("files", ())))


def on_disk(models_dir: Path, repo_id: str) -> int | None:
    """Bytes of ``repo_id``'s files under ``models_dir``, or None if it is not there. Blocking.

    Symlinks are followed (the Hugging Face cache links snapshots to blobs).
    """
    try:
        folder = modelstore.resolve(models_dir, repo_id)
    except ModelNotFound:
        return None
    total = 0
    for root, _dirs, files in os.walk(folder, followlinks=True):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def scan(models_dir: Path, catalogue: Catalogue) -> list[CatalogueRow]:
    """Catalogue rows with what is on disk now. Blocking: run it in a thread."""
    return [
        CatalogueRow(
            repo_id=m.repo_id,
            name=m.name,
            pipelines=m.pipelines,
            family=m.family,
            size_bytes=m.size_bytes,
            on_disk=on_disk(models_dir, m.repo_id),
            demo=m.demo,
            notes=m.notes,
        )
        for m in catalogue.models
    ]
