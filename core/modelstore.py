"""Where a model id lives on disk. Never downloads.

A model id is a Hugging Face repo id (``org/name``), as in aiModels.json. Under a models
directory it resolves to a diffusers folder ``<dir>/org/name`` or to the Hugging Face cache
entry ``<dir>/models--org--name/snapshots/<revision>/`` (the layout Livepeer's runner mounts
at ``/models``). An absolute path to a diffusers folder is accepted as well.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.errors import ModelNotFound

MODEL_INDEX = "model_index.json"


def cache_folder_name(model_id: str) -> str:
    """``org/name`` -> ``models--org--name`` (huggingface_hub's layout)."""
    return "models--" + model_id.replace("/", "--")


def candidates(models_dir: Path, model_id: str) -> list[Path]:
    """Every place ``model_id`` may live, in the order they are tried."""
    if not model_id:
        return []
    as_path = Path(model_id)
    if as_path.is_absolute():
        return [as_path]
    out = [models_dir / model_id]
    cache = models_dir / cache_folder_name(model_id)
    snapshots = cache / "snapshots"
    ref = cache / "refs" / "main"
    if ref.is_file():
        out.append(snapshots / ref.read_text().strip())
    if snapshots.is_dir():
        out.extend(sorted(p for p in snapshots.iterdir() if p.is_dir() and p not in out))
    else:
        out.append(snapshots / "<revision>")
    # A hub cache under the conventional sub-folder, as HF_HOME/hub has it.
    hub = models_dir / "hub" / cache_folder_name(model_id) / "snapshots"
    if hub.is_dir():
        out.extend(sorted(p for p in hub.iterdir() if p.is_dir()))
    return out


def resolve(models_dir: Path, model_id: str) -> Path:
    """The diffusers folder of ``model_id``, or ModelNotFound naming every path tried."""
    if not model_id:
        raise ModelNotFound("model_id is empty; name a model such as 'stabilityai/sdxl-turbo'")
    if ".." in Path(model_id).parts:
        raise ModelNotFound(f"model_id {model_id!r} may not contain '..'")
    tried = candidates(Path(models_dir), model_id)
    for path in tried:
        if (path / MODEL_INDEX).is_file():
            return path
    looked = ", ".join(str(p) for p in tried)
    raise ModelNotFound(
        f"model {model_id!r} is not on disk (looked in: {looked}); download it into the "
        f"models directory {models_dir} (Hugging Face cache layout or a diffusers folder)"
    )


def read_model_index(path: Path) -> dict[str, object]:
    data = json.loads((path / MODEL_INDEX).read_text())
    if not isinstance(data, dict):
        raise ModelNotFound(f"{path / MODEL_INDEX} is not a diffusers model index")
    return data
