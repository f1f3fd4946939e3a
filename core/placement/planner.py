"""Which GPU holds which model: a pure planner for warm models, admission for cold ones.

Units are bytes. A GPU's budget is ``free - reserve - margin``, where ``free`` is what NVML
reports free now (so models Orchard has loaded are already outside it) and the margin defaults
to the larger of 5% of the card and 512 MiB. Rules (see ``docs/placement.md``):

- :func:`plan` places warm models largest first, each on the allowed GPU where it leaves the
  least room (best-fit decreasing). A model_id's pipelines (text-to-image and image-to-image
  share the weights) go as one item, onto one GPU when they fit there; otherwise a pipeline
  prefers the GPU holding its model_id's weights, then one where it is loaded now. If that
  heuristic fails, a bounded depth-first search (SEARCH_LIMIT tries) looks for any assignment
  before :class:`PlanError` says which model does not fit, with numbers.
- :func:`admit` brings a cold model in on demand: route to a GPU that holds it; else load where
  it fits; else evict idle cold models least recently used first (never warm, never busy);
  else :class:`core.errors.OutOfVram` with numbers.
- :func:`verdict` is the fits / tight / does-not-fit the GUI shows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from core.errors import OrchardError, OutOfVram
from core.placement.estimate import Footprint, MiB, ModelKey, describe, gib

#: Safety margin when a GPU names none: the larger of this share of the card and MIN_MARGIN.
#: It absorbs what the estimate cannot see: fragmentation, another process's growth, a driver.
MARGIN_FRACTION = 0.05
MIN_MARGIN = 512 * MiB
#: Under this share of the budget left over, a fit is "tight".
TIGHT_HEADROOM = 0.10
#: Most assignments the exhaustive search tries when best-fit decreasing fails.
SEARCH_LIMIT = 5_000


class PlanError(OrchardError):
    """The configuration asks for what the GPUs cannot hold (409: it conflicts with them)."""

    status = 409


class Fit(StrEnum):
    FITS = "fits"
    TIGHT = "tight"
    DOES_NOT_FIT = "does_not_fit"


def default_margin(total: int) -> int:
    return max(math.ceil(total * MARGIN_FRACTION), MIN_MARGIN)


def verdict(gpu_budget: int, need: int) -> Fit:
    """Does ``need`` fit in ``gpu_budget``? Tight when under 10% of the budget would be left."""
    if need > gpu_budget:
        return Fit.DOES_NOT_FIT
    if gpu_budget - need < TIGHT_HEADROOM * gpu_budget:
        return Fit.TIGHT
    return Fit.FITS


def _digits(*values: int) -> int:
    """Decimals enough that different byte counts do not print the same."""
    for digits in (1, 2):
        if len({gib(v, digits) for v in values}) == len(set(values)):
            return digits
    return 3


def describe_fit(gpu_budget: int, need: int) -> str:
    """``fits: 10.4 GiB of 22.3 GiB (11.9 GiB left)`` and the like, for the GUI."""
    d = _digits(gpu_budget, need)
    fit = verdict(gpu_budget, need)
    if fit is Fit.DOES_NOT_FIT:
        short = gib(need - gpu_budget, d)
        return f"does not fit: needs {gib(need, d)}, {gib(gpu_budget, d)} available ({short} short)"
    left = gib(gpu_budget - need, d)
    word = "tight" if fit is Fit.TIGHT else "fits"
    return f"{word}: {gib(need, d)} of {gib(gpu_budget, d)} ({left} left)"


@dataclass(frozen=True)
class GpuBudget:
    """One GPU as placement sees it. ``free`` is NVML's free memory now; ``margin`` None means
    :func:`default_margin` of ``total``."""

    index: int
    name: str
    total: int
    free: int
    reserve: int = 0
    margin: int | None = None

    @property
    def safety_margin(self) -> int:
        return default_margin(self.total) if self.margin is None else self.margin

    @property
    def budget(self) -> int:
        """``free - reserve - margin``; negative when the card is already past it."""
        return self.free - self.reserve - self.safety_margin

    @property
    def label(self) -> str:
        return f"GPU {self.index} ({self.name})"


@dataclass(frozen=True)
class ModelDemand:
    """A model to place. ``gpus`` pins it to those GPU indices (None: any). ``shared_bytes`` of
    ``need_bytes`` (the weights) are counted once per GPU among demands of one model_id."""

    key: ModelKey
    need_bytes: int
    warm: bool = False
    gpus: tuple[int, ...] | None = None
    shared_bytes: int = 0

    def __post_init__(self) -> None:
        if self.need_bytes < 0 or not 0 <= self.shared_bytes <= self.need_bytes:
            raise ValueError(
                f"{describe(self.key)}: need {self.need_bytes} and shared {self.shared_bytes} "
                "must satisfy 0 <= shared <= need"
            )

    @property
    def share_key(self) -> str:
        return self.key[1]

    @classmethod
    def from_footprint(
        cls, footprint: Footprint, *, warm: bool = False, gpus: tuple[int, ...] | None = None
    ) -> ModelDemand:
        return cls(footprint.model_key, footprint.need, warm, gpus, footprint.shared)


@dataclass(frozen=True)
class Resident:
    """A model loaded now on ``gpu``; ``last_used`` is when its last job ended (any clock)."""

    gpu: int
    footprint: Footprint
    warm: bool = False
    last_used: float = 0.0

    @property
    def key(self) -> ModelKey:
        return self.footprint.model_key

    @property
    def share_key(self) -> str:
        return self.key[1]

    @property
    def need_bytes(self) -> int:
        return self.footprint.need

    @property
    def shared_bytes(self) -> int:
        return self.footprint.shared


class _Load(Protocol):
    @property
    def key(self) -> ModelKey: ...
    @property
    def share_key(self) -> str: ...
    @property
    def need_bytes(self) -> int: ...
    @property
    def shared_bytes(self) -> int: ...


def _used(loads: Iterable[_Load]) -> int:
    """Bytes a set of models takes on one GPU, each model_id's shared weights counted once."""
    total = 0
    shared: dict[str, int] = {}
    for load in loads:
        total += load.need_bytes - load.shared_bytes
        shared[load.share_key] = max(shared.get(load.share_key, 0), load.shared_bytes)
    return total + sum(shared.values())


