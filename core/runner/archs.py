"""Full-size architectures from their published configurations, with random weights.

Same shapes and cost as the real models (SDXL-Turbo, SD-Turbo, SVD-XT) without a download,
so anyone can benchmark a GPU offline. ``build_pipeline(arch, device="meta")`` builds the
structure without allocating memory (used to check parameter counts); ``save_pipeline``
writes a diffusers folder that the runner loads like any model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from core.runner.tiny import write_clip_tokenizer

ARCHS = ("sdxl-turbo", "sd-turbo", "svd-xt")

#: Published parameter counts, in millions, per component.
PUBLISHED_PARAMS_M: dict[str, dict[str, int]] = {
    "sdxl-turbo": {"unet": 2567, "text_encoder": 123, "text_encoder_2": 695, "vae": 84},
    "sd-turbo": {"unet": 866, "text_encoder": 340, "vae": 84},
    "svd-xt": {"unet": 1525, "image_encoder": 632, "vae": 98},
}

_CLIP_VOCAB = 49408


def _clip_text(hidden: int, layers: int, heads: int, inter: int, proj: int, act: str) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=_CLIP_VOCAB,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=proj,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )


def _sdxl_vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=2,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=1024,
        scaling_factor=0.13025,
        force_upcast=False,
    )


def scheduler(arch: str) -> Any:
    """The published scheduler configuration (Euler; SVD's continuous v-prediction)."""
    from diffusers import EulerDiscreteScheduler

    if arch == "svd-xt":
        return EulerDiscreteScheduler(
            beta_schedule="scaled_linear",
            beta_start=0.00085,
            beta_end=0.012,
            interpolation_type="linear",
            num_train_timesteps=1000,
            prediction_type="v_prediction",
            sigma_max=700.0,
            sigma_min=0.002,
            steps_offset=1,
            timestep_spacing="leading",
            timestep_type="continuous",
            use_karras_sigmas=True,
        )
    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="trailing",
        steps_offset=1,
    )


def components(arch: str) -> dict[str, Any]:
    """The pipeline's modules with random weights (on torch's current default device)."""
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        UNet2DConditionModel,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import (
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    if arch == "sdxl-turbo":
        unet = UNet2DConditionModel(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            layers_per_block=2,
            block_out_channels=(320, 640, 1280),
            attention_head_dim=(5, 10, 20),
            transformer_layers_per_block=(1, 2, 10),
            cross_attention_dim=2048,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        )
        return {
            "unet": unet,
            "text_encoder": CLIPTextModel(_clip_text(768, 12, 12, 3072, 768, "quick_gelu")),
            "text_encoder_2": CLIPTextModelWithProjection(
                _clip_text(1280, 32, 20, 5120, 1280, "gelu")
            ),
            "vae": _sdxl_vae(),
        }
    if arch == "sd-turbo":
        unet = UNet2DConditionModel(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            attention_head_dim=(5, 10, 20, 20),
            cross_attention_dim=1024,
            use_linear_projection=True,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        )
        vae = _sdxl_vae()
        vae.register_to_config(scaling_factor=0.18215)
        return {
            "unet": unet,
            "text_encoder": CLIPTextModel(_clip_text(1024, 23, 16, 4096, 512, "gelu")),
            "vae": vae,
        }
    if arch == "svd-xt":
        vision = CLIPVisionConfig(
            hidden_size=1280,
            intermediate_size=5120,
            num_hidden_layers=32,
            num_attention_heads=16,
            image_size=224,
            patch_size=14,
            projection_dim=1024,
            hidden_act="gelu",
        )
        return {
            "unet": UNetSpatioTemporalConditionModel(num_frames=25),
            "image_encoder": CLIPVisionModelWithProjection(vision),
            "vae": AutoencoderKLTemporalDecoder(
                block_out_channels=(128, 256, 512, 512),
                layers_per_block=2,
                latent_channels=4,
                down_block_types=("DownEncoderBlock2D",) * 4,
            ),
        }
    raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")


def param_counts(arch: str) -> dict[str, int]:
    """Parameters per component, counted on the meta device (no memory is allocated)."""
    with torch.device("meta"):
        parts = components(arch)
    return {name: sum(p.numel() for p in m.parameters()) for name, m in parts.items()}


def save_pipeline(arch: str, out: Path, dtype: torch.dtype = torch.float16, seed: int = 0) -> Path:
    """Write ``arch`` with random weights as a diffusers folder (several GB). Blocking."""
    from diffusers import (
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        StableVideoDiffusionPipeline,
    )
    from transformers import CLIPImageProcessor, CLIPTokenizer

    torch.manual_seed(seed)
    parts = components(arch)
    for m in parts.values():
        m.to(dtype)
    parts["scheduler"] = scheduler(arch)
    pipe: Any
    if arch == "svd-xt":
        pipe = StableVideoDiffusionPipeline(
            feature_extractor=CLIPImageProcessor(crop_size=224, size=224), **parts
        )
    else:
        write_clip_tokenizer(out / "_tok")
        tok = CLIPTokenizer.from_pretrained(str(out / "_tok"))
        if arch == "sdxl-turbo":
            pipe = StableDiffusionXLPipeline(tokenizer=tok, tokenizer_2=tok, **parts)
        else:
            pipe = StableDiffusionPipeline(
                tokenizer=tok,
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
                **parts,
            )
    pipe.save_pretrained(str(out), safe_serialization=True)
    import shutil

    shutil.rmtree(out / "_tok", ignore_errors=True)
    return out
