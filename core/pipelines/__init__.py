"""Capabilities: one module each (params, defaults, validation, billing units).

The runner, the orchestrator and the gateway import the same definitions. Nothing here
imports torch: this registry is what ``orchard --help`` and the GUI process may load.
"""

from __future__ import annotations

import importlib
from enum import StrEnum
from types import ModuleType


class Capability(StrEnum):
    TEXT_TO_IMAGE = "text-to-image"
    IMAGE_TO_IMAGE = "image-to-image"
    IMAGE_TO_VIDEO = "image-to-video"


#: Livepeer's capability numbering (go-livepeer core/capabilities.go).
LIVEPEER_CAPABILITY_IDS: dict[Capability, int] = {
    Capability.TEXT_TO_IMAGE: 27,
    Capability.IMAGE_TO_IMAGE: 28,
    Capability.IMAGE_TO_VIDEO: 29,
}

_MODULES = {
    Capability.TEXT_TO_IMAGE: "core.pipelines.text_to_image",
    Capability.IMAGE_TO_IMAGE: "core.pipelines.image_to_image",
    Capability.IMAGE_TO_VIDEO: "core.pipelines.image_to_video",
}


def parse_capability(name: str) -> Capability:
    """The capability called ``name``, or a ValueError listing the ones that exist."""
    try:
        return Capability(name)
    except ValueError:
        known = ", ".join(c.value for c in Capability)
        raise ValueError(f"unknown pipeline {name!r}; known pipelines: {known}") from None


def module(cap: Capability | str) -> ModuleType:
    """The capability's module (params model, ``validate``, ``billing_pixels``)."""
    return importlib.import_module(_MODULES[parse_capability(str(cap))])
