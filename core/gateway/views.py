"""What the gateway knows about each orchestrator: plain data, no I/O.

An :class:`OrchestratorView` holds the last ``/info`` an orchestrator (O) answered, when it
last answered, the last error, its suspension after failures and a :class:`LatencyScore`
measured from the jobs it ran. :mod:`core.gateway.discovery` keeps one per O up to date;
:mod:`core.gateway.selection` orders them for a job; :mod:`core.gateway.gateway` records
each job's outcome on them.

Times are ``time.time()`` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, NamedTuple

from core.pipelines import LIVEPEER_CAPABILITY_IDS, Capability, parse_capability

#: First suspension after a failure; each consecutive failure doubles it, up to the cap.
SUSPEND_BASE_S = 5.0
SUSPEND_MAX_S = 120.0
#: Weight of the newest observation in the latency score's moving average.
SCORE_ALPHA = 0.3


def suspension_s(failures: int) -> float:
    """Seconds an O stays suspended after ``failures`` consecutive failures: 5, 10, 20 ... 120."""
    if failures <= 0:
        return 0.0
    return float(min(SUSPEND_BASE_S * 2 ** min(failures - 1, 30), SUSPEND_MAX_S))


def capability_id(capability: Capability | str) -> int:
    """Livepeer's number for a pipeline name (27 text-to-image, 28, 29)."""
    return LIVEPEER_CAPABILITY_IDS[parse_capability(str(capability))]


class Price(NamedTuple):
    """An O's price for one capability and model, per output pixel."""

    per_pixel: Fraction
    currency: str  # upper case, "WEI" unless the O says otherwise


@dataclass
class LatencyScore:
    """Seconds per output pixel per denoising step, an exponential moving average per
    (pipeline, model) observed on one O. Lower is faster; unknown until a job succeeded."""

    ewma: dict[tuple[str, str], float] = field(default_factory=dict)
    samples: dict[tuple[str, str], int] = field(default_factory=dict)
    alpha: float = SCORE_ALPHA

    def get(self, capability: Capability | str, model_id: str) -> float | None:
        return self.ewma.get((str(capability), model_id))

    def observe(
        self, capability: Capability | str, model_id: str, seconds: float, pixels: int, steps: int
    ) -> float:
        """Fold one finished job in; returns the new score."""
        key = (str(capability), model_id)
        sample = seconds / max(1, pixels * max(1, steps))
        old = self.ewma.get(key)
        new = sample if old is None else self.alpha * sample + (1 - self.alpha) * old
        self.ewma[key] = new
        self.samples[key] = self.samples.get(key, 0) + 1
        return new


@dataclass
class OrchestratorStats:
    """Counters for the GUI: jobs this gateway sent to one O and how they ended."""

    jobs_ok: int = 0
    jobs_failed: int = 0  # O-side failures: unreachable, 5xx, 402, 503
    jobs_rejected: int = 0  # 4xx answers passed back to the client (its request was wrong)
    busy_seconds: float = 0.0  # total duration of successful jobs
    last_outcome: str | None = None
    last_job_at: float | None = None


