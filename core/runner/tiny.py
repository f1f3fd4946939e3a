"""Tiny random-weight pipelines in diffusers layout, built offline.

They have the real architectures' shapes of code (SDXL-style UNet with two text encoders,
SVD-style spatio-temporal UNet) at a few MB, so tests and the no-GPU demo exercise the real
diffusers code paths. They produce noise, not pictures.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Model ids the tiny models are saved under (``<dir>/<org>/<name>``).
TINY_SDXL = "orchard-tiny/sdxl"
TINY_SVD = "orchard-tiny/svd"
TINY_MODELS = (TINY_SDXL, TINY_SVD)


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def write_clip_tokenizer(out: Path) -> int:
    """A character-level CLIP BPE tokenizer (no merges). Returns the vocabulary size."""
    from transformers import CLIPTokenizer

    out.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (out / "vocab.json").write_text(json.dumps(vocab))
    (out / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt"), model_max_length=77)
    tok.save_pretrained(str(out))
    return len(vocab)


def _text_config(vocab_size: int, projection: bool) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=vocab_size,
        hidden_act="gelu",
        projection_dim=32 if projection else 512,
        max_position_embeddings=77,
    )


def make_tiny_sdxl(out: Path, seed: int = 0) -> Path:
    """An SDXL-layout text/image-to-image model: UNet, VAE (1/8 latents), two CLIP encoders."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerAncestralDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(seed)
    tok_dir = out / "_tok"
    vocab_size = write_clip_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir))
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        sample_size=64,
        in_channels=4,
        out_channels=4,
        # Cross-attention only at the lowest resolution keeps CPU steps cheap.
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=64,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16, 16, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=512,
        scaling_factor=0.13025,
        force_upcast=False,
    )
    scheduler = EulerAncestralDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="trailing",
        steps_offset=1,
    )
    pipe: Any = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(_text_config(vocab_size, projection=False)),
        text_encoder_2=CLIPTextModelWithProjection(_text_config(vocab_size, projection=True)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
    )
    pipe.save_pretrained(str(out), safe_serialization=True)
    _drop(tok_dir)
    return out


def make_tiny_svd(out: Path, seed: int = 0, num_frames: int = 14) -> Path:
    """An SVD-layout image-to-video model: spatio-temporal UNet, temporal VAE, CLIP vision."""
    import torch
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=8,
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        cross_attention_dim=32,
        num_attention_heads=(2, 4),
        projection_class_embeddings_input_dim=3 * 32,
        addition_time_embed_dim=32,
        num_frames=num_frames,
    )
    vae = AutoencoderKLTemporalDecoder(
        block_out_channels=(32, 32, 32, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        scaling_factor=0.18215,
        force_upcast=False,
    )
    from core.runner.archs import scheduler as published_scheduler

    scheduler = published_scheduler("svd-xt")  # SVD's own configuration
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            projection_dim=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=224,  # the SVD pipeline resizes its input to 224
            intermediate_size=37,
            patch_size=32,
        )
    )
    feature_extractor = CLIPImageProcessor(crop_size=32, size=32)
    pipe: Any = StableVideoDiffusionPipeline(
        vae=vae,
        image_encoder=image_encoder,
        unet=unet,
        scheduler=scheduler,
        feature_extractor=feature_extractor,
    )
    pipe.save_pretrained(str(out), safe_serialization=True)
    return out


def _drop(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def make_tiny_models(models_dir: Path, overwrite: bool = False) -> list[Path]:
    """Write both tiny models under ``models_dir`` as ``<org>/<name>``; skip existing ones."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    made = []
    for model_id, maker in ((TINY_SDXL, make_tiny_sdxl), (TINY_SVD, make_tiny_svd)):
        out = Path(models_dir) / model_id
        if (out / "model_index.json").exists() and not overwrite:
            log.info("tiny model %s already at %s", model_id, out)
        else:
            log.info("writing tiny model %s to %s", model_id, out)
            maker(out)
        made.append(out)
    return made
