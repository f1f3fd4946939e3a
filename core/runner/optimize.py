"""Apply a model's optimisation flags (``core.optimizations``) to a loaded diffusers pipeline.

Each optimisation keeps outputs equal to the plain path up to floating-point noise; ``orchard
bench --compare`` checks that numerically on the same inputs. The ones that need CUDA (fp16
VAE, pinned staging buffers, CUDA graphs) are reported as skipped on the CPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from core.optimizations import IGNORED_FLAGS, Optimizations

log = logging.getLogger(__name__)

#: Bytes per pinned staging buffer; two of them alternate so copying into one overlaps the
#: transfer out of the other.
STAGING_BYTES = 256 * 2**20


def compile_cache_dir() -> Path:
    """Where torch.compile keeps its caches, so a restarted runner reuses compiled kernels."""
    explicit = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "orchard" / "torch-compile"


def use_persistent_compile_cache() -> Path:
    """Point inductor's caches (FX graphs, autotuning) at :func:`compile_cache_dir`."""
    path = compile_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(path))
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    return path


def uses_cuda_graphs(mode: str | None) -> bool:
    return mode in {"reduce-overhead", "max-autotune"}


def default_compile_mode(device: torch.device) -> str:
    return "reduce-overhead" if device.type == "cuda" else "default"


def _modules_to_compile(pipe: Any, which: str) -> Iterator[tuple[str, torch.nn.Module]]:
    unet = getattr(pipe, "unet", None)
    if isinstance(unet, torch.nn.Module):
        yield "unet", unet
    if which != "all":
        return
    vae = getattr(pipe, "vae", None)
    if vae is not None and isinstance(getattr(vae, "decoder", None), torch.nn.Module):
        yield "vae.decoder", vae.decoder
    for name in ("text_encoder", "text_encoder_2", "image_encoder"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            yield name, module


def apply(pipe: Any, device: torch.device, dtype: torch.dtype, opts: Optimizations) -> list[str]:
    """Apply ``opts`` to ``pipe`` in place (on the worker thread); a line per decision."""
    notes: list[str] = [f"{name}: ignored ({why})" for name, why in _ignored(opts)]
    if opts.channels_last:
        for name in ("unet", "vae"):
            module = getattr(pipe, name, None)
            if module is None:
                continue
            # per 2-D convolution: the video models also hold 3-D ones, which have no
            # channels-last layout and stay as they are
            convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
            for conv in convs:
                conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last)
            notes.append(f"CHANNELS_LAST: {name} ({len(convs)} convolutions)")
    if opts.fuse_qkv:
        notes.extend(_fuse_qkv(pipe))
    if opts.vae_fp16:
        if dtype == torch.float16 and getattr(pipe, "vae", None) is not None:
            guard_fp16_decode(pipe.vae)
            notes.append("VAE_FP16: decoding in fp16, fp32 only when a decode overflows")
        else:
            notes.append("VAE_FP16: skipped (the model runs in fp32 here)")
    if opts.compile:
        use_persistent_compile_cache()
        # one compiled graph per size and batch that requests use (see warm_batches)
        from torch._dynamo import config as dynamo_config

        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 64)
        mode = opts.compile_mode or default_compile_mode(device)
        for name, module in _modules_to_compile(pipe, opts.compile):
            # CUDA graphs for the UNet only: its outputs are used at once, while the
            # encoders' outputs live across the steps and a graph's next replay would
            # overwrite them
            used = mode if name == "unet" or not uses_cuda_graphs(mode) else "default"
            module.compile(mode=used, fullgraph=False, dynamic=False)
            notes.append(f"COMPILE: {name} (mode {used})")
    if opts.batch > 1:
        notes.append(f"BATCH: up to {opts.batch} images per call")
    if opts.png_level is not None:
        notes.append(f"PNG_LEVEL: {opts.png_level}")
    return notes


def warm_batches(limit: int) -> list[int]:
    """Batch sizes a compiled model is warmed at: 1, 2, 4, ... up to ``limit``. A batch of
    another size is padded up to the next of these (compiled graphs have fixed shapes)."""
    sizes = [1]
    while sizes[-1] * 2 < limit:
        sizes.append(sizes[-1] * 2)
    return sorted({*sizes, limit})


def padded_batch(n: int, limit: int) -> int:
    """The warmed batch size a call of ``n`` images runs at; one request of more images
    than ``limit`` runs as it is (that size compiles once, on first use)."""
    return next((b for b in warm_batches(limit) if b >= n), n)


def _ignored(opts: Optimizations) -> list[tuple[str, str]]:
    return [(name, IGNORED_FLAGS[name]) for name in opts.ignored]


