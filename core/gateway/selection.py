"""Which orchestrators may take a job, best first: pure functions over plain data.

:func:`candidates` keeps the orchestrators (Os) that offer the job's pipeline *and* model,
within the price cap and not suspended, and orders them:

1. warm first (the O's ``warm`` constraint for the model: it holds it loaded);
2. then by the measured latency score for that pipeline and model (seconds per output pixel
   per step, lower first); an O with no score yet sorts after every O with one (it gets
   work when the measured ones are busy or failing, and is measured then);
3. then the cheaper, then the order the Os were configured in.

Prices: an O's price per pixel is ``price_per_unit / pixels_per_unit`` from its
``capabilities_prices`` entry for the capability and model. An O that lists no price for it
counts as price 0 (it asks nothing for it). A price in a currency other than WEI cannot be
compared with a cap in wei and is over any cap.

Suspended Os (after a failure: 5 s, doubling per consecutive failure, to 120 s; see
:mod:`core.gateway.views`) are left out. When nothing is left, ``reason_if_empty`` says why,
in this order: no O offers the model; every O offering it is over the cap; every one within
the cap is suspended.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from core.gateway.views import OrchestratorView, Price
from core.pipelines import Capability, parse_capability

__all__ = ["PriceCaps", "Selection", "candidates", "parse_price"]


@dataclass(frozen=True)
class Selection:
    ordered: list[OrchestratorView]
    reason_if_empty: str | None = None
    #: Why each offering O was left out: url -> "over the price cap" / "suspended".
    excluded: dict[str, str] = field(default_factory=dict)


def parse_price(text: str) -> Fraction:
    """``"5000"``, ``"0.5"`` or ``"1/3"`` wei per pixel; ValueError for anything else."""
    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise ValueError(
            f"a price must be a number such as 5000, 0.5 or 1/3 (got {text!r})"
        ) from None
    if value < 0:
        raise ValueError(f"a price cannot be negative (got {text!r})")
    return value


@dataclass(frozen=True)
class PriceCaps:
    """Most the gateway pays per pixel (wei): per (pipeline, model), else ``default``;
    None means no cap."""

    default: Fraction | None = None
    per_model: Mapping[tuple[Capability, str], Fraction] = field(default_factory=dict)

    def for_model(self, capability: Capability | str, model_id: str) -> Fraction | None:
        cap = parse_capability(str(capability))
        return self.per_model.get((cap, model_id), self.default)

    @classmethod
    def parse(cls, specs: Iterable[str]) -> PriceCaps:
        """From CLI values: ``5000`` (the default cap) or
        ``text-to-image:stabilityai/sdxl-turbo=8000`` (one pipeline and model). ValueError
        with a message naming the wrong value."""
        default: Fraction | None = None
        per_model: dict[tuple[Capability, str], Fraction] = {}
        for spec in specs:
            key, sep, value = spec.rpartition("=")
            if not sep:
                default = parse_price(spec)
                continue
            pipeline, colon, model_id = key.partition(":")
            if not colon or not model_id.strip() or not pipeline.strip():
                raise ValueError(
                    f"expected PRICE or PIPELINE:MODEL_ID=PRICE, such as "
                    f"text-to-image:stabilityai/sdxl-turbo=8000 (got {spec!r})"
                )
            per_model[(parse_capability(pipeline.strip()), model_id.strip())] = parse_price(value)
        return cls(default, per_model)

    def describe(self) -> str:
        parts = [f"default {self.default} wei/pixel" if self.default is not None else "no cap"]
        parts += [f"{c.value}:{m} {p} wei/pixel" for (c, m), p in self.per_model.items()]
        return ", ".join(parts)


def _within(price: Price | None, cap: Fraction | None) -> bool:
    if cap is None or price is None:
        return True
    return price.currency == "WEI" and price.per_pixel <= cap


def _show(price: Price) -> str:
    return f"{price.per_pixel} {price.currency.lower()}/pixel"


def candidates(
    views: Sequence[OrchestratorView],
    capability: Capability | str,
    model_id: str,
    max_price: Fraction | None,
    now: float,
) -> Selection:
    """The Os that may take the job, best first, or none and the reason (module doc)."""
    cap = parse_capability(str(capability))
    what = f"{model_id} for {cap.value}"
    offering = [v for v in views if v.offer(cap, model_id) is not None]
    if not offering:
        return Selection([], f"no orchestrator offers model {model_id} for pipeline {cap.value}")
    excluded: dict[str, str] = {}
    affordable = []
    for v in offering:
        if _within(v.price(cap, model_id), max_price):
            affordable.append(v)
        else:
            excluded[v.url] = "over the price cap"
    if not affordable:
        prices = [p for v in offering if (p := v.price(cap, model_id)) is not None]
        in_wei = [p for p in prices if p.currency == "WEI"]
        cheapest = min(in_wei or prices, key=lambda p: p.per_pixel)
        n = len(offering)
        head = (
            f"the one orchestrator offering {what} is over the price cap (price: "
            if n == 1
            else f"all {n} orchestrators offering {what} are over the price cap (cheapest: "
        )
        return Selection([], f"{head}{_show(cheapest)}, cap: {max_price} wei/pixel)", excluded)
    available = []
    for v in affordable:
        if v.suspended(now):
            excluded[v.url] = "suspended"
        else:
            available.append(v)
    if not available:
        soonest = min(v.suspended_until for v in affordable) - now
        errors = "; ".join(f"{v.url}: {v.error or 'failed'}" for v in affordable[:3])
        head = (
            f"the one orchestrator offering {what} failed recently"
            if len(affordable) == 1
            else f"all orchestrators offering {what} failed recently"
        )
        over = len(offering) - len(affordable)
        more = f"; {over} more over the price cap" if over else ""
        return Selection(
            [],
            f"{head} (suspended; retried in {soonest:.0f} s{more}): {errors}",
            excluded,
        )

    def order(item: tuple[int, OrchestratorView]) -> tuple[bool, bool, float, Fraction, int]:
        index, v = item
        score = v.score.get(cap, model_id)
        price = v.price(cap, model_id)
        return (
            not v.warm(cap, model_id),
            score is None,
            score if score is not None else 0.0,
            price.per_pixel if price is not None else Fraction(0),
            index,
        )

    ranked = sorted(enumerate(available), key=order)
    return Selection([v for _, v in ranked], None, excluded)
