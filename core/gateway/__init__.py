"""The gateway (B): discovers orchestrators, picks one per job, pays it, retries elsewhere.

* :mod:`~core.gateway.views`: what is known about each orchestrator (plain data);
* :mod:`~core.gateway.discovery`: polls each orchestrator's ``/info``;
* :mod:`~core.gateway.selection`: which orchestrators may take a job, best first (pure);
* :mod:`~core.gateway.gateway`: :class:`Gateway`, in-process use and the payment hook;
* :mod:`~core.gateway.service`: the application-facing HTTP API (imports FastAPI).

docs/gateway.md is the reference.
"""

from __future__ import annotations

from core.gateway.discovery import Discovery
from core.gateway.gateway import Attempt, Gateway, GatewayResult, NoPayment, Payer
from core.gateway.selection import PriceCaps, Selection, candidates
from core.gateway.views import LatencyScore, OrchestratorStats, OrchestratorView, Price

__all__ = [
    "Attempt",
    "Discovery",
    "Gateway",
    "GatewayResult",
    "LatencyScore",
    "NoPayment",
    "OrchestratorStats",
    "OrchestratorView",
    "Payer",
    "Price",
    "PriceCaps",
    "Selection",
    "candidates",
]
