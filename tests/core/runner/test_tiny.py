"""``orchard models make-tiny`` writes loadable diffusers folders of a few MB."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_make_tiny_cli_writes_both_models(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "app", "models", "make-tiny", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    sdxl, svd = tmp_path / "orchard-tiny" / "sdxl", tmp_path / "orchard-tiny" / "svd"
    assert out.stdout.split() == [str(sdxl), str(svd)]
    assert json.loads((sdxl / "model_index.json").read_text())["_class_name"] == (
        "StableDiffusionXLPipeline"
    )
    assert json.loads((svd / "model_index.json").read_text())["_class_name"] == (
        "StableVideoDiffusionPipeline"
    )
    for folder in (sdxl, svd):
        assert 1_000_000 < folder_bytes(folder) < 20_000_000
    assert (sdxl / "tokenizer" / "tokenizer_config.json").exists()
    assert (sdxl / "tokenizer_2" / "tokenizer_config.json").exists()
    # A second run keeps what is there.
    unet = sdxl / "unet" / "diffusion_pytorch_model.safetensors"
    before = unet.stat().st_mtime_ns
    again = subprocess.run(
        [sys.executable, "-m", "app", "models", "make-tiny", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert again.returncode == 0
    assert unet.stat().st_mtime_ns == before


def test_tokenizer_round_trips_text(tiny_models: Path) -> None:
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(
        str(tiny_models / "orchard-tiny" / "sdxl"), subfolder="tokenizer"
    )
    ids = tok("a red fox")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.decode(ids, skip_special_tokens=True).replace(" ", "") == "aredfox"