def _cost(present: Sequence[_Load], load: _Load) -> int:
    return _used([*present, load]) - _used(present)


def _names(loads: Iterable[_Load]) -> str:
    return ", ".join(describe(load.key) for load in loads)


@dataclass(frozen=True)
class GpuPlan:
    """A GPU in a plan: the budget it was planned against, what the plan puts on it."""

    budget: int
    used: int
    models: tuple[ModelKey, ...]

    @property
    def left(self) -> int:
        return self.budget - self.used

    @property
    def fit(self) -> Fit:
        return verdict(self.budget, self.used)


@dataclass(frozen=True)
class Plan:
    """``assignments`` maps each placed model to its GPUs (warm models, and loaded cold models
    that stay); ``cold`` lists the cold demands, loaded on request; ``evict`` the residents to
    unload for this plan."""

    assignments: dict[ModelKey, tuple[int, ...]]
    per_gpu: dict[int, GpuPlan]
    cold: tuple[ModelKey, ...]
    warnings: tuple[str, ...] = ()
    evict: tuple[Resident, ...] = ()


def _by_index(gpus: Iterable[GpuBudget]) -> dict[int, GpuBudget]:
    out: dict[int, GpuBudget] = {}
    for gpu in gpus:
        if gpu.index in out:
            raise PlanError(f"GPU index {gpu.index} is listed twice")
        out[gpu.index] = gpu
    return out


def _node_gpus(by_index: Mapping[int, GpuBudget]) -> str:
    labels = [by_index[i].label for i in sorted(by_index)]
    if not labels:
        return "no GPU"
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def _allowed(by_index: Mapping[int, GpuBudget], demand: ModelDemand) -> tuple[int, ...]:
    if demand.gpus is None:
        return tuple(sorted(by_index))
    if not demand.gpus:
        raise PlanError(f"{describe(demand.key)} is pinned to an empty list of GPUs")
    missing = sorted({g for g in demand.gpus if g not in by_index})
    if missing:
        raise PlanError(
            f"{describe(demand.key)} is pinned to GPU {', '.join(map(str, missing))}, "
            f"but this node has {_node_gpus(by_index)}"
        )
    return tuple(sorted(set(demand.gpus)))


