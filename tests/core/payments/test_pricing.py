"""Fees from prices and pixels, free mode, and amounts as people read them."""

from __future__ import annotations

from fractions import Fraction

import pytest

from core.config import Price
from core.payments.pricing import PricingError, fee_for, format_eth, format_wei
from core.pipelines import text_to_image


def test_fee_is_pixels_times_price_per_pixel() -> None:
    pixels = text_to_image.billing_pixels({"width": 1024, "height": 1024})
    price = Price(Fraction(4768371), 1, "WEI")
    assert fee_for(pixels, price) == 4768371 * 1024 * 1024
    per_unit = Price(Fraction(1000), 3, "WEI")
    assert fee_for(512 * 512, per_unit) == Fraction(1000, 3) * 512 * 512
    assert fee_for(0, price) == 0


def test_free_mode_is_explicit() -> None:
    assert fee_for(512 * 512, None, free=True) == 0
    assert fee_for(512 * 512, Price(Fraction(5), 1, "WEI"), free=True) == 0
    with pytest.raises(PricingError, match="no price is set for text-to-image m: set") as caught:
        fee_for(512 * 512, None, what="text-to-image m")
    assert "free mode" in caught.value.msg


def test_only_wei_prices() -> None:
    with pytest.raises(PricingError, match="USD"):
        fee_for(10, Price(Fraction(1, 10**9), 1, "USD"))
    with pytest.raises(ValueError, match="non-negative integer"):
        fee_for(-1, Price(Fraction(1), 1, "WEI"))


@pytest.mark.parametrize(
    ("amount", "per_pixel", "text"),
    [
        (Fraction(4768371), True, "4768371 wei/pixel"),
        (Fraction(1, 8), True, "0.125 wei/pixel"),
        (Fraction(1, 3), True, "≈0.333 wei/pixel"),
        (Fraction(10**7, 3), False, "≈3333333 wei"),
        (1234, False, "1234 wei"),
    ],
)
def test_format_wei(amount: Fraction | int, per_pixel: bool, text: str) -> None:
    assert format_wei(amount, per_pixel) == text


def test_format_eth_has_nine_decimals() -> None:
    assert format_eth(Fraction(12_582_912_000_000_000)) == "0.012582912 ETH"
    assert format_eth(10**18) == "1.000000000 ETH"
    assert format_eth(0) == "0.000000000 ETH"
    assert format_eth(262144) == "0.000000000 ETH (262144 wei)"
