"""Model ids resolve to diffusers folders or Hugging Face cache entries, never downloads."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import modelstore
from core.errors import ModelNotFound


def diffusers_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "model_index.json").write_text('{"_class_name": "StableDiffusionXLPipeline"}')
    return path


def test_diffusers_folder(tmp_path: Path) -> None:
    folder = diffusers_folder(tmp_path / "stabilityai" / "sdxl-turbo")
    assert modelstore.resolve(tmp_path, "stabilityai/sdxl-turbo") == folder
    assert modelstore.read_model_index(folder)["_class_name"] == "StableDiffusionXLPipeline"


def test_hugging_face_cache_follows_refs_main(tmp_path: Path) -> None:
    cache = tmp_path / "models--stabilityai--sdxl-turbo"
    diffusers_folder(cache / "snapshots" / "old")
    new = diffusers_folder(cache / "snapshots" / "f00d")
    (cache / "refs").mkdir()
    (cache / "refs" / "main").write_text("f00d\n")
    assert modelstore.resolve(tmp_path, "stabilityai/sdxl-turbo") == new


def test_hugging_face_cache_without_refs_and_hub_subfolder(tmp_path: Path) -> None:
    only = diffusers_folder(tmp_path / "models--a--b" / "snapshots" / "1234")
    assert modelstore.resolve(tmp_path, "a/b") == only
    hub = diffusers_folder(tmp_path / "hub" / "models--c--d" / "snapshots" / "99")
    assert modelstore.resolve(tmp_path, "c/d") == hub


def test_absolute_path(tmp_path: Path) -> None:
    folder = diffusers_folder(tmp_path / "anywhere")
    assert modelstore.resolve(tmp_path / "models", str(folder)) == folder


def test_missing_model_names_every_place_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound) as err:
        modelstore.resolve(tmp_path, "acme/missing")
    msg = err.value.msg
    assert str(tmp_path / "acme" / "missing") in msg
    assert str(tmp_path / "models--acme--missing" / "snapshots") in msg
    assert err.value.status == 400


@pytest.mark.parametrize("model_id", ["", "../etc", "a/../../b"])
def test_refuses_empty_and_escaping_ids(tmp_path: Path, model_id: str) -> None:
    with pytest.raises(ModelNotFound):
        modelstore.resolve(tmp_path, model_id)
