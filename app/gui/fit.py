"""VRAM fit for the Models page: each model's need, its verdict before warming, and the
planner's verdict for the whole warm set. Pure functions over core placement data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.config import ModelsConfig
from core.placement import (
    Footprint,
    GpuBudget,
    ModelDemand,
    PlanError,
    Resident,
    describe_fit,
    plan,
    verdict,
)
from core.placement.estimate import ModelKey, describe
from widgets._format import fmt_bytes
from widgets.models_config_panel import FitInfo, Need


def label(b: GpuBudget) -> str:
    """``GPU 0 (RTX 4090)``, or ``CPU (AMD EPYC)`` for a CPU runner's share of RAM."""
    return b.name if b.index < 0 else b.label


def fit_text(budget: int, need: int) -> str:
    """describe_fit's sentence, with sizes that stay readable for small models (MiB)."""
    if min(budget, need) >= 2**30 or budget < 0:
        return describe_fit(budget, need)
    word = {"fits": "fits", "tight": "tight", "does_not_fit": "does not fit"}
    fit = verdict(budget, need)
    if fit == "does_not_fit":
        return (
            f"does not fit: needs {fmt_bytes(need)}, {fmt_bytes(budget)} available "
            f"({fmt_bytes(need - budget)} short)"
        )
    return (
        f"{word[fit]}: {fmt_bytes(need)} of {fmt_bytes(budget)} ({fmt_bytes(budget - need)} left)"
    )


@dataclass(frozen=True)
class FitReport:
    needs: dict[ModelKey, Need]
    fits: dict[ModelKey, FitInfo]
    plan_ok: bool
    plan_lines: list[str]


def report(
    config: ModelsConfig,
    footprints: dict[ModelKey, Footprint | None],
    notes: dict[ModelKey, str],
    budgets: Sequence[GpuBudget],
    residents: Sequence[Resident] = (),
) -> FitReport:
    """``footprints``: each local entry's footprint (None when it cannot be estimated);
    ``residents``: what a running node holds now (credited back to its GPU's budget)."""
    by_index = {b.index: b for b in budgets}
    held: dict[tuple[int, ModelKey], int] = {(r.gpu, r.key): r.need_bytes for r in residents}
    needs: dict[ModelKey, Need] = {}
    fits: dict[ModelKey, FitInfo] = {}
    demands = []
    for e in config.entries:
        if e.key not in footprints:
            continue
        fp = footprints[e.key]
        if fp is None:
            needs[e.key] = Need(None, note=notes.get(e.key, "cannot estimate"))
            continue
        needs[e.key] = Need(fp.need, fp.measured, notes.get(e.key, ""))
        allowed = [by_index[g] for g in (e.gpus or by_index) if g in by_index]
        if allowed:
            best = max(allowed, key=lambda b: b.budget + held.get((b.index, e.key), 0))
            room = best.budget + held.get((best.index, e.key), 0)
            fit = verdict(room, fp.need)
            fits[e.key] = FitInfo(str(fit), f"{fit_text(room, fp.need)} on {label(best)}")
        elif e.gpus:
            pins = ", ".join(f"GPU {g}" for g in e.gpus)
            fits[e.key] = FitInfo("does_not_fit", f"pinned to {pins}, which the node does not use")
        if e.warm:
            demands.append(ModelDemand.from_footprint(fp, warm=True, gpus=e.gpus))
    if not budgets:
        return FitReport(needs, fits, False, ["No device is chosen: turn one on on the GPUs page."])
    if not demands:
        lines = ["No warm model: every model loads on its first job (cold)."]
        return FitReport(needs, fits, True, lines)
    try:
        result = plan(list(budgets), demands, resident=tuple(residents))
    except PlanError as exc:
        return FitReport(needs, fits, False, [f"The warm models do not fit: {exc.msg}"])
    lines = []
    for index, gp in sorted(result.per_gpu.items()):
        if not gp.models:
            continue
        names = ", ".join(describe(k) for k in gp.models)
        lines.append(f"{label(by_index[index])}: {fit_text(gp.budget, gp.used)} — {names}")
    lines += [f"Note: {w}" for w in result.warnings]
    return FitReport(needs, fits, True, ["The warm models fit:", *lines])