def _candidates(
    demand: ModelDemand,
    allowed: Sequence[int],
    placed: Mapping[int, list[_Load]],
    capacity: Mapping[int, int],
    holders: Sequence[int],
) -> list[int]:
    """Allowed GPUs where ``demand`` fits, best first: sharing weights, holding it, tightest."""
    ranked = []
    for g in allowed:
        cost = _cost(placed[g], demand)
        left = capacity[g] - _used(placed[g]) - cost
        if left >= 0:
            ranked.append((cost >= demand.need_bytes, g not in holders, left, g))
    return [r[-1] for r in sorted(ranked)]


def _group_gpu(
    group: Sequence[ModelDemand],
    allowed: Mapping[ModelKey, tuple[int, ...]],
    placed: Mapping[int, list[_Load]],
    capacity: Mapping[int, int],
    holders: Mapping[ModelKey, list[int]],
) -> int | None:
    """The GPU allowed to every demand of ``group`` where all fit together: holding one of them
    first, then tightest."""
    common = set.intersection(*(set(allowed[d.key]) for d in group))
    ranked = []
    for g in common:
        left = capacity[g] - _used([*placed[g], *group])
        if left >= 0:
            held = any(g in holders.get(d.key, []) for d in group)
            ranked.append((not held, left, g))
    return min(ranked)[-1] if ranked else None


def _search(
    warm: Sequence[ModelDemand],
    allowed: Mapping[ModelKey, tuple[int, ...]],
    capacity: Mapping[int, int],
    holders: Mapping[ModelKey, list[int]],
) -> dict[int, list[_Load]] | None:
    """Depth-first over every assignment, best candidates first, at most SEARCH_LIMIT tries.

    Prunes a branch when what is left to place (each model without its shareable weights)
    exceeds the room left, and tries only one of several GPUs that are alike at that point.
    """
    placed: dict[int, list[_Load]] = {g: [] for g in capacity}
    floor = [d.need_bytes - d.shared_bytes for d in warm]
    rest_floor = [sum(floor[i:]) for i in range(len(warm) + 1)]
    tries = SEARCH_LIMIT

    def go(i: int) -> bool:
        nonlocal tries
        if i == len(warm):
            return True
        if rest_floor[i] > sum(capacity[g] - _used(placed[g]) for g in placed):
            return False
        d, seen = warm[i], set()
        sharing = {e.share_key for e in warm[i:] if e.shared_bytes}
        for g in _candidates(d, allowed[d.key], placed, capacity, holders.get(d.key, [])):
            alike = (
                capacity[g] - _used(placed[g]),
                frozenset(load.share_key for load in placed[g] if load.share_key in sharing),
                tuple(g in allowed[e.key] or g in holders.get(e.key, []) for e in warm[i:]),
            )
            if alike in seen:
                continue
            seen.add(alike)
            tries -= 1
            if tries < 0:
                return False
            placed[g].append(d)
            if go(i + 1):
                return True
            placed[g].pop()
        return False

    return placed if go(0) else None


def _warm_error(
    demand: ModelDemand,
    allowed: Sequence[int],
    by_index: Mapping[int, GpuBudget],
    capacity: Mapping[int, int],
    placed: Mapping[int, list[_Load]],
) -> PlanError:
    head = f"cannot place warm model {describe(demand.key)}"
    if not allowed:
        return PlanError(f"{head}: needs {gib(demand.need_bytes)}; this node has no GPU")
    best = max(allowed, key=lambda g: (capacity[g] - _used(placed[g]), -g))
    gpu, used = by_index[best], _used(placed[best])
    left, credit = capacity[best] - used, capacity[best] - by_index[best].budget
    d = _digits(demand.need_bytes, left)
    msg = (
        f"{head}: needs {gib(demand.need_bytes, d)}; largest budget among allowed GPUs is "
        f"{gpu.label}: {gib(capacity[best], d)} free after {gib(gpu.reserve)} reserve and "
        f"{gib(gpu.safety_margin)} margin"
    )
    if credit:
        msg += f" (counting {gib(credit)} that Orchard's loaded models hold now)"
    if placed[best]:
        msg += (
            f", of which warm models {_names(placed[best])} take {gib(used)}, "
            f"leaving {gib(left, d)}"
        )
    return PlanError(msg)


