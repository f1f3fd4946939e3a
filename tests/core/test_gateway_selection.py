"""Which orchestrators may take a job, best first: tables over plain data, no HTTP."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import pytest

from core.gateway.selection import PriceCaps, candidates, parse_price
from core.gateway.views import OrchestratorView, suspension_s
from core.pipelines import Capability

T2I, I2I, I2V = "text-to-image", "image-to-image", "image-to-video"
IDS = {T2I: 27, I2I: 28, I2V: 29}
SDXL, TURBO, SVD = "org/sdxl", "org/turbo", "org/svd"
NOW = 1_000_000.0


@dataclass
class Orch:
    """An orchestrator in a scenario: what it offers and how it has behaved."""

    name: str
    offers: dict[tuple[str, str], bool] = field(default_factory=dict)  # -> warm
    prices: dict[tuple[str, str], Any] = field(default_factory=dict)  # -> ppu or (ppu, ppx[, cur])
    score: dict[tuple[str, str], float] = field(default_factory=dict)
    suspended_for: float = 0.0  # > 0: suspended until NOW + this
    state: str = "running"

    def view(self) -> OrchestratorView:
        per_cap: dict[str, Any] = {}
        for (pipeline, model), warm in self.offers.items():
            entry = per_cap.setdefault(str(IDS[pipeline]), {"name": pipeline, "models": {}})
            entry["models"][model] = {"warm": warm, "capacity": 1, "capacity_in_use": 0}
        prices = []
        for (pipeline, model), spec in self.prices.items():
            ppu, ppx, cur = (*spec, "WEI")[:3] if isinstance(spec, tuple) else (spec, 1, "WEI")
            prices.append(
                {
                    "capability": IDS[pipeline],
                    "constraint": model,
                    "price_per_unit": str(ppu),
                    "pixels_per_unit": ppx,
                    "currency": cur,
                }
            )
        info = {
            "state": self.state,
            "capabilities": {"per_capability": per_cap},
            "capabilities_prices": prices,
        }
        v = OrchestratorView(f"http://{self.name}", info=info, last_ok=NOW)
        for (pipeline, model), s in self.score.items():
            v.score.ewma[(pipeline, model)] = s
        if self.suspended_for:
            v.mark_failure("HTTP 500 boom", NOW + self.suspended_for - 5.0)
        return v


def pick(
    os_: list[Orch], model: str = SDXL, cap: Fraction | None = None, pipeline: str = T2I
) -> tuple[list[str], str | None]:
    sel = candidates([o.view() for o in os_], pipeline, model, cap, NOW)
    return [v.url.removeprefix("http://") for v in sel.ordered], sel.reason_if_empty


def warm(*keys: tuple[str, str]) -> dict[tuple[str, str], bool]:
    return dict.fromkeys(keys, True)


def cold(*keys: tuple[str, str]) -> dict[tuple[str, str], bool]:
    return dict.fromkeys(keys, False)


T = (T2I, SDXL)

ORDER_CASES = [
    pytest.param(
        [Orch("a", warm(T)), Orch("b", warm((T2I, TURBO)))], None, ["a"], id="offers-model"
    ),
    pytest.param(
        [Orch("a", warm((I2I, SDXL))), Orch("b", cold(T))], None, ["b"], id="offers-pipeline-too"
    ),
    pytest.param([Orch("a", cold(T)), Orch("b", warm(T))], None, ["b", "a"], id="warm-first"),
    pytest.param(
        [Orch("a", cold(T), score={T: 1e-9}), Orch("b", warm(T), score={T: 5e-9})],
        None,
        ["b", "a"],
        id="warm-beats-faster-cold",
    ),
    pytest.param(
        [Orch("a", warm(T), score={T: 3e-9}), Orch("b", warm(T), score={T: 1e-9})],
        None,
        ["b", "a"],
        id="faster-first",
    ),
    pytest.param(
        [Orch("a", warm(T)), Orch("b", warm(T), score={T: 9e-9})],
        None,
        ["b", "a"],
        id="unknown-score-after-known",
    ),
    pytest.param(
        [Orch("a", warm(T), score={(T2I, TURBO): 1e-12}), Orch("b", warm(T), score={T: 9e-9})],
        None,
        ["b", "a"],
        id="score-is-per-model",
    ),
    pytest.param(
        [Orch("a", warm(T), prices={T: 300}), Orch("b", warm(T), prices={T: 200})],
        None,
        ["b", "a"],
        id="same-score-cheaper-first",
    ),
    pytest.param(
        [Orch("a", warm(T)), Orch("b", warm(T)), Orch("c", warm(T))],
        None,
        ["a", "b", "c"],
        id="ties-keep-configured-order",
    ),
    pytest.param(
        [Orch("a", warm(T), prices={T: 9000}), Orch("b", cold(T), prices={T: 100})],
        Fraction(5000),
        ["b"],
        id="cap-excludes-expensive-warm",
    ),
    pytest.param(
        [Orch("a", warm(T), prices={T: 5000}), Orch("b", warm(T), prices={T: 5001})],
        Fraction(5000),
        ["a"],
        id="cap-is-inclusive",
    ),
    pytest.param(
        [Orch("a", warm(T), prices={T: (8000, 2)}), Orch("b", warm(T), prices={T: (9000, 1)})],
        Fraction(4000),
        ["a"],
        id="price-per-unit-over-pixels-per-unit",
    ),
    pytest.param(
        [Orch("a", warm(T)), Orch("b", warm(T), prices={T: 1})],
        Fraction(0),
        ["a"],
        id="no-price-entry-counts-as-free",
    ),
    pytest.param(
        [Orch("a", warm(T), prices={T: (1, 1, "USD")}), Orch("b", warm(T), prices={T: 10})],
        Fraction(5000),
        ["b"],
        id="other-currency-is-over-any-cap",
    ),
    pytest.param(
        [Orch("a", warm(T), prices={T: (1, 1, "USD")})],
        None,
        ["a"],
        id="other-currency-without-cap",
    ),
    pytest.param(
        [Orch("a", warm(T), suspended_for=3), Orch("b", cold(T))],
        None,
        ["b"],
        id="suspended-excluded",
    ),
    pytest.param(
        [Orch("a", warm(T), suspended_for=-0.5), Orch("b", cold(T))],
        None,
        ["a", "b"],
        id="suspension-expired",
    ),
    pytest.param(
        [Orch("a", warm(T), state="stopping"), Orch("b", cold(T))],
        None,
        ["b"],
        id="stopping-o-skipped",
    ),
]


@pytest.mark.parametrize(("os_", "cap", "expected"), ORDER_CASES)
def test_order(os_: list[Orch], cap: Fraction | None, expected: list[str]) -> None:
    ordered, reason = pick(os_, cap=cap)
    assert ordered == expected
    assert reason is None


REASON_CASES = [
    pytest.param(
        [],
        None,
        "no orchestrator offers model org/sdxl for pipeline text-to-image",
        id="none-configured",
    ),
    pytest.param(
        [Orch("a", warm((T2I, TURBO))), Orch("b", warm((I2I, SDXL)))],
        None,
        "no orchestrator offers model org/sdxl for pipeline text-to-image",
        id="nobody-offers",
    ),
    pytest.param(
        [Orch("a", warm(T), prices={T: 9000}), Orch("b", cold(T), prices={T: (12000, 2)})],
        Fraction(5000),
        "all 2 orchestrators offering org/sdxl for text-to-image are over the price cap "
        "(cheapest: 6000 wei/pixel, cap: 5000 wei/pixel)",
        id="all-over-cap",
    ),
    pytest.param(
        [Orch("a", warm(T), prices={T: 9000})],
        Fraction(1, 2),
        "the one orchestrator offering org/sdxl for text-to-image is over the price cap "
        "(price: 9000 wei/pixel, cap: 1/2 wei/pixel)",
        id="one-over-cap",
    ),
    pytest.param(
        [Orch("a", warm(T), suspended_for=5), Orch("b", warm(T), suspended_for=2)],
        None,
        "all orchestrators offering org/sdxl for text-to-image failed recently "
        "(suspended; retried in 2 s): http://a: HTTP 500 boom; http://b: HTTP 500 boom",
        id="all-suspended",
    ),
    pytest.param(
        [Orch("a", warm(T), suspended_for=4, prices={T: 1}), Orch("b", warm(T), prices={T: 99})],
        Fraction(10),
        "the one orchestrator offering org/sdxl for text-to-image failed recently "
        "(suspended; retried in 4 s; 1 more over the price cap): http://a: HTTP 500 boom",
        id="suspended-and-over-cap",
    ),
]


@pytest.mark.parametrize(("os_", "cap", "reason"), REASON_CASES)
def test_reason_when_empty(os_: list[Orch], cap: Fraction | None, reason: str) -> None:
    assert pick(os_, cap=cap) == ([], reason)


def test_excluded_says_why() -> None:
    os_ = [
        Orch("a", warm(T), prices={T: 9}),
        Orch("b", warm(T), suspended_for=5),
        Orch("c", cold(T)),
    ]
    sel = candidates([o.view() for o in os_], T2I, SDXL, Fraction(5), NOW)
    assert [v.url for v in sel.ordered] == ["http://c"]
    assert sel.excluded == {"http://a": "over the price cap", "http://b": "suspended"}


@pytest.mark.parametrize(
    ("failures", "seconds"),
    [(0, 0), (1, 5), (2, 10), (3, 20), (4, 40), (5, 80), (6, 120), (7, 120), (500, 120)],
    ids=lambda x: str(x),
)
def test_suspension_doubles_to_a_cap(failures: int, seconds: float) -> None:
    assert suspension_s(failures) == seconds


def test_failures_suspend_and_success_resets() -> None:
    v = OrchestratorView("http://a")
    for expected in (5, 10, 20):
        v.mark_failure("HTTP 503 insufficient capacity", NOW)
        assert v.suspended_until == NOW + expected and v.suspended(NOW + expected - 0.01)
        assert not v.suspended(NOW + expected)
    v.mark_success()
    assert (v.failures, v.suspended_until, v.error) == (0, 0.0, None)


def test_a_good_poll_ends_only_an_unreachable_suspension() -> None:
    info: dict[str, Any] = {"capabilities": {"per_capability": {}}}
    lost = OrchestratorView("http://a")
    lost.mark_failure("connection refused", NOW, unreachable=True)
    lost.mark_polled(info, NOW + 1)
    assert not lost.suspended(NOW + 1) and lost.failures == 0 and lost.error is None
    broken = OrchestratorView("http://b")
    broken.mark_failure("HTTP 500 out of memory", NOW)
    broken.mark_polled(info, NOW + 1)
    assert broken.suspended(NOW + 1) and broken.failures == 1


def test_latency_score_is_a_moving_average_per_model() -> None:
    v = OrchestratorView("http://a")
    assert v.score.get(T2I, SDXL) is None
    assert v.score.observe(T2I, SDXL, 2.0, pixels=1000, steps=2) == pytest.approx(1e-3)
    assert v.score.observe(Capability.TEXT_TO_IMAGE, SDXL, 4.0, 1000, 2) == pytest.approx(
        0.3 * 2e-3 + 0.7 * 1e-3
    )
    assert v.score.get(T2I, TURBO) is None and v.score.samples[(T2I, SDXL)] == 2


@pytest.mark.parametrize(
    ("specs", "default", "per_model"),
    [
        pytest.param([], None, {}, id="none"),
        pytest.param(["5000"], Fraction(5000), {}, id="default"),
        pytest.param(["0.5"], Fraction(1, 2), {}, id="decimal"),
        pytest.param(["1/3"], Fraction(1, 3), {}, id="ratio"),
        pytest.param(
            ["5000", "text-to-image:stabilityai/sdxl-turbo=8000"],
            Fraction(5000),
            {(Capability.TEXT_TO_IMAGE, "stabilityai/sdxl-turbo"): Fraction(8000)},
            id="default-and-per-model",
        ),
        pytest.param(
            ["image-to-video:org/svd=0"],
            None,
            {(Capability.IMAGE_TO_VIDEO, "org/svd"): Fraction(0)},
            id="per-model-only",
        ),
        pytest.param(["5", "7"], Fraction(7), {}, id="last-default-wins"),
    ],
)
def test_price_caps_parse(
    specs: list[str], default: Fraction | None, per_model: dict[Any, Fraction]
) -> None:
    caps = PriceCaps.parse(specs)
    assert caps.default == default and dict(caps.per_model) == per_model


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param("cheap", "a price must be a number", id="not-a-number"),
        pytest.param("-1", "cannot be negative", id="negative"),
        pytest.param("text-to-image=5", "PIPELINE:MODEL_ID=PRICE", id="no-model"),
        pytest.param("text-to-imgae:a/b=5", "unknown pipeline 'text-to-imgae'", id="bad-pipeline"),
        pytest.param("text-to-image:a/b=x", "a price must be a number", id="bad-model-price"),
    ],
)
def test_price_caps_refuse_wrong_values(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        PriceCaps.parse([spec])


def test_caps_per_model_override_the_default() -> None:
    caps = PriceCaps.parse(["100", "text-to-image:org/turbo=900"])
    assert caps.for_model(T2I, TURBO) == 900
    assert caps.for_model(T2I, SDXL) == 100
    assert caps.for_model(I2I, TURBO) == 100  # per pipeline and model
    os_ = [Orch("a", warm((T2I, TURBO)), prices={(T2I, TURBO): 500})]
    assert pick(os_, TURBO, caps.for_model(T2I, TURBO))[0] == ["a"]
    assert pick(os_, TURBO, caps.for_model(T2I, SDXL))[1] is not None
    assert caps.describe() == "default 100 wei/pixel, text-to-image:org/turbo 900 wei/pixel"


def test_parse_price() -> None:
    assert parse_price(" 12 ") == 12 and parse_price("2.5") == Fraction(5, 2)
