"""The app's small pure pieces: VRAM fit report, prices per typical job, log tails, the
bridge from core events to Qt signals, the generation adapter's error text."""

from __future__ import annotations

from fractions import Fraction

import httpx
import pytest
from pytestqt.qtbot import QtBot

from app.gui.bridge import CoreBridge
from app.gui.fit import report
from app.gui.generation import error_text
from app.gui.pages.logs import new_lines
from app.gui.pricing import TYPICAL_JOBS, exact, price_rows
from core import config
from core import events as ev
from core.placement import Footprint, GpuBudget, VramEstimate
from tests.widgets.conftest import FedSampler, sample

GiB = 2**30


def fp(model: str, pipeline: str, weights: float, total: float) -> Footprint:
    w, t = int(weights * GiB), int(total * GiB)
    return Footprint((pipeline, model), VramEstimate(w, t - w, t))


def test_fit_report_verdicts_and_plan() -> None:
    cfg = config.loads(
        """[
        {"pipeline": "text-to-image", "model_id": "a/xl", "warm": true},
        {"pipeline": "image-to-image", "model_id": "a/xl", "warm": true},
        {"pipeline": "text-to-image", "model_id": "a/small", "warm": true, "gpus": [1]},
        {"pipeline": "image-to-video", "model_id": "a/svd"}
        ]"""
    )
    budgets = [
        GpuBudget(0, "RTX 4090", 24 * GiB, int(23.5 * GiB)),  # 22.3 GiB budget
        GpuBudget(1, "RTX 3070", 8 * GiB, int(7.6 * GiB), reserve=GiB),  # 6.1 GiB budget
    ]
    fps = {
        ("text-to-image", "a/xl"): fp("a/xl", "text-to-image", 6.46, 10.4),
        ("image-to-image", "a/xl"): fp("a/xl", "image-to-image", 6.46, 10.4),
        ("text-to-image", "a/small"): fp("a/small", "text-to-image", 2.4, 5.8),
        ("image-to-video", "a/svd"): fp("a/svd", "image-to-video", 4.2, 26.3),
    }
    r = report(cfg, fps, {}, budgets)
    assert r.fits[("text-to-image", "a/xl")].fit == "fits"
    assert r.fits[("text-to-image", "a/xl")].text.endswith("on GPU 0 (RTX 4090)")
    assert r.fits[("text-to-image", "a/small")].fit == "tight"  # 5.8 of 6.1 on GPU 1
    assert r.fits[("image-to-video", "a/svd")].fit == "does_not_fit"
    assert "short" in r.fits[("image-to-video", "a/svd")].text
    assert r.plan_ok and r.plan_lines[0] == "The warm models fit:"
    assert any(line.startswith("GPU 0 (RTX 4090): fits: 14.3 GiB") for line in r.plan_lines)
    # the same warm set on the small card alone does not fit, and says so
    r2 = report(cfg, fps, {}, budgets[1:])
    assert not r2.plan_ok and r2.plan_lines[0].startswith("The warm models do not fit:")
    assert report(cfg, fps, {}, []).plan_lines == [
        "No device is chosen: turn one on on the GPUs page."
    ]


def test_prices_per_typical_job_are_exact() -> None:
    cfg = config.loads(
        """[
        {"pipeline": "text-to-image", "model_id": "a/b", "price_per_unit": 4768371},
        {"pipeline": "image-to-video", "model_id": "a/v", "price_per_unit": 1,
         "pixels_per_unit": 3},
        {"pipeline": "image-to-image", "model_id": "a/b"}
        ]"""
    )
    rows = price_rows(cfg)
    assert rows[0].price == "4768371 wei / pixel"
    assert rows[0].typical_job == "one 512x512 image"
    assert rows[0].typical_fee == str(512 * 512 * 4768371)
    assert rows[1].price == "1 wei / 3 pixels"
    assert TYPICAL_JOBS["image-to-video"][1] == 1024 * 576 * 25
    assert rows[1].typical_fee == str(1024 * 576 * 25 // 3)
    assert rows[2].price == "node default" and rows[2].typical_fee is None
    assert exact(Fraction(1, 3)) == "0.333333"


def test_new_lines_of_a_log_tail() -> None:
    assert new_lines([], ["a", "b"]) == ["a", "b"]
    assert new_lines(["a", "b"], ["a", "b", "c", "d"]) == ["c", "d"]
    assert new_lines(["a", "b", "c"], ["b", "c", "d"]) == ["d"]  # the tail rolled over
    assert new_lines(["x", "b"], ["a", "b", "c"]) == ["a", "b", "c"]  # no overlap
    assert new_lines(["a", "b"], ["a", "b"]) == []
    assert new_lines(["a", "a"], ["a", "a", "a"]) == ["a"]


def test_bridge_turns_events_into_signals(qtbot: QtBot) -> None:
    bus = ev.EventBus()
    sampler = FedSampler()
    bridge = CoreBridge(bus, sampler)
    got: list[object] = []
    bridge.job_progress.connect(got.append)
    bridge.job_event.connect(lambda e: got.append(("any", type(e).__name__)))
    bridge.node_changed.connect(got.append)
    bridge.samples.connect(got.append)
    bus.emit(ev.JobProgress("j", 1, 2))
    bus.emit(ev.NodeChanged("running"))
    s = sample(0)
    sampler.feed(s)
    assert got == [ev_ for ev_ in got]  # in order, synchronously
    assert isinstance(got[0], ev.JobProgress) and got[1] == ("any", "JobProgress")
    assert isinstance(got[2], ev.NodeChanged) and got[3] == (s,)
    bridge.close()
    bus.emit(ev.NodeChanged("stopped"))
    assert len(got) == 4


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ({"detail": {"msg": "insufficient capacity"}}, 503, "insufficient capacity"),
        ({"detail": [{"loc": ["body", "width"], "msg": "not an int"}]}, 422, "width: not an int"),
        ({"detail": {"msg": "payment required", "reason": "x"}}, 402, "payment required"),
    ],
)
def test_error_text(body: dict, status: int, text: str) -> None:  # type: ignore[type-arg]
    assert error_text(httpx.Response(status, json=body)) == text