def plan(
    gpus: Sequence[GpuBudget],
    models: Sequence[ModelDemand],
    resident: Sequence[Resident] = (),
) -> Plan:
    """Place the warm models; list the cold ones; say which loaded models must go.

    ``resident`` are the models loaded now: their memory counts back into their GPU's budget
    (the plan lays the GPU out anew), a warm model stays where it is loaded when allowed and
    it fits, and loaded models still configured stay while room is left (most recently used
    first). The others are in ``Plan.evict``.
    """
    by_index = _by_index(gpus)
    demands: dict[ModelKey, ModelDemand] = {}
    for d in models:
        if d.key in demands:
            raise PlanError(f"{describe(d.key)} is listed twice")
        demands[d.key] = d
    allowed = {k: _allowed(by_index, d) for k, d in demands.items()}
    held: dict[int, list[Resident]] = {g: [] for g in by_index}
    holders: dict[ModelKey, list[int]] = {}
    for r in resident:
        if r.gpu in held:
            held[r.gpu].append(r)
            holders.setdefault(r.key, []).append(r.gpu)
    capacity = {g: by_index[g].budget + _used(held[g]) for g in by_index}
    warm = sorted((d for d in demands.values() if d.warm), key=lambda d: (-d.need_bytes, d.key))

    placed: dict[int, list[_Load]] = {g: [] for g in by_index}
    for d in warm:  # a warm model stays where it is loaded
        for g in sorted(holders.get(d.key, [])):
            if g in allowed[d.key] and _cost(placed[g], d) <= capacity[g] - _used(placed[g]):
                placed[g].append(d)
                break
    groups: dict[str, list[ModelDemand]] = {}
    for d in warm:  # a model_id's pipelines go as one item: largest first, together if they fit
        groups.setdefault(d.share_key, []).append(d)
    ordered = sorted(groups.values(), key=lambda ds: (-_used(ds), ds[0].key))
    done = {load.key for loads in placed.values() for load in loads}
    failed: ModelDemand | None = None
    for group in ordered:
        todo = [d for d in group if d.key not in done]
        together = _group_gpu(todo, allowed, placed, capacity, holders) if len(todo) > 1 else None
        if together is not None:
            placed[together].extend(todo)
            continue
        for d in todo:
            fits = _candidates(d, allowed[d.key], placed, capacity, holders.get(d.key, []))
            if not fits:
                failed = d
                break
            placed[fits[0]].append(d)
        if failed is not None:
            break
    if failed is not None:
        found = _search([d for ds in ordered for d in ds], allowed, capacity, holders)
        if found is None:
            raise _warm_error(failed, allowed[failed.key], by_index, capacity, placed)
        placed = found

    warm_used = {g: _used(placed[g]) for g in by_index}
    warnings: list[str] = []
    for d in demands.values():
        if d.warm:
            continue
        room = {g: capacity[g] - warm_used[g] - _cost(placed[g], d) for g in allowed[d.key]}
        if room and max(room.values()) < 0:
            best = max(room, key=lambda g: (room[g], -g))
            offer = capacity[best] - warm_used[best]
            dg = _digits(d.need_bytes, offer)
            warnings.append(
                f"cold model {describe(d.key)} needs {gib(d.need_bytes, dg)}; with every cold "
                f"model unloaded the most an allowed GPU offers is {by_index[best].label}: "
                f"{gib(offer, dg)}, so requests for it will be refused"
            )

    evict: list[Resident] = []
    kept = {(load.key, g) for g, loads in placed.items() for load in loads}
    for r in sorted(resident, key=lambda r: (-r.last_used, r.gpu, r.key)):
        if (r.key, r.gpu) in kept:
            continue
        g = r.gpu
        if (
            r.key in demands
            and g in placed
            and g in allowed[r.key]
            and _cost(placed[g], r) <= capacity[g] - _used(placed[g])
        ):
            placed[g].append(r)
            kept.add((r.key, g))
        else:
            evict.append(r)

    assignments: dict[ModelKey, tuple[int, ...]] = {}
    for key, g in sorted(kept, key=lambda kg: (kg[1], kg[0])):
        assignments[key] = (*assignments.get(key, ()), g)
    per_gpu = {
        g: GpuPlan(capacity[g], _used(placed[g]), tuple(load.key for load in placed[g]))
        for g in sorted(by_index)
    }
    for g, gp in per_gpu.items():
        if gp.models and gp.fit is Fit.TIGHT:
            warnings.append(f"{by_index[g].label}: {describe_fit(gp.budget, gp.used)}")
    evict.sort(key=lambda r: (r.last_used, r.gpu, r.key))
    return Plan(
        assignments=assignments,
        per_gpu=per_gpu,
        cold=tuple(d.key for d in demands.values() if not d.warm),
        warnings=tuple(warnings),
        evict=tuple(evict),
    )


