"""Formatting shared by the widgets: bytes, durations, fees. No Qt, no state."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

GiB = 2**30
MiB = 2**20
#: Wei per ether.
WEI_PER_ETH = Decimal(10) ** 18


def fmt_bytes(n: float | None, digits: int = 1) -> str:
    """``10.4 GiB``, ``512 MiB``, ``3.2 KiB``; an em dash for None."""
    if n is None:
        return "—"
    if abs(n) >= GiB:
        return f"{n / GiB:.{digits}f} GiB"
    if abs(n) >= MiB:
        return f"{n / MiB:.0f} MiB"
    if abs(n) >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{int(n)} B"


def fmt_duration(seconds: float | None) -> str:
    """``0.42 s``, ``12.3 s``, ``2 min 05 s``."""
    if seconds is None:
        return "—"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s"


def fmt_speed(bytes_per_s: float) -> str:
    return f"{fmt_bytes(bytes_per_s)}/s"


def to_decimal(value: str | int | Decimal | None) -> Decimal:
    try:
        return Decimal(str(value if value is not None else 0))
    except InvalidOperation:
        return Decimal(0)


def fmt_wei(value: str | int | Decimal | None) -> str:
    """A fee in wei as a person reads it: ``1,250,000 wei`` or ``0.0031 ETH``."""
    wei = to_decimal(value)
    if wei == 0:
        return "0"
    if abs(wei) >= WEI_PER_ETH / 10_000:
        eth = wei / WEI_PER_ETH
        return f"{eth:.6f}".rstrip("0").rstrip(".") + " ETH"
    if abs(wei) >= 10**9:
        return f"{wei / 10**9:,.1f} gwei"
    if wei == wei.to_integral_value():
        return f"{int(wei):,} wei"
    return f"{wei:,.2f} wei"
