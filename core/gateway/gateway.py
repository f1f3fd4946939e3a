"""The gateway (B): picks an orchestrator for a job, pays it, sends it, retries elsewhere.

Used in-process by the desktop app and behind the HTTP API of :mod:`core.gateway.service`::

    gateway = Gateway(Discovery(["http://127.0.0.1:8935"]), PriceCaps(Fraction(5000)))
    await gateway.start()
    result = await gateway.submit("text-to-image", json=body, pixels=..., steps=...)
    await gateway.stop()

:meth:`Gateway.submit` asks :func:`~core.gateway.selection.candidates` for the Os that may
take the job, best first, and sends the same body to the first (``POST {o}/{pipeline}``).
A lost connection, a 5xx (503 "insufficient capacity" included) or a 402 (payment refused)
is the O's failure: it is suspended (5 s, doubling per consecutive failure, to 120 s) and the
next candidate is tried, while less than ``retry_budget_s`` has passed since the job came
in. Any other 4xx is the client's fault and comes back as it is, without a retry. A success
updates the O's latency score: seconds / (pixels x steps). When no O can serve, the
answer is :class:`~core.errors.ServiceUnavailable` (503) "no orchestrators available:
<reason>".

Payment is a hook, :class:`Payer`: its headers go on each attempt and it sees each answer.
:class:`NoPayment` sends nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import httpx

from core.errors import BadRequest, OrchardError, ServiceUnavailable
from core.gateway.discovery import Discovery, describe_error
from core.gateway.selection import PriceCaps, candidates
from core.gateway.views import OrchestratorView
from core.pipelines import Capability, parse_capability

__all__ = ["Attempt", "Gateway", "GatewayResult", "NoPayment", "Payer"]

log = logging.getLogger(__name__)

#: Header naming the job on the O that ran it (passed through from the O).
REQUEST_ID_HEADER = "X-Request-Id"
#: Default wait for one O's answer to a job (generation can take minutes).
JOB_TIMEOUT_S = 600.0
CONNECT_TIMEOUT_S = 5.0
#: Statuses that are the O's failure (retry elsewhere); other 4xx are the client's.
_O_FAULT_4XX = frozenset({402})


class Payer(Protocol):
    """Pays orchestrators. The ticket payer (core.payments) implements this."""

    async def headers(
        self, view: OrchestratorView, capability: str, model_id: str, pixels: int
    ) -> dict[str, str]:
        """Headers for one attempt on ``view`` (e.g. a payment ticket for ``pixels``).
        Raising :class:`~core.errors.OrchardError` skips this O for the job (it counts as
        its failure); other exceptions propagate."""
        ...

    async def on_response(self, view: OrchestratorView, response: httpx.Response) -> None:
        """Every answer ``view`` gave an attempt, whatever its status (balance updates,
        new ticket parameters, a 402's reason)."""
        ...


class NoPayment:
    """Pays nothing: for free Os and tests."""

    async def headers(
        self, view: OrchestratorView, capability: str, model_id: str, pixels: int
    ) -> dict[str, str]:
        return {}

    async def on_response(self, view: OrchestratorView, response: httpx.Response) -> None:
        return None


class Attempt(NamedTuple):
    """One try: ``outcome`` is the O's HTTP status, or the error in words when none came."""

    url: str
    outcome: int | str
    detail: str = ""  # the O's message for an error answer
    seconds: float = 0.0

    def describe(self) -> str:
        if isinstance(self.outcome, int):
            return f"{self.url}: HTTP {self.outcome}" + (f" {self.detail}" if self.detail else "")
        return f"{self.url}: {self.outcome}"


@dataclass(frozen=True)
class GatewayResult:
    """The answer of the O that served the job (or the client error it returned)."""

    status: int
    body: bytes
    content_type: str
    orchestrator_url: str
    attempts: list[Attempt]
    headers: dict[str, str] = field(default_factory=dict)  # X-Request-Id from the O

    def json(self) -> Any:
        import json

        return json.loads(self.body)


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300]
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, dict) and isinstance(detail.get("msg"), str):
        return str(detail["msg"])
    return str(detail)[:300] if detail else ""