# --- on demand -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PlacementState:
    """GPUs as NVML sees them now, and the models loaded on them (already outside ``free``)."""

    gpus: tuple[GpuBudget, ...]
    residents: tuple[Resident, ...] = ()

    def on(self, gpu: int) -> tuple[Resident, ...]:
        return tuple(r for r in self.residents if r.gpu == gpu)


@dataclass(frozen=True)
class Admission:
    """Run the model on ``gpu``; first unload ``evict`` there, then load it unless ``load`` is
    False (it is loaded there already)."""

    gpu: int
    evict: tuple[ModelKey, ...] = ()
    load: bool = True


def route(
    state: PlacementState,
    key: ModelKey,
    *,
    jobs: Mapping[int, int] | None = None,
    allowed: Iterable[int] | None = None,
) -> int | None:
    """The least loaded GPU holding ``key``: fewest ``jobs`` in flight, then most budget left."""
    budgets = {g.index: g.budget for g in state.gpus}
    ok = set(budgets if allowed is None else allowed) & set(budgets)
    holders = {r.gpu for r in state.residents if r.key == key and r.gpu in ok}
    if not holders:
        return None
    jobs = jobs or {}
    return min(holders, key=lambda g: (jobs.get(g, 0), -budgets[g], g))


def admit(
    state: PlacementState,
    demand: ModelDemand,
    busy: set[ModelKey],
    now: float,
    *,
    min_idle_s: float = 0.0,
) -> Admission:
    """Where to run ``demand`` now; raises OutOfVram when no allowed GPU can take it.

    Order: a GPU that holds it; else the allowed GPU where it fits sharing the most weights,
    then tightest; else the GPU where evicting idle cold models (least recently used first,
    unused for ``min_idle_s``) makes room, preferring the one whose evictions are stalest.
    """
    by_index = _by_index(state.gpus)
    allowed = _allowed(by_index, demand)
    holder = route(state, demand.key, allowed=allowed)
    if holder is not None:
        return Admission(holder, load=False)
    held = {g: list(state.on(g)) for g in allowed}
    fits = [
        (cost, by_index[g].budget - cost, g)
        for g in allowed
        if (cost := _cost(held[g], demand)) <= by_index[g].budget
    ]
    if fits:
        return Admission(min(fits)[2])

    def evictable(r: Resident) -> bool:
        return not r.warm and r.key not in busy and now - r.last_used >= min_idle_s

    best: tuple[tuple[float, int, int], tuple[ModelKey, ...]] | None = None
    for g in allowed:
        rest, gone = list(held[g]), []
        for r in sorted(filter(evictable, held[g]), key=lambda r: (r.last_used, r.key)):
            rest.remove(r)
            gone.append(r)
            freed = _used(held[g]) - _used(rest)
            if _cost(rest, demand) <= by_index[g].budget + freed:
                rank = (max(v.last_used for v in gone), len(gone), g)
                if best is None or rank < best[0]:
                    best = (rank, tuple(v.key for v in gone))
                break
    if best is not None:
        return Admission(best[0][2], best[1])

    parts = []
    for g in allowed:
        gpu, stuck = by_index[g], [r for r in held[g] if not evictable(r)]
        part = f"{gpu.label} has {gib(gpu.budget)} free after reserve and margin"
        if idle := _used(held[g]) - _used(stuck):
            part += f", {gib(idle)} more in idle cold models"
        if stuck:
            part += f", {gib(_used(stuck))} held by warm or busy models ({_names(stuck)})"
        parts.append(part)
    where = "; ".join(parts) if parts else "this node has no GPU"
    raise OutOfVram(f"cannot load {describe(demand.key)}: needs {gib(demand.need_bytes)}; {where}")
