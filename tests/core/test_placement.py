"""VRAM placement: estimates, the warm-model planner and cold admission, as scenario tables."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from core.errors import ModelNotFound, OutOfVram
from core.placement import (
    ACTIVATION_MODELS,
    CALIBRATION,
    TYPICAL_WEIGHTS,
    Admission,
    ArchFamily,
    Fit,
    Footprint,
    GiB,
    GpuBudget,
    MiB,
    ModelDemand,
    PlacementState,
    PlanError,
    Resident,
    VramEstimate,
    admit,
    default_margin,
    describe_fit,
    detect_arch,
    estimate_vram,
    plan,
    route,
    verdict,
    weights_bytes,
)

T2I, I2I, I2V = "text-to-image", "image-to-image", "image-to-video"
SDXL_ID = "stabilityai/sdxl-turbo"
SD_ID = "stabilityai/sd-turbo"
SVD_ID = "stabilityai/stable-video-diffusion-img2vid-xt"
SVD_SMALL_ID = "stabilityai/svd-small"


def gb(x: float) -> int:
    return round(x * GiB)


# --- footprints from the calibrated estimates -----------------------------------------------

SDXL_W = gb(6.46)  # measured weights
SDXL_EST = estimate_vram(ArchFamily.SDXL_TURBO, SDXL_W, 512, 512)  # 10.4 GiB
SD_EST = estimate_vram(ArchFamily.SD_TURBO, TYPICAL_WEIGHTS[ArchFamily.SD_TURBO], 512, 512)
SVD_W = TYPICAL_WEIGHTS[ArchFamily.SVD_XT]
SVD_EST = estimate_vram(ArchFamily.SVD_XT, SVD_W, 1024, 576, 14)  # 26.3 GiB
SVD_SMALL_EST = estimate_vram(ArchFamily.SVD_XT, SVD_W, 768, 432, 14)  # 17.2 GiB


def demand(
    key: tuple[str, str],
    est: VramEstimate,
    *,
    warm: bool = True,
    gpus: tuple[int, ...] | None = None,
    measured: int | None = None,
) -> ModelDemand:
    return ModelDemand.from_footprint(Footprint(key, est, measured), warm=warm, gpus=gpus)


SDXL = demand((T2I, SDXL_ID), SDXL_EST)
SDXL_I2I = demand((I2I, SDXL_ID), SDXL_EST)
SDXL_COLD = demand((T2I, SDXL_ID), SDXL_EST, warm=False)
SD = demand((T2I, SD_ID), SD_EST)
SD_COLD = demand((T2I, SD_ID), SD_EST, warm=False)
SVD = demand((I2V, SVD_ID), SVD_EST)
SVD_SMALL = demand((I2V, SVD_SMALL_ID), SVD_SMALL_EST)

# A 24 GB card (margin 5% = 1.2 GiB): budget 22.3 GiB. An 8 GB card (margin 512 MiB).
RTX4090 = GpuBudget(0, "RTX 4090", total=24 * GiB, free=gb(23.5))
RTX3070 = GpuBudget(1, "RTX 3070", total=8 * GiB, free=gb(7.6), reserve=1 * GiB)  # 6.1 GiB
RTX3070_NO_RESERVE = GpuBudget(1, "RTX 3070", total=8 * GiB, free=gb(7.6))  # 7.1 GiB
RTX3080TI = GpuBudget(1, "RTX 3080 Ti", total=12 * GiB, free=gb(11.7))  # 11.1 GiB


def test_calibrated_footprints_used_below() -> None:
    assert SDXL_EST.total == pytest.approx(10.4 * GiB, abs=MiB)
    assert SVD_EST.total == pytest.approx(26.3 * GiB, abs=MiB)
    assert SD_EST.total == pytest.approx(6.34 * GiB, abs=10 * MiB)
    assert SVD_SMALL_EST.total == pytest.approx(17.24 * GiB, abs=10 * MiB)
    assert RTX4090.budget == gb(23.5) - 0 - default_margin(24 * GiB)
    assert default_margin(24 * GiB) == pytest.approx(1.2 * GiB, abs=1)
    assert default_margin(8 * GiB) == 512 * MiB
    assert RTX3070.budget == pytest.approx(6.1 * GiB, abs=1)


# --- plan: scenarios that succeed -----------------------------------------------------------

PLANS = [
    pytest.param(
        [RTX4090, RTX3070_NO_RESERVE],
        [SDXL, SD],
        [],
        {(T2I, SDXL_ID): (0,), (T2I, SD_ID): (1,)},
        (),
        id="sdxl-turbo and sd-turbo warm: largest first, sd-turbo best-fits the 8 GB card",
    ),
    pytest.param(
        [RTX4090, RTX3070],
        [SDXL, SD],
        [],
        {(T2I, SDXL_ID): (0,), (T2I, SD_ID): (0,)},
        (),
        id="a 1 GiB reserve on the 8 GB card sends sd-turbo to the 24 GB one",
    ),
    pytest.param(
        [RTX4090, RTX3070_NO_RESERVE],
        [SDXL, demand((T2I, SD_ID), SD_EST, gpus=(0,))],
        [],
        {(T2I, SDXL_ID): (0,), (T2I, SD_ID): (0,)},
        (),
        id="pin holds sd-turbo on GPU 0 though GPU 1 fits tighter",
    ),
    pytest.param(
        [RTX4090, RTX3070_NO_RESERVE],
        [SVD_SMALL, SDXL_COLD, SD],
        [],
        {(I2V, SVD_SMALL_ID): (0,), (T2I, SD_ID): (1,)},
        ((T2I, SDXL_ID),),
        id="svd-xt at 768x432 warm on 24 GB, sdxl-turbo cold is listed not placed",
    ),
    pytest.param(
        [RTX4090, RTX3080TI],
        [SDXL, SDXL_I2I],
        [],
        {(T2I, SDXL_ID): (0,), (I2I, SDXL_ID): (0,)},
        (),
        id="two pipelines of one model stay together though the other card fits one tighter",
    ),
    pytest.param(
        [RTX4090, RTX3070_NO_RESERVE],
        [SVD_SMALL, demand((T2I, SDXL_ID), SDXL_EST, measured=gb(6.5))],
        [],
        {(I2V, SVD_SMALL_ID): (0,), (T2I, SDXL_ID): (1,)},
        (),
        id="measured sdxl-turbo footprint (6.5 GiB) fits the 8 GB card its estimate does not",
    ),
    pytest.param(
        [
            GpuBudget(0, "RTX 4090", total=24 * GiB, free=gb(23.5) - SD_EST.total),
            RTX3070_NO_RESERVE,
        ],
        [SDXL, SD],
        [Resident(0, Footprint((T2I, SD_ID), SD_EST), warm=True, last_used=5.0)],
        {(T2I, SDXL_ID): (0,), (T2I, SD_ID): (0,)},
        (),
        id="a loaded warm model stays where it is (no reload onto the tighter card)",
    ),
    pytest.param(
        [GpuBudget(1, "RTX 3070", total=8 * GiB, free=gb(7.6) - gb(5.9))],
        [SD, demand((T2I, "runwayml/sd15"), VramEstimate(0, gb(5.9), gb(5.9)), warm=False)],
        [Resident(1, Footprint((T2I, "runwayml/sd15"), measured_bytes=gb(5.9)), last_used=1.0)],
        {(T2I, SD_ID): (1,)},
        ((T2I, "runwayml/sd15"),),
        id="a loaded cold model is evicted to make room for a warm one",
    ),
    pytest.param(
        [GpuBudget(0, "RTX 4090", total=24 * GiB, free=gb(23.5) - SD_EST.total)],
        [SDXL, SD_COLD],
        [Resident(0, Footprint((T2I, SD_ID), SD_EST), last_used=5.0)],
        {(T2I, SDXL_ID): (0,), (T2I, SD_ID): (0,)},
        ((T2I, SD_ID),),
        id="a loaded cold model stays while there is room",
    ),
]


@pytest.mark.parametrize(("gpus", "models", "resident", "assignments", "cold"), PLANS)
def test_plan(gpus, models, resident, assignments, cold) -> None:
    p = plan(gpus, models, resident)
    assert p.assignments == assignments
    assert p.cold == cold
    for g, gp in p.per_gpu.items():
        assert gp.used <= gp.budget, g
        assert set(gp.models) == {k for k, gs in assignments.items() if g in gs}


def test_shared_weights_counted_once_per_gpu() -> None:
    # 16.3 GiB budget: t2i + i2i of sdxl-turbo fit only if the 6.46 GiB weights count once.
    gpu = GpuBudget(0, "RTX 4090", total=24 * GiB, free=gb(23.5), reserve=6 * GiB)
    p = plan([gpu], [SDXL, SDXL_I2I])
    assert p.per_gpu[0].used == 2 * SDXL_EST.total - SDXL_W
    assert p.per_gpu[0].used == pytest.approx(14.34 * GiB, abs=5 * MiB)
    unshared = ModelDemand((I2I, SDXL_ID), SDXL_EST.total, warm=True)  # no shared bytes
    with pytest.raises(PlanError):
        plan([gpu], [SDXL, unshared])


def test_measured_footprint_replaces_estimate() -> None:
    gpus = [RTX4090, RTX3070_NO_RESERVE]
    with pytest.raises(PlanError, match=r"needs 10\.4 GiB"):
        plan(gpus, [SVD_SMALL, SDXL])
    measured = demand((T2I, SDXL_ID), SDXL_EST, measured=gb(6.5))
    assert plan(gpus, [SVD_SMALL, measured]).assignments[(T2I, SDXL_ID)] == (1,)


def test_exhaustive_search_when_best_fit_decreasing_fails() -> None:
    # Best-fit decreasing puts 5+5 on GPU 0 and strands a 3; 5+4+3 on each card fits.
    gpus = [GpuBudget(i, "card", total=16 * GiB, free=12 * GiB, margin=0) for i in (0, 1)]
    sizes = [5, 5, 4, 4, 3, 3]
    models = [ModelDemand((T2I, f"org/m{i}"), s * GiB, warm=True) for i, s in enumerate(sizes)]
    p = plan(gpus, models)
    assert all(gp.used == 12 * GiB for gp in p.per_gpu.values())
    assert len(p.assignments) == 6


def test_plan_evicts_unconfigured_residents_and_warns() -> None:
    gone = Resident(0, Footprint((T2I, "org/old"), measured_bytes=2 * GiB), last_used=1.0)
    gpu = GpuBudget(0, "RTX 4090", total=24 * GiB, free=gb(23.5) - 2 * GiB)
    p = plan([gpu], [SDXL_COLD, SD], [gone])
    assert p.evict == (gone,)
    assert p.per_gpu[0].budget == RTX4090.budget  # the resident's memory counts back
    assert p.assignments == {(T2I, SD_ID): (0,)}


def test_plan_warnings_tight_gpu_and_unplaceable_cold_model() -> None:
    gpu = GpuBudget(1, "RTX 3070", total=8 * GiB, free=gb(7.3))  # budget 6.8, sd 6.34: tight
    p = plan([gpu], [SD, ModelDemand((I2V, SVD_SMALL_ID), SVD_SMALL.need_bytes)])
    assert p.per_gpu[1].fit is Fit.TIGHT
    assert p.warnings == (
        "cold model stabilityai/svd-small (image-to-video) needs 17.2 GiB; with every cold model "
        "unloaded the most an allowed GPU offers is GPU 1 (RTX 3070): 0.5 GiB, so requests for "
        "it will be refused",
        "GPU 1 (RTX 3070): tight: 6.3 GiB of 6.8 GiB (0.5 GiB left)",
    )


# --- plan: scenarios that fail, with the exact message ---------------------------------------

PLAN_ERRORS = [
    pytest.param(
        [RTX4090, RTX3070],
        [SVD],
        "cannot place warm model stabilityai/stable-video-diffusion-img2vid-xt (image-to-video): "
        "needs 26.3 GiB; largest budget among allowed GPUs is GPU 0 (RTX 4090): 22.3 GiB free "
        "after 0.0 GiB reserve and 1.2 GiB margin",
        id="svd-xt at 1024x576x14 does not fit a 24 GB card",
    ),
    pytest.param(
        [RTX4090, RTX3070],
        [demand((T2I, SDXL_ID), SDXL_EST, gpus=(1,))],
        "cannot place warm model stabilityai/sdxl-turbo (text-to-image): needs 10.4 GiB; largest "
        "budget among allowed GPUs is GPU 1 (RTX 3070): 6.1 GiB free after 1.0 GiB reserve and "
        "0.5 GiB margin",
        id="sdxl-turbo pinned to the 8 GB card",
    ),
    pytest.param(
        [RTX4090],
        [SVD_SMALL, SDXL],
        "cannot place warm model stabilityai/sdxl-turbo (text-to-image): needs 10.4 GiB; largest "
        "budget among allowed GPUs is GPU 0 (RTX 4090): 22.3 GiB free after 0.0 GiB reserve and "
        "1.2 GiB margin, of which warm models stabilityai/svd-small (image-to-video) take "
        "17.2 GiB, leaving 5.1 GiB",
        id="warm set too large for one card",
    ),
    pytest.param(
        [RTX4090, RTX3070],
        [demand((T2I, SDXL_ID), SDXL_EST, gpus=(2,))],
        "stabilityai/sdxl-turbo (text-to-image) is pinned to GPU 2, but this node has "
        "GPU 0 (RTX 4090) and GPU 1 (RTX 3070)",
        id="pin to a GPU the node lacks",
    ),
    pytest.param(
        [],
        [SDXL],
        "cannot place warm model stabilityai/sdxl-turbo (text-to-image): needs 10.4 GiB; "
        "this node has no GPU",
        id="no GPU at all",
    ),
    pytest.param(
        [RTX4090],
        [SDXL, SDXL],
        "stabilityai/sdxl-turbo (text-to-image) is listed twice",
        id="a model listed twice",
    ),
]


@pytest.mark.parametrize(("gpus", "models", "message"), PLAN_ERRORS)
def test_plan_error(gpus, models, message) -> None:
    with pytest.raises(PlanError) as info:
        plan(gpus, models)
    assert info.value.msg == message


# --- cold admission ---------------------------------------------------------------------------


def gpu(index: int, budget: float) -> GpuBudget:
    """A GPU whose budget is exactly ``budget`` GiB (no reserve, no margin)."""
    return GpuBudget(index, f"card {index}", total=48 * GiB, free=gb(budget), margin=0)


def res(gpu_index: int, model: str, size: float, last_used: float, **kw) -> Resident:
    footprint = Footprint((T2I, model), measured_bytes=gb(size))
    return Resident(gpu_index, footprint, last_used=last_used, **kw)


NEW = ModelDemand((T2I, "org/new"), gb(5))
TWO_CARDS = (gpu(0, 10), gpu(1, 6))
LRU = (res(0, "org/a", 3, 10.0), res(0, "org/b", 3, 20.0), res(0, "org/c", 3, 30.0))

ADMISSIONS = [
    pytest.param(
        PlacementState(TWO_CARDS, (res(1, "org/new", 5, 1.0),)),
        NEW,
        set(),
        Admission(1, (), load=False),
        id="routes to the GPU that already holds it",
    ),
    pytest.param(
        PlacementState(TWO_CARDS, (res(0, "org/new", 5, 1.0), res(1, "org/new", 5, 1.0))),
        NEW,
        {(T2I, "org/new")},
        Admission(0, (), load=False),
        id="routes to the holder with the most room, even when busy",
    ),
    pytest.param(
        PlacementState(TWO_CARDS),
        NEW,
        set(),
        Admission(1),
        id="loads where it fits tightest",
    ),
    pytest.param(
        PlacementState(
            (gpu(0, 4), gpu(1, 8)),
            (Resident(0, Footprint((T2I, SDXL_ID), VramEstimate(gb(6), gb(2), gb(8)))),),
        ),
        ModelDemand((I2I, SDXL_ID), gb(8), shared_bytes=gb(6)),
        set(),
        Admission(0),
        id="loads beside its other pipeline to share the weights",
    ),
    pytest.param(
        PlacementState((gpu(0, 1),), LRU),
        NEW,
        set(),
        Admission(0, ((T2I, "org/a"), (T2I, "org/b"))),
        id="evicts idle cold models least recently used first",
    ),
    pytest.param(
        PlacementState((gpu(0, 1),), LRU),
        NEW,
        {(T2I, "org/a")},
        Admission(0, ((T2I, "org/b"), (T2I, "org/c"))),
        id="never evicts a busy model",
    ),
    pytest.param(
        PlacementState((gpu(0, 1),), (res(0, "org/a", 3, 10.0, warm=True), *LRU[1:])),
        NEW,
        set(),
        Admission(0, ((T2I, "org/b"), (T2I, "org/c"))),
        id="never evicts a warm model",
    ),
    pytest.param(
        PlacementState(
            (gpu(0, 1), gpu(1, 1)), (res(0, "org/a", 5, 50.0), res(1, "org/b", 5, 20.0))
        ),
        NEW,
        set(),
        Admission(1, ((T2I, "org/b"),)),
        id="evicts on the GPU whose idle models are stalest",
    ),
]


@pytest.mark.parametrize(("state", "want", "busy", "expected"), ADMISSIONS)
def test_admit(state, want, busy, expected) -> None:
    assert admit(state, want, busy, now=100.0) == expected


def test_admit_respects_min_idle() -> None:
    state = PlacementState((gpu(0, 1),), (res(0, "org/a", 3, 95.0), *LRU[1:]))
    got = admit(state, NEW, set(), now=100.0, min_idle_s=60.0)
    assert got == Admission(0, ((T2I, "org/b"), (T2I, "org/c")))


ADMIT_ERRORS = [
    pytest.param(
        PlacementState(
            (GpuBudget(0, "RTX 4090", total=24 * GiB, free=2 * GiB, reserve=0, margin=1 * GiB),),
            (
                res(0, "org/w", 8, 1.0, warm=True),
                res(0, "org/b", 4, 2.0),
                res(0, "org/c", 2, 3.0),
            ),
        ),
        ModelDemand((T2I, "org/new"), gb(10)),
        {(T2I, "org/b")},
        OutOfVram,
        "cannot load org/new (text-to-image): needs 10.0 GiB; GPU 0 (RTX 4090) has 1.0 GiB free "
        "after reserve and margin, 2.0 GiB more in idle cold models, 12.0 GiB held by warm or "
        "busy models (org/w (text-to-image), org/b (text-to-image))",
        id="everything else warm or busy",
    ),
    pytest.param(
        PlacementState(()),
        NEW,
        set(),
        OutOfVram,
        "cannot load org/new (text-to-image): needs 5.0 GiB; this node has no GPU",
        id="no GPU",
    ),
    pytest.param(
        PlacementState(TWO_CARDS),
        ModelDemand((T2I, "org/new"), gb(5), gpus=(3,)),
        set(),
        PlanError,
        "org/new (text-to-image) is pinned to GPU 3, but this node has GPU 0 (card 0) and "
        "GPU 1 (card 1)",
        id="pinned to a missing GPU",
    ),
]


@pytest.mark.parametrize(("state", "want", "busy", "error", "message"), ADMIT_ERRORS)
def test_admit_error(state, want, busy, error, message) -> None:
    with pytest.raises(error) as info:
        admit(state, want, busy, now=100.0)
    assert info.value.msg == message


def test_route() -> None:
    state = PlacementState(TWO_CARDS, (res(0, "org/x", 1, 0.0), res(1, "org/x", 1, 0.0)))
    assert route(state, (T2I, "org/x")) == 0  # more budget left
    assert route(state, (T2I, "org/x"), jobs={0: 2, 1: 0}) == 1  # fewer jobs in flight
    assert route(state, (T2I, "org/x"), allowed=[1]) == 1
    assert route(state, (T2I, "org/none")) is None


# --- verdicts ---------------------------------------------------------------------------------

VERDICTS = [
    pytest.param(10, 5, Fit.FITS, "fits: 5.0 GiB of 10.0 GiB (5.0 GiB left)", id="half"),
    pytest.param(10, 9, Fit.FITS, "fits: 9.0 GiB of 10.0 GiB (1.0 GiB left)", id="10% left"),
    pytest.param(10, 9.5, Fit.TIGHT, "tight: 9.5 GiB of 10.0 GiB (0.5 GiB left)", id="5% left"),
    pytest.param(10, 10, Fit.TIGHT, "tight: 10.0 GiB of 10.0 GiB (0.0 GiB left)", id="exactly"),
    pytest.param(
        10,
        10.4,
        Fit.DOES_NOT_FIT,
        "does not fit: needs 10.4 GiB, 10.0 GiB available (0.4 GiB short)",
        id="over",
    ),
    pytest.param(
        10.44,
        10.4,
        Fit.TIGHT,
        "tight: 10.40 GiB of 10.44 GiB (0.04 GiB left)",
        id="more digits when one would hide the difference",
    ),
    pytest.param(0, 0, Fit.FITS, "fits: 0.0 GiB of 0.0 GiB (0.0 GiB left)", id="nothing"),
]


@pytest.mark.parametrize(("budget", "need", "fit", "text"), VERDICTS)
def test_verdict(budget, need, fit, text) -> None:
    assert verdict(gb(budget), gb(need)) is fit
    assert describe_fit(gb(budget), gb(need)) == text


# --- estimation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "weights", "size", "measured_nvml"),
    [
        pytest.param(ArchFamily.SDXL_TURBO, SDXL_W, (512, 512, 1), 10.4, id="sdxl-turbo 512x512"),
        pytest.param(ArchFamily.SVD_XT, SVD_W, (1024, 576, 14), 26.3, id="svd-xt 1024x576x14"),
    ],
)
def test_estimate_within_10_percent_of_measured(arch, weights, size, measured_nvml) -> None:
    est = estimate_vram(arch, weights, *size)
    assert abs(est.total - measured_nvml * GiB) <= 0.10 * measured_nvml * GiB
    assert est.weights == weights
    assert est.total == est.weights + est.activations


def test_calibration_rows_reproduce_their_nvml_figure() -> None:
    for cal in CALIBRATION:
        est = estimate_vram(cal.arch, cal.weights, cal.width, cal.height, cal.frames, cal.batch)
        assert est.total == pytest.approx(cal.nvml_used, abs=2)
        assert "H200" in cal.source and "2026-11-28" in cal.source
    assert TYPICAL_WEIGHTS[ArchFamily.SDXL] == pytest.approx(6.46 * GiB, rel=0.01)
    measured = {a for a, m in ACTIVATION_MODELS.items() if m.measured}
    assert measured == {ArchFamily.SDXL_TURBO, ArchFamily.SVD_XT}


@pytest.mark.parametrize("arch", list(ArchFamily))
def test_activations_scale_with_pixels_frames_and_batch(arch) -> None:
    one = estimate_vram(arch, GiB, 512, 512).activations
    four = estimate_vram(arch, GiB, 1024, 1024).activations
    assert estimate_vram(arch, GiB, 512, 512, frames=4).activations == four
    assert estimate_vram(arch, GiB, 512, 512, batch=4).activations == four
    per_pixel = ACTIVATION_MODELS[arch].per_pixel
    assert four - one == pytest.approx(3 * 512 * 512 * per_pixel, abs=2)
    unknown = estimate_vram(ArchFamily.UNKNOWN, GiB, 1024, 1024).activations
    assert unknown >= four


@pytest.mark.parametrize(
    "bad", [dict(width=0), dict(height=-8), dict(frames=0), dict(batch=0), dict(weights=-1)]
)
def test_estimate_rejects_nonsense(bad) -> None:
    args = {"weights": GiB, "width": 512, "height": 512, "frames": 1, "batch": 1} | bad
    with pytest.raises(ValueError):
        estimate_vram(
            ArchFamily.SD15,
            args["weights"],
            args["width"],
            args["height"],
            args["frames"],
            args["batch"],
        )


def test_footprint_measurement_replaces_estimate() -> None:
    est = Footprint((T2I, SDXL_ID), SDXL_EST)
    assert est.need == SDXL_EST.total and est.shared == SDXL_W and not est.measured
    meas = Footprint((T2I, SDXL_ID), SDXL_EST, measured_bytes=gb(9))
    assert meas.need == gb(9) and meas.shared == SDXL_W and meas.measured
    assert Footprint((T2I, SDXL_ID), SDXL_EST, measured_bytes=gb(5)).shared == gb(5)
    assert Footprint((T2I, SDXL_ID), measured_bytes=gb(9)).shared == 0
    with pytest.raises(ValueError):
        Footprint((T2I, SDXL_ID))
    with pytest.raises(ValueError):
        VramEstimate(1, 2, 4)


DETECT = [
    ("StableDiffusionPipeline", {"cross_attention_dim": 768, "sample_size": 64}, "", "sd15"),
    ("StableDiffusionPipeline", None, "", "sd15"),
    ("StableDiffusionPipeline", {"cross_attention_dim": 1024, "sample_size": 96}, "", "sd21"),
    ("StableDiffusionPipeline", {"cross_attention_dim": 1024, "sample_size": 64}, "", "sd21"),
    (
        "StableDiffusionPipeline",
        {"cross_attention_dim": 1024, "sample_size": 64},
        "stabilityai/sd-turbo",
        "sd_turbo",
    ),
    ("StableDiffusionPipeline", None, "stabilityai/sd-turbo", "sd_turbo"),
    ("StableDiffusionImg2ImgPipeline", {"cross_attention_dim": 768}, "", "sd15"),
    ("StableDiffusionXLPipeline", {"sample_size": 128}, "", "sdxl"),
    ("StableDiffusionXLPipeline", {"sample_size": 64}, "", "sdxl_turbo"),
    ("StableDiffusionXLPipeline", None, "stabilityai/sdxl-turbo", "sdxl_turbo"),
    ("StableDiffusionXLImg2ImgPipeline", {"sample_size": 128}, "", "sdxl"),
    ("StableVideoDiffusionPipeline", {"num_frames": 14}, "", "svd"),
    ("StableVideoDiffusionPipeline", {"num_frames": 25}, "", "svd_xt"),
    ("StableVideoDiffusionPipeline", None, "stabilityai/stable-video-diffusion-img2vid", "svd"),
    ("StableVideoDiffusionPipeline", None, "", "svd_xt"),
    ("StableDiffusion3Pipeline", {"sample_size": 128}, "", "unknown"),
    ("", None, "", "unknown"),
]


@pytest.mark.parametrize(
    ("cls", "unet", "model_id", "arch"),
    [
        pytest.param(*row, id=f"{row[0] or 'no class'}-{row[2] or row[1]}->{row[3]}")
        for row in DETECT
    ],
)
def test_detect_arch(cls, unet, model_id, arch) -> None:
    assert detect_arch({"_class_name": cls}, unet, model_id=model_id) is ArchFamily(arch)


def test_detect_arch_reads_name_or_path() -> None:
    index = {"_class_name": "StableDiffusionPipeline", "_name_or_path": "stabilityai/sd-turbo"}
    assert detect_arch(index, {"cross_attention_dim": 1024}) is ArchFamily.SD_TURBO


# --- weights on disk --------------------------------------------------------------------------

F32, F16 = np.float32, np.float16


def tensors(n: int, dtype: type, ids: int = 0) -> dict[str, np.ndarray]:
    out = {"w": np.zeros(n, dtype=dtype)}
    if ids:
        out["position_ids"] = np.arange(ids, dtype=np.int64)
    return out


def write_raw_safetensors(path: Path, dtype: str, shape: list[int], itemsize: int) -> None:
    """A safetensors file by hand (for BF16, which numpy cannot hold)."""
    n = math.prod(shape) * itemsize
    header = json.dumps({"w": {"dtype": dtype, "shape": shape, "data_offsets": [0, n]}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(n))


INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "safety_checker": [None, None],
}

WEIGHTS = [
    pytest.param(
        {
            "unet/diffusion_pytorch_model.safetensors": (1000, F32, 0),
            "text_encoder/model.safetensors": (500, F32, 77),
        },
        2,
        1000 * 2 + 500 * 2 + 77 * 8,
        id="fp32 files count half in fp16, int64 buffers stay 8 bytes",
    ),
    pytest.param(
        {
            "unet/diffusion_pytorch_model.safetensors": (1000, F32, 0),
            "unet/diffusion_pytorch_model.fp16.safetensors": (600, F16, 0),
            "vae/diffusion_pytorch_model.safetensors": (100, F32, 0),
        },
        2,
        600 * 2 + 100 * 2,
        id="fp16 variant preferred where present",
    ),
    pytest.param(
        {"unet/diffusion_pytorch_model.fp16.safetensors": (1000, F16, 0)},
        4,
        1000 * 4,
        id="fp16 files count double when loaded in fp32",
    ),
    pytest.param(
        {
            "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors": (400, F16, 0),
            "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors": (200, F16, 0),
            "unet/diffusion_pytorch_model.safetensors": (1000, F32, 0),
        },
        2,
        600 * 2,
        id="sharded fp16 variant",
    ),
    pytest.param(
        {
            "unet/diffusion_pytorch_model.safetensors": (100, F16, 0),
            "safety_checker/model.safetensors": (5000, F32, 0),
            "controlnet/diffusion_pytorch_model.safetensors": (5000, F32, 0),
        },
        2,
        100 * 2,
        id="only components listed in model_index, null ones skipped",
    ),
    pytest.param(
        {
            "unet/diffusion_pytorch_model.safetensors": (100, F32, 0),
            "unet/diffusion_pytorch_model.bin": b"x" * 4000,
        },
        2,
        100 * 2,
        id="safetensors preferred over bin",
    ),
    pytest.param(
        {"unet/diffusion_pytorch_model.bin": b"x" * 4000},
        2,
        2000,
        id="an unreadable bin counts as fp32",
    ),
    pytest.param(
        {"unet/diffusion_pytorch_model.fp16.bin": b"x" * 4000},
        2,
        4000,
        id="a bin named fp16 counts as fp16",
    ),
    pytest.param(
        {"unet/diffusion_pytorch_model.safetensors": b"\xff" * 64},
        2,
        64,
        id="a corrupt header counts the file size",
    ),
    pytest.param(
        {"unet/diffusion_pytorch_model.safetensors": ("BF16", [30, 10], 2)},
        2,
        300 * 2,
        id="bf16 read from the header",
    ),
]


@pytest.mark.parametrize(("files", "dtype_bytes", "expected"), WEIGHTS)
def test_weights_bytes(tmp_path: Path, files, dtype_bytes, expected) -> None:
    (tmp_path / "model_index.json").write_text(json.dumps(INDEX))
    (tmp_path / "tokenizer").mkdir()
    for rel, spec in files.items():
        path = tmp_path / rel
        path.parent.mkdir(exist_ok=True)
        if isinstance(spec, bytes):
            path.write_bytes(spec)
        elif isinstance(spec[0], str):
            write_raw_safetensors(path, *spec)
        else:
            save_file(tensors(*spec), str(path))
    assert weights_bytes(tmp_path, dtype_bytes) == expected


def test_weights_bytes_without_model_index_counts_the_folder(tmp_path: Path) -> None:
    save_file(tensors(256, F32), str(tmp_path / "model.safetensors"))
    assert weights_bytes(tmp_path) == 512


def test_weights_bytes_reads_bin_storage_types(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    (tmp_path / "model_index.json").write_text(json.dumps(INDEX))
    (tmp_path / "unet").mkdir()
    path = tmp_path / "unet" / "diffusion_pytorch_model.bin"
    torch.save({"w": torch.zeros(10_000, dtype=torch.float16)}, path)
    size = path.stat().st_size
    assert weights_bytes(tmp_path, 2) == size  # stored fp16: counted as is
    assert weights_bytes(tmp_path, 4) == size * 2


def test_weights_bytes_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="no model folder"):
        weights_bytes(tmp_path / "nope")


def test_placement_imports_neither_torch_nor_qt() -> None:
    code = (
        "import sys, core.placement; "
        "print(sorted(m for m in ('torch', 'PySide6') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "[]"
