"""The first-start demo configuration: the tiny local models, warm, with Livepeer-like prices.

Shared by the desktop app and the headless ``orchard``; both run it in free mode. The tiny
models produce noise: they exist so a new operator sees the whole path work (node, job,
preview, fee) before downloading gigabytes.
"""

from __future__ import annotations

from fractions import Fraction

from core.config import ModelEntry, ModelsConfig

#: Model ids of the tiny models (``core.runner.tiny``, which imports torch: not imported here).
TINY_SDXL = "orchard-tiny/sdxl"
TINY_SVD = "orchard-tiny/svd"
DEMO_PREFIX = "orchard-tiny/"


def demo_config(source: str) -> ModelsConfig:
    """Text-to-image and image-to-image on tiny SDXL, image-to-video on tiny SVD, warm, with
    Livepeer-like prices (wei per pixel)."""
    entries = [
        ModelEntry("text-to-image", TINY_SDXL, warm=True, price_per_unit=Fraction(4768371)),
        ModelEntry("image-to-image", TINY_SDXL, warm=True, price_per_unit=Fraction(4768371)),
        ModelEntry("image-to-video", TINY_SVD, warm=True, price_per_unit=Fraction(3390842)),
    ]
    return ModelsConfig.from_entries(entries, source=source)


def is_demo(config: ModelsConfig) -> bool:
    """Whether every model of ``config`` is a demo model (and there is at least one)."""
    return bool(config.entries) and all(e.model_id.startswith(DEMO_PREFIX) for e in config.entries)
