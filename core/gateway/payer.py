"""The gateway's ticket payer: pays each orchestrator with probabilistic tickets.

Ticket parameters come from each O's ``GET /ticket-params?sender=<our address>`` and are
kept until shortly before they expire. Each job's payment covers its fee (pixels x the O's
advertised price) less the credit this gateway holds at that O; the O's ``Orchard-Balance``
header keeps that credit in step. A free O (``/info`` ``payment.free``) is paid nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from fractions import Fraction

import httpx

from core.errors import OrchardError
from core.gateway.discovery import OrchestratorView
from core.payments.sender import TicketSender
from core.payments.tickets import (
    BALANCE_HEADER,
    PAYMENT_HEADER,
    Payment,
    TicketParams,
    encode_header,
)

log = logging.getLogger(__name__)

#: Fetch fresh parameters when the cached ones expire sooner than this.
REFRESH_BEFORE_S = 60.0
#: An O's answers with these reasons mean its parameters must be fetched again.
_STALE = frozenset({"expired_params", "unknown_params", "tampered_params", "wrong_recipient"})


class PaymentUnavailable(OrchardError):
    status = 503


class TicketPayer:
    """Implements the gateway's ``Payer`` with a :class:`TicketSender`."""

    def __init__(self, sender: TicketSender, timeout_s: float = 5.0) -> None:
        self.sender = sender
        self.address: str = sender.account.address
        self._http = httpx.AsyncClient(timeout=timeout_s)
        self._params: dict[str, TicketParams] = {}
        self._sent: dict[str, tuple[Payment, Fraction]] = {}  # header -> what it paid

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _params_for(self, view: OrchestratorView) -> TicketParams:
        cached = self._params.get(view.url)
        if cached is not None and cached.expires_at - time.time() > REFRESH_BEFORE_S:
            return cached
        try:
            r = await self._http.get(f"{view.url}/ticket-params", params={"sender": self.address})
        except httpx.HTTPError as exc:
            raise PaymentUnavailable(
                f"could not get ticket parameters from {view.url}: {exc}"
            ) from None
        if r.status_code != 200:
            raise PaymentUnavailable(
                f"{view.url} gave no ticket parameters (HTTP {r.status_code}): {r.text[:200]}"
            )
        params = TicketParams.from_json(r.json())
        self._params[view.url] = params
        return params

    async def headers(
        self, view: OrchestratorView, capability: str, model_id: str, pixels: int
    ) -> dict[str, str]:
        payment_info = (view.info or {}).get("payment") or {}
        if payment_info.get("free"):
            return {}
        price = view.price(capability, model_id)
        if price is None or price.per_pixel == 0:
            return {}
        fee = pixels * price.per_pixel
        params = await self._params_for(view)
        try:
            payment = await asyncio.to_thread(self.sender.payment_for, params, fee, price.per_pixel)
        except ValueError as exc:
            raise PaymentUnavailable(f"cannot pay {view.url}: {exc}") from None
        header = encode_header(payment)
        self._sent[header] = (payment, fee)
        return {PAYMENT_HEADER: header}

    async def on_response(self, view: OrchestratorView, response: httpx.Response) -> None:
        header = response.request.headers.get(PAYMENT_HEADER)
        sent = self._sent.pop(header, None) if header else None
        if sent is None:
            return
        payment, fee = sent
        balance = response.headers.get(BALANCE_HEADER)
        if balance is not None:  # O processed the payment: take its word for our credit
            self.sender.sync_credit(payment.ticket_params.recipient, balance)
            return
        if response.status_code != 200:  # refused before anything changed at O
            self.sender.payment_rejected(payment, fee)
            try:
                reason = response.json().get("detail", {}).get("reason")
            except ValueError:
                reason = None
            if reason in _STALE:
                self._params.pop(view.url, None)
