"""What a job costs, and how amounts of wei read to a person.

A fee is ``pixels × price_per_pixel`` in wei, exact (:class:`~fractions.Fraction`), with
``pixels`` from the capability's ``billing_pixels`` (``core.pipelines``) and the price from
``ModelsConfig.price_for`` (``price_per_unit / pixels_per_unit``). Free mode is explicit:
``free=True`` makes every fee 0; a missing price without it is an error, never a silent 0.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction

from core.config import Price
from core.errors import OrchardError

__all__ = ["WEI_PER_ETH", "PricingError", "fee_for", "format_eth", "format_wei"]

WEI_PER_ETH = 10**18


class PricingError(OrchardError):
    """A job cannot be priced: no price set (and not in free mode), or not in wei."""

    status = 500


def fee_for(pixels: int, price: Price | None, free: bool = False, what: str = "") -> Fraction:
    """The fee in wei for ``pixels`` billed pixels at ``price``; 0 when ``free``.

    ``what`` names the job in the error (e.g. ``"text-to-image org/model"``).
    PricingError when there is no price and free mode is off, or the price is not in WEI
    (Livepeer's USD prices need a conversion rate Orchard does not have).
    """
    if isinstance(pixels, bool) or not isinstance(pixels, int) or pixels < 0:
        raise ValueError(f"billed pixels must be a non-negative integer, not {pixels!r}")
    if free:
        return Fraction(0)
    subject = f" for {what}" if what else ""
    if price is None:
        raise PricingError(
            f"no price is set{subject}: set price_per_unit in aiModels.json (or the node-wide "
            "price), or run the node in free mode explicitly"
        )
    if price.currency.upper() != "WEI":
        raise PricingError(
            f"the price{subject} is in {price.currency}; Orchard prices in WEI only (no "
            "exchange rate is available): give price_per_unit in wei"
        )
    if price.pixels_per_unit <= 0 or price.price_per_unit < 0:
        raise PricingError(
            f"the price{subject} is invalid ({price.price_per_unit} per "
            f"{price.pixels_per_unit} pixels)"
        )
    return Fraction(price.price_per_unit) / price.pixels_per_unit * pixels


def _decimal(value: Fraction, places: int) -> str:
    """``value`` rounded half-even to ``places`` decimals, as fixed-point text."""
    with localcontext() as ctx:
        ctx.prec = 200
        quantum = Decimal(1).scaleb(-places)
        exact = Decimal(value.numerator) / Decimal(value.denominator)
        return format(exact.quantize(quantum, rounding=ROUND_HALF_EVEN), "f")


def format_wei(amount: Fraction | int, per_pixel: bool = False) -> str:
    """``"4768371 wei"`` / ``"4768371 wei/pixel"``; below 1000 wei up to 3 decimals
    (``"0.125 wei/pixel"``), marked ``≈`` when rounded."""
    value = Fraction(amount)
    unit = "wei/pixel" if per_pixel else "wei"
    if value.denominator == 1:
        return f"{value.numerator} {unit}"
    places = 0 if abs(value) >= 1000 else 3
    text = _decimal(value, places)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    exact = Fraction(text) == value
    return f"{'' if exact else '≈'}{text} {unit}"


def format_eth(amount: Fraction | int) -> str:
    """A total in ETH with 9 decimals (``"0.012582912 ETH"``); amounts that round to less
    than 1 gwei also show their wei (``"0.000000000 ETH (262144 wei)"``)."""
    value = Fraction(amount)
    text = _decimal(value / WEI_PER_ETH, 9) + " ETH"
    if value and abs(value) < 10**9:
        text += f" ({format_wei(value)})"
    return text
