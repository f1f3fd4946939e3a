"""The node's side of payments: prices per job, ticket checks before a job runs, refunds.

Free mode (``orchard node --free``) is explicit: no prices are needed and no payment is asked.
Otherwise every offered model must have a price, and a job runs only once its payment has
been accepted (402 with the amount missing when it falls short). Deposits live in the
**off-chain** ledger (``core.payments.chain.OffChainLedger``): no blockchain is involved yet.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal, localcontext
from fractions import Fraction
from pathlib import Path
from typing import Any

from core.config import ModelsConfig, Price
from core.errors import BadRequest
from core.payments.chain import OffChainLedger
from core.payments.ledger import PaymentLedger
from core.payments.pricing import fee_for
from core.payments.recipient import Receipt, TicketRecipient, load_or_create_secret
from core.payments.tickets import PaymentRejected, RejectReason, decode_header
from core.pipelines import Capability
from core.pipelines.image_to_video import BILLED_FRAMES

log = logging.getLogger(__name__)

#: A ticket wins one time in this many (a power of two, so that expected values are exact
#: small fractions); its face value makes its expected value about one typical job of the
#: most expensive model offered.
WIN_ODDS = 128


def fee_text(fee: Fraction) -> str:
    """A fee as the decimal string the job store keeps (whole wei, or 9 decimals)."""
    if fee.denominator == 1:
        return str(fee.numerator)
    with localcontext() as ctx:
        ctx.prec = 80
        return str((Decimal(fee.numerator) / Decimal(fee.denominator)).quantize(Decimal("1e-9")))


def typical_pixels(cap: Capability) -> int:
    """One 512x512 image, or one 1024x576 video as Livepeer bills it."""
    return 1024 * 576 * BILLED_FRAMES if cap == Capability.IMAGE_TO_VIDEO else 512 * 512


class NodePayments:
    """Prices, ticket parameters and the recipient's checks for one node."""

    def __init__(self, config: ModelsConfig, data_dir: Path, free: bool) -> None:
        self.config = config
        self.free = free
        self.data_dir = data_dir
        self.ledger: PaymentLedger | None = None
        self.chain: OffChainLedger | None = None
        self.recipient: TicketRecipient | None = None
        self.address: str | None = None

    def price(self, cap: Capability, model_id: str, sender: str | None = None) -> Price | None:
        return self.config.price_for(cap.value, model_id, sender)

    def check_prices(self, offered: list[tuple[Capability, str]]) -> None:
        """Outside free mode every offered model needs a price: never a silent 0."""
        if self.free:
            return
        for cap, model_id in offered:
            fee_for(1, self.price(cap, model_id), free=False, what=f"{model_id} ({cap.value})")

    async def open(self, offered: list[tuple[Capability, str]]) -> None:
        if self.free:
            return
        from core.payments.sender import load_or_create_key

        keys = self.data_dir / "keys"
        account = await asyncio.to_thread(load_or_create_key, keys / "orchestrator.json")
        secret = await asyncio.to_thread(load_or_create_secret, keys / "recipient.secret")
        self.address = account.address
        self.ledger = PaymentLedger(self.data_dir)
        await self.ledger.open()
        self.chain = OffChainLedger(self.ledger)
        typical = max(
            (fee_for(typical_pixels(c), self.price(c, m)) for c, m in offered), default=Fraction(1)
        )
        face_value = max(1, int(typical * WIN_ODDS))
        self.recipient = TicketRecipient(
            secret, account.address, self.ledger, self.chain, face_value, 2**256 // WIN_ODDS
        )
        log.info(
            "payments: recipient %s, face value %d wei, win 1 in %d (off-chain ledger)",
            self.address,
            face_value,
            WIN_ODDS,
        )

    async def close(self) -> None:
        if self.ledger is not None:
            await self.ledger.close()
            self.ledger = None

    def info(self) -> dict[str, Any]:
        return {
            "free": self.free,
            "recipient": self.address,
            "ledger": "off-chain",
            "ticket_params_url": None if self.free else "/ticket-params",
        }

    async def ticket_params(self, sender: str | None) -> dict[str, Any]:
        if self.recipient is None:
            raise BadRequest("this node runs in free mode: it asks for no payment")
        params = await self.recipient.ticket_params(sender)
        return params.to_json()

    async def charge(
        self, header: str | None, cap: Capability, model_id: str, pixels: int, job_id: str
    ) -> tuple[Fraction, Receipt | None]:
        """Check the job's payment and debit its fee; (fee, receipt). Free: (0, None)."""
        if self.recipient is None:
            return Fraction(0), None
        if not header:
            raise PaymentRejected(
                402,
                "payment required: send tickets in the Livepeer-Payment header (ticket "
                "parameters at GET /ticket-params?sender=<your address>)",
                RejectReason.INSUFFICIENT_BALANCE,
            )
        payment = decode_header(header)
        price = self.price(cap, model_id, payment.sender)
        fee = fee_for(pixels, price, what=f"{model_id} ({cap.value})")
        receipt = await self.recipient.receive(
            payment,
            fee,
            job_id,
            price=price.per_pixel if price else None,
            model_id=model_id,
            capability=cap.value,
        )
        return fee, receipt

    async def earnings(self) -> dict[str, Any]:
        """Fees, tickets and expected value received, as JSON (amounts as exact strings)."""
        if self.ledger is None:
            return {"free": True, "ledger": "off-chain", "total_fees": "0"}
        from core.payments.earnings import earnings

        e = await earnings(self.ledger)
        return {
            "free": False,
            "ledger": "off-chain",
            "total_fees": fee_text(e.total_fees),
            "per_model": {k: fee_text(v) for k, v in e.per_model.items()},
            "per_day": [[d.isoformat(), fee_text(v)] for d, v in e.per_day],
            "jobs": e.jobs,
            "refunded_jobs": e.refunded_jobs,
            "tickets": e.tickets,
            "winning_tickets": e.winning_tickets,
            "winning_face_value": str(e.winning_face_value),
            "expected_value_received": fee_text(e.expected_value_received),
            "per_sender": {k: fee_text(v) for k, v in e.per_sender.items()},
        }

    async def balance(self, sender: str) -> Fraction:
        return await self.recipient.balance(sender) if self.recipient else Fraction(0)

    async def refund(self, job_id: str) -> None:
        if self.recipient is not None:
            await self.recipient.refund(job_id)