class Gateway:
    """Selection, payment, sending and failover. ``await start()``, ``await stop()``."""

    def __init__(
        self,
        discovery: Discovery,
        caps: PriceCaps | None = None,
        payer: Payer | None = None,
        retry_budget_s: float = 60,
        job_timeout_s: float = JOB_TIMEOUT_S,
    ) -> None:
        self.discovery = discovery
        self.caps = caps or PriceCaps()
        self.payer: Payer = payer or NoPayment()
        self.retry_budget_s = retry_budget_s
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(job_timeout_s, connect=CONNECT_TIMEOUT_S)
        )
        self.started = False

    async def start(self) -> None:
        """One discovery round now, then polling in the background."""
        await self.discovery.refresh()
        self.discovery.start()
        self.started = True

    async def stop(self) -> None:
        await self.discovery.stop()
        await self._client.aclose()
        self.started = False

    # ------------------------------------------------------------------ reports
    def views(self) -> list[OrchestratorView]:
        return self.discovery.views()

    def snapshot(self) -> list[dict[str, Any]]:
        """Per-O state and stats (offers, prices, score, suspension, errors) for the GUI and
        ``GET /orchestrators``."""
        now = time.time()
        return [v.snapshot(now) for v in self.discovery.views()]

    def default_model(self, capability: Capability | str) -> str:
        """The model to use when a request names none: the only one offered for the
        pipeline, else BadRequest listing them."""
        cap = parse_capability(str(capability))
        models = sorted({m for v in self.views() for c, m in v.offered() if c == cap.value})
        if len(models) == 1:
            return models[0]
        if not models:
            raise ServiceUnavailable(
                f"no orchestrators available: no orchestrator offers a model for {cap.value}"
            )
        raise BadRequest(
            f"set model_id: orchestrators offer several {cap.value} models ({', '.join(models)})"
        )

    # ------------------------------------------------------------------ jobs
    async def submit(
        self,
        capability: Capability | str,
        *,
        json: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
        pixels: int,
        steps: int,
        model_id: str | None = None,
    ) -> GatewayResult:
        """Run one job on the best O that can take it (module doc). ``json`` for
        text-to-image, ``data`` and ``files`` (multipart) for the others; ``model_id``
        defaults to the body's. Raises ServiceUnavailable when no O can serve."""
        cap = parse_capability(str(capability))
        body = json if json is not None else data or {}
        model = model_id if model_id is not None else str(body.get("model_id") or "")
        if not model:
            model = self.default_model(cap)
            if json is not None:
                json = {**json, "model_id": model}
            else:
                data = {**(data or {}), "model_id": model}
        cap_price = self.caps.for_model(cap, model)
        started = time.monotonic()
        attempts: list[Attempt] = []
        tried: set[str] = set()
        reason: str | None = None
        budget_spent = False
        while True:
            selection = candidates(self.views(), cap, model, cap_price, time.time())
            view = next((v for v in selection.ordered if v.url not in tried), None)
            if view is None:
                reason = selection.reason_if_empty
                break
            if attempts and time.monotonic() - started >= self.retry_budget_s:
                budget_spent = True
                break
            tried.add(view.url)
            result = await self._attempt(view, cap, model, json, data, files, pixels, steps)
            attempts.append(result if isinstance(result, Attempt) else result.attempts[-1])
            if isinstance(result, GatewayResult):
                return GatewayResult(
                    result.status,
                    result.body,
                    result.content_type,
                    result.orchestrator_url,
                    attempts,
                    result.headers,
                )
        if attempts:
            spent = f" (retry budget of {self.retry_budget_s:g} s spent)" if budget_spent else ""
            tried_text = "; ".join(a.describe() for a in attempts)
            reason = f"tried {len(attempts)}, all failed{spent}: {tried_text}"
        raise ServiceUnavailable(f"no orchestrators available: {reason}")

    async def _attempt(
        self,
        view: OrchestratorView,
        cap: Capability,
        model: str,
        json: dict[str, Any] | None,
        data: dict[str, str] | None,
        files: dict[str, tuple[str, bytes, str]] | None,
        pixels: int,
        steps: int,
    ) -> GatewayResult | Attempt:
        """One try on one O: its answer to pass back, or the failure (O suspended)."""
        now = time.time()
        stats = view.stats
        stats.last_job_at = now
        try:
            headers = await self.payer.headers(view, cap.value, model, pixels)
        except OrchardError as exc:
            return self._failed(view, Attempt(view.url, f"payment: {exc.msg}"), now)
        t0 = time.monotonic()
        try:
            resp = await self._client.post(
                f"{view.url}/{cap.value}", json=json, data=data, files=files, headers=headers
            )
        except httpx.HTTPError as exc:
            lost = not isinstance(exc, httpx.TimeoutException) or isinstance(
                exc, httpx.ConnectTimeout
            )
            attempt = Attempt(view.url, describe_error(exc), seconds=time.monotonic() - t0)
            return self._failed(view, attempt, time.time(), unreachable=lost)
        seconds = time.monotonic() - t0
        await self.payer.on_response(view, resp)
        status = resp.status_code
        if status >= 500 or status in _O_FAULT_4XX:
            attempt = Attempt(view.url, status, _message(resp), seconds)
            return self._failed(view, attempt, time.time())
        result = GatewayResult(
            status,
            resp.content,
            resp.headers.get("content-type", "application/json"),
            view.url,
            [Attempt(view.url, status, "" if status < 400 else _message(resp), seconds)],
            {REQUEST_ID_HEADER: resp.headers[REQUEST_ID_HEADER]}
            if REQUEST_ID_HEADER in resp.headers
            else {},
        )
        if status < 400:
            score = view.score.observe(cap, model, seconds, pixels, steps)
            view.mark_success()
            stats.jobs_ok += 1
            stats.busy_seconds += seconds
            stats.last_outcome = f"{status} in {seconds:.2f} s"
            log.debug("%s %s on %s: %.2f s (score %.3g)", cap, model, view.url, seconds, score)
        else:
            stats.jobs_rejected += 1
            stats.last_outcome = f"{status} {_message(resp)}"
        return result

    @staticmethod
    def _failed(
        view: OrchestratorView, attempt: Attempt, now: float, *, unreachable: bool = False
    ) -> Attempt:
        error = attempt.describe().removeprefix(f"{view.url}: ")
        view.mark_failure(error, now, unreachable=unreachable)
        view.stats.jobs_failed += 1
        view.stats.last_outcome = error
        log.warning(
            "orchestrator %s failed (%s); suspended for %.0f s",
            view.url,
            error,
            view.suspended_until - now,
        )
        return attempt
