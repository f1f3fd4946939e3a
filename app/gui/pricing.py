"""Prices and earnings for the Pricing & earnings page.

Prices come from aiModels.json (``ModelsConfig.price_for``), fees from the job store.
TODO(lead): now that ``core/payments`` has landed, take the earnings from its off-chain
ledger (``core.payments.earnings.earnings(node.payments.ledger)``: fees charged, tickets
received and won, redeemed) instead of summing the job store's fees; :class:`EarningsSource`
is the seam, ``NodeSession.stats`` its one user.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any, Protocol

from core.config import ModelsConfig
from core.pipelines import Capability, image_to_image, image_to_video, text_to_image
from widgets.earnings_panel import PriceRow

#: A typical job per capability: what it is, and the pixels Livepeer bills for it.
TYPICAL_JOBS: dict[str, tuple[str, int]] = {
    Capability.TEXT_TO_IMAGE.value: (
        "one 512x512 image",
        text_to_image.billing_pixels({"width": 512, "height": 512}),
    ),
    Capability.IMAGE_TO_IMAGE.value: (
        "one 512x512 image",
        image_to_image.billing_pixels(512, 512, 1),
    ),
    Capability.IMAGE_TO_VIDEO.value: (
        "one 1024x576 video (14 frames, billed as 25)",
        image_to_video.billing_pixels({"width": 1024, "height": 576}),
    ),
}


def exact(value: Fraction) -> str:
    """A fraction as a decimal string (up to 6 decimals when it does not end)."""
    if value.denominator == 1:
        return str(value.numerator)
    d = Decimal(value.numerator) / Decimal(value.denominator)
    return format(d.quantize(Decimal("0.000001")).normalize(), "f")


def price_rows(config: ModelsConfig) -> list[PriceRow]:
    rows = []
    for e in config.entries:
        if not e.supported or e.gateway_key is not None:
            continue
        job, pixels = TYPICAL_JOBS[e.pipeline]
        price = config.price_for(e.pipeline, e.model_id)
        if price is None:
            rows.append(PriceRow(e.pipeline, e.model_id, "node default", job, None))
            continue
        unit = price.currency.lower()
        per = "pixel" if price.pixels_per_unit == 1 else f"{price.pixels_per_unit:,} pixels"
        rows.append(
            PriceRow(
                e.pipeline,
                e.model_id,
                f"{exact(price.price_per_unit)} {unit} / {per}",
                job,
                exact(price.per_pixel * pixels),
                price.currency,
            )
        )
    return rows


class EarningsSource(Protocol):
    async def stats(self, days: int = 30) -> dict[str, Any]: ...