@dataclass
class OrchestratorView:
    """One O as the gateway sees it."""

    url: str
    info: dict[str, Any] | None = None  # the last good /info (kept when a later poll fails)
    last_ok: float | None = None  # when /info last answered
    error: str | None = None  # the last poll's or job's error, None after a good poll
    suspended_until: float = 0.0
    failures: int = 0  # consecutive failures (jobs or polls); 0 after a success
    score: LatencyScore = field(default_factory=LatencyScore)
    #: The last failure was a lost connection: the next good poll ends the suspension.
    unreachable: bool = False
    stats: OrchestratorStats = field(default_factory=OrchestratorStats)

    # ------------------------------------------------------------ reading /info
    def offer(self, capability: Capability | str, model_id: str) -> dict[str, Any] | None:
        """The O's constraints for the model (``warm``, ``capacity`` ...), or None."""
        if not self.info or self.info.get("state", "running") != "running":
            return None
        per_cap = (self.info.get("capabilities") or {}).get("per_capability") or {}
        entry = per_cap.get(str(capability_id(capability))) or {}
        models = entry.get("models") or {}
        found = models.get(model_id)
        return found if isinstance(found, dict) else None

    def offered(self) -> list[tuple[str, str]]:
        """Every (pipeline, model_id) the O offers that Orchard knows."""
        if not self.info:
            return []
        names = {str(i): c.value for c, i in LIVEPEER_CAPABILITY_IDS.items()}
        per_cap = (self.info.get("capabilities") or {}).get("per_capability") or {}
        return [
            (names[cid], model_id)
            for cid, entry in per_cap.items()
            if cid in names
            for model_id in (entry.get("models") or {})
        ]

    def warm(self, capability: Capability | str, model_id: str) -> bool:
        offer = self.offer(capability, model_id)
        return bool(offer and offer.get("warm"))

    def price(self, capability: Capability | str, model_id: str) -> Price | None:
        """Price per pixel from ``capabilities_prices`` (``price_per_unit / pixels_per_unit``),
        or None when the O lists no price for the model (the gateway counts that as 0)."""
        if not self.info:
            return None
        cid = capability_id(capability)
        for entry in self.info.get("capabilities_prices") or ():
            if entry.get("capability") == cid and entry.get("constraint") == model_id:
                try:
                    per_unit = Fraction(str(entry.get("price_per_unit", 0)))
                    pixels = int(entry.get("pixels_per_unit") or 1)
                except (ValueError, ZeroDivisionError):
                    return None
                currency = str(entry.get("currency") or "WEI").upper()
                return Price(per_unit / max(pixels, 1), currency)
        return None

    # ------------------------------------------------------------ outcomes
    def suspended(self, now: float) -> bool:
        return now < self.suspended_until

    def mark_failure(self, error: str, now: float, *, unreachable: bool = False) -> None:
        """A job or a poll failed: suspend for 5 s, doubling per consecutive failure, to 120 s."""
        self.failures += 1
        self.error = error
        self.unreachable = unreachable
        self.suspended_until = now + suspension_s(self.failures)

    def mark_success(self) -> None:
        """A job succeeded: the failure streak and any suspension end."""
        self.failures = 0
        self.suspended_until = 0.0
        self.unreachable = False
        self.error = None

    def mark_polled(self, info: dict[str, Any], now: float) -> None:
        """``/info`` answered. A suspension for lost connections ends (the O is back); one
        for failed jobs runs its course."""
        self.info = info
        self.last_ok = now
        self.error = None
        if self.unreachable:
            self.unreachable = False
            self.failures = 0
            self.suspended_until = 0.0

    def snapshot(self, now: float) -> dict[str, Any]:
        """JSON-ready state for ``GET /orchestrators`` and the GUI."""
        offered = []
        for pipeline, model_id in self.offered():
            offer = self.offer(pipeline, model_id) or {}
            price = self.price(pipeline, model_id)
            offered.append(
                {
                    "pipeline": pipeline,
                    "model_id": model_id,
                    "warm": bool(offer.get("warm")),
                    "capacity": offer.get("capacity"),
                    "capacity_in_use": offer.get("capacity_in_use"),
                    "price_per_pixel": str(price.per_pixel) if price else None,
                    "currency": price.currency if price else None,
                    "score": self.score.get(pipeline, model_id),
                    "score_samples": self.score.samples.get((pipeline, model_id), 0),
                }
            )
        return {
            "url": self.url,
            "reachable": self.last_ok is not None and not self.unreachable,
            "last_ok": self.last_ok,
            "error": self.error,
            "suspended": self.suspended(now),
            "suspended_for_s": round(max(0.0, self.suspended_until - now), 3),
            "failures": self.failures,
            "version": (self.info or {}).get("version"),
            "offered": offered,
            "stats": {
                "jobs_ok": self.stats.jobs_ok,
                "jobs_failed": self.stats.jobs_failed,
                "jobs_rejected": self.stats.jobs_rejected,
                "busy_seconds": round(self.stats.busy_seconds, 3),
                "last_outcome": self.stats.last_outcome,
                "last_job_at": self.stats.last_job_at,
            },
        }
