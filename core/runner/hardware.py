"""Payloads of the runner API's ``GET /hardware/info`` and ``GET /hardware/stats``.

They read NVML through :mod:`core.gpus` and never import torch, so they are cheap and the
orchestrator can test them without a GPU. They block (NVML), so the runner calls them from a
worker thread.

``gpu_info`` / ``gpu_stats`` are keyed by the GPU's index as an ``int``; JSON turns the keys
into strings (``"0"``), as Livepeer's runner does.

**Which GPUs, and which index.** A runner is pinned to its GPU with ``CUDA_VISIBLE_DEVICES``.
When that is set, only the GPUs it names are reported, keyed by the runner's *local* index
(the position in the list, the index torch would use), so a runner pinned to physical GPU 2
reports it under ``"0"``; its ``id`` (the UUID) still names the physical board. Entries are
NVML indices (PCI bus order: launch runners with ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so CUDA
agrees) or ``GPU-`` UUIDs or unique UUID prefixes. As in CUDA, the list ends at the first
entry that names no GPU (``"-1"``, an index out of range, a MIG id), or at a repeat, and an
empty value hides every GPU. Unset, every GPU is reported under its NVML index.

Without an NVIDIA GPU both dicts are empty. A figure NVML cannot give (compute capability,
utilisation) is reported as 0, because the contract requires integers.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from core.gpus import GpuInfo, GpuSample, Nvml, NvmlError

log = logging.getLogger(__name__)


def visible_gpus(gpus: tuple[GpuInfo, ...], spec: str | None) -> list[GpuInfo]:
    """The GPUs a ``CUDA_VISIBLE_DEVICES`` value ``spec`` exposes, in local-index order."""
    if spec is None:
        return list(gpus)
    by_index = {gpu.index: gpu for gpu in gpus}
    chosen: list[GpuInfo] = []
    for raw in spec.split(","):
        entry = raw.strip()
        if entry.lstrip("-").isdigit():
            gpu = by_index.get(int(entry))
        else:
            matches = [g for g in gpus if entry.startswith("GPU-") and g.uuid.startswith(entry)]
            gpu = matches[0] if len(matches) == 1 else None
        if gpu is None or gpu in chosen:
            break
        chosen.append(gpu)
    return chosen


def _devices(nvml: Nvml) -> list[tuple[int, GpuInfo, GpuSample]]:
    """``(reported index, info, sample)`` for each GPU this runner may use; blocking."""
    inventory = nvml.probe()
    spec = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = visible_gpus(inventory.gpus, spec)
    devices = []
    for local, gpu in enumerate(gpus):
        try:
            sample = nvml.sample(gpu.index)
        except NvmlError as e:
            log.warning("GPU %d left out of the hardware report: %s", gpu.index, e)
            continue
        devices.append((local if spec is not None else gpu.index, gpu, sample))
    return devices


def _collect(nvml: Nvml | None) -> list[tuple[int, GpuInfo, GpuSample]]:
    if nvml is not None:
        return _devices(nvml)
    with Nvml() as own:
        return _devices(own)


def hardware_info(pipeline: str, model_id: str, nvml: Nvml | None = None) -> dict[str, Any]:
    """The ``HardwareInformation`` body: each visible GPU's id, name, memory and capability.

    ``nvml`` is left initialised if given; otherwise a fresh one is opened and shut down.
    """
    gpu_info: dict[int, dict[str, Any]] = {}
    for key, gpu, sample in _collect(nvml):
        major, minor = gpu.cuda_capability or (0, 0)
        gpu_info[key] = {
            "id": gpu.uuid,
            "name": gpu.name,
            "memory_total": sample.memory_total,
            "memory_free": sample.memory_free,
            "major": major,
            "minor": minor,
        }
    return {"pipeline": pipeline, "model_id": model_id, "gpu_info": gpu_info}


def hardware_stats(pipeline: str, model_id: str, nvml: Nvml | None = None) -> dict[str, Any]:
    """The ``HardwareStats`` body: each visible GPU's memory and utilisation now (percent)."""
    gpu_stats: dict[int, dict[str, Any]] = {}
    for key, gpu, sample in _collect(nvml):
        gpu_stats[key] = {
            "id": gpu.uuid,
            "name": gpu.name,
            "memory_total": sample.memory_total,
            "memory_free": sample.memory_free,
            "utilization_compute": sample.utilization_gpu or 0,
            "utilization_memory": sample.utilization_memory or 0,
        }
    return {"pipeline": pipeline, "model_id": model_id, "gpu_stats": gpu_stats}