def _fuse_qkv(pipe: Any) -> list[str]:
    from diffusers.models.attention_processor import FusedAttnProcessor2_0

    notes = []
    for name in ("unet", "vae"):
        module = getattr(pipe, name, None)
        fuse = getattr(module, "fuse_qkv_projections", None)
        if module is None or fuse is None:
            notes.append(f"FUSE_QKV: {name} skipped (not supported by its class)")
            continue
        try:
            fuse()
            module.set_attn_processor(FusedAttnProcessor2_0())
            notes.append(f"FUSE_QKV: {name}")
        except ValueError as exc:
            notes.append(f"FUSE_QKV: {name} skipped ({exc})")
    return notes


def guard_fp16_decode(vae: Any) -> None:
    """Decode in fp16 (no upcast to fp32); redo a decode in fp32 if it overflowed.

    diffusers upcasts a VAE whose config says ``force_upcast`` to fp32 for every decode (the
    original SDXL VAE overflows in fp16 on some images). Decoding in fp16 and checking the
    result keeps outputs finite while paying for fp32 only when it is needed.
    """
    if getattr(vae, "_orchard_fp16_guard", False):
        return
    vae.register_to_config(force_upcast=False)
    plain_decode = vae.decode

    def decode(z: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        out = plain_decode(z, *args, **kwargs)
        sample = out[0] if isinstance(out, tuple) else out.sample
        if bool(torch.isfinite(sample).all()):
            return out
        log.info("fp16 VAE decode overflowed: decoding this one in fp32")
        vae.to(torch.float32)
        try:
            redo = plain_decode(z.float(), *args, **kwargs)
        finally:
            vae.to(torch.float16)
        if isinstance(redo, tuple):
            return tuple(t.to(torch.float16) if torch.is_tensor(t) else t for t in redo)
        redo.sample = redo.sample.to(torch.float16)
        return redo

    vae.decode = decode
    vae._orchard_fp16_guard = True


# --------------------------------------------------------------------------- pinned loading
def _tensors(module: torch.nn.Module) -> list[tuple[torch.nn.Module, str, torch.Tensor, bool]]:
    out: list[tuple[torch.nn.Module, str, torch.Tensor, bool]] = []
    for owner in module.modules():
        for name, p in owner.named_parameters(recurse=False):
            out.append((owner, name, p, True))
        for name, b in owner.named_buffers(recurse=False):
            if b is not None:
                out.append((owner, name, b, False))
    return out


def move_staged(
    module: torch.nn.Module, device: torch.device, chunk: int = STAGING_BYTES, force: bool = False
) -> int:
    """Move ``module``'s weights to ``device`` through two staging buffers; bytes moved.

    On CUDA the buffers are pinned and each copy to the device is asynchronous on its own
    stream, so reading the next weights from (page-cached) memory overlaps the transfer of
    the previous ones, instead of the synchronous pageable copies of ``module.to(device)``.
    On other devices the same code runs with plain buffers; ``force`` copies tensors that are
    already on ``device`` (how it is tested without a GPU).
    """
    cuda = device.type == "cuda"
    pin = cuda and torch.cuda.is_available()
    staging = [torch.empty(chunk, dtype=torch.uint8, pin_memory=pin) for _ in range(2)]
    events: list[Any] = [None, None]
    stream = torch.cuda.Stream(device) if cuda else None
    moved = 0
    turn = 0
    done: dict[int, torch.Tensor] = {}  # tied weights stay tied
    for owner, name, t, is_param in _tensors(module):
        if t.device == device and not force:
            continue
        if id(t) in done:
            same = done[id(t)]
            if is_param:
                owner._parameters[name] = same  # type: ignore[assignment]
            else:
                owner._buffers[name] = same
            continue
        src = t.detach().contiguous().reshape(-1).view(torch.uint8)
        dest = torch.empty(t.shape, dtype=t.dtype, device=device)
        flat = dest.reshape(-1).view(torch.uint8)
        for start in range(0, src.numel(), chunk):
            n = min(chunk, src.numel() - start)
            buf = staging[turn]
            if events[turn] is not None:
                events[turn].synchronize()  # the transfer that used this buffer is done
            buf[:n].copy_(src[start : start + n])
            if stream is not None:
                with torch.cuda.stream(stream):
                    flat[start : start + n].copy_(buf[:n], non_blocking=True)
                    events[turn] = torch.cuda.Event()
                    events[turn].record(stream)
            else:
                flat[start : start + n].copy_(buf[:n])
            turn = 1 - turn
        moved += src.numel()
        new: torch.Tensor = torch.nn.Parameter(dest, requires_grad=False) if is_param else dest
        done[id(t)] = new
        if is_param:
            owner._parameters[name] = new  # type: ignore[assignment]
        else:
            owner._buffers[name] = new
    if stream is not None:
        stream.synchronize()
    return moved


def move_pipeline_staged(pipe: Any, device: torch.device) -> int:
    """:func:`move_staged` for every torch module of a pipeline; bytes moved."""
    total = 0
    for comp in pipe.components.values():
        if isinstance(comp, torch.nn.Module):
            total += move_staged(comp, device)
    return total
