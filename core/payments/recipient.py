"""O's side of ticket payments: issue ticket params, check and credit payments, charge fees.

The recipient rand (the secret half of the lottery) is derived, never stored, as in
go-livepeer's ``pm.recipient.rand``: ``HMAC-SHA256(key=secret, msg)`` with

    msg = uint256(seed) ++ sender (20 bytes; zeros when issued to nobody in particular)
          ++ uint256(face_value) ++ uint256(win_prob) ++ float64_be(expires_at)
          ++ uint256(creation_round) ++ creation_round_block_hash

read as a big-endian integer. (go-livepeer concatenates minimal big-endian bytes of the
same kind of fields; fixed widths here keep the encoding unambiguous.) The params publish
only ``recipient_rand_hash = keccak256(uint256(rand))``. The issued params are kept in the
ledger too, so a tampered field is named precisely and params O did not issue are refused.
The secret must survive restarts (:func:`load_or_create_secret`), or every params issued
before the restart is refused.

:meth:`TicketRecipient.receive` is all-or-nothing: a rejected payment changes nothing, not
even the nonce bookkeeping (a nonce that was never accepted may be used again). Checks, in
order, each a :class:`~core.payments.tickets.PaymentRejected`:

1. params: issued by this O (400 unknown_params), untampered (400 tampered_params), not
   expired nor revealed by a redemption (400 expired_params);
2. the tickets' recipient is this O (400 wrong_recipient);
3. each signature recovers to ``payment.sender`` (401 bad_signature); a payment without
   tickets is allowed only under params this sender already paid a ticket under (401);
4. each nonce accepted at most once per (sender, recipient_rand_hash), in any order, as
   go-livepeer's recipient (400 replayed_nonce);
5. the price B expects is not below O's (402 price_too_low), when O passes its price;
6. the sender's deposit, less its winning tickets not yet redeemed, covers a face value
   (402 insufficient_deposit);
7. the balance plus the tickets' expected value covers the fee (402 insufficient_balance).

When all pass: each ticket's expected value is credited, winning tickets recorded for
redemption, the fee debited and recorded against the job.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import logging
import os
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from eth_hash.auto import keccak

from core.payments.chain import Chain, OffChainLedger
from core.payments.ledger import IssuedParams, JobFee, LedgerTx, PaymentLedger, StoredTicket
from core.payments.pricing import format_wei
from core.payments.tickets import (
    Payment,
    PaymentRejected,
    RejectReason,
    Ticket,
    TicketParams,
    check_address,
    expected_value,
    is_winning,
    recover_signer,
)

log = logging.getLogger(__name__)

__all__ = ["Receipt", "TicketRecipient", "load_or_create_secret"]

_ZERO_ADDRESS = bytes(20)
_COMPARED = (
    "recipient_rand_hash",
    "face_value",
    "win_prob",
    "expires_at",
    "creation_round",
    "creation_round_block_hash",
)


@dataclass(frozen=True)
class Receipt:
    """What an accepted payment did. ``balance`` is the sender's credit left after the fee
    (send it back to B so its sender stays in step)."""

    job_id: str
    sender: str
    fee: Fraction
    credited: Fraction
    balance: Fraction
    tickets: int
    winning: int
    winning_face_value: int


def load_or_create_secret(path: Path) -> bytes:
    """O's 32-byte ticket secret from ``path``, created (mode 600) when absent.

    Blocking file I/O: call it at start-up or through ``asyncio.to_thread``."""
    path = Path(path)
    if path.exists():
        secret = bytes.fromhex(path.read_text().strip())
        if len(secret) < 16:
            raise ValueError(f"the ticket secret in {path} is shorter than 16 bytes")
        return secret
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex() + "\n")
    return secret


class TicketRecipient:
    """O's ticket recipient; see the module's docstring for the rules.

    ``face_value`` (wei) and ``win_prob`` (out of 2**256) set each ticket's expected value;
    pick them so that it is near one job's fee: fewer tickets per job, fewer signatures.
    """

    def __init__(
        self,
        secret: bytes,
        address: str,
        store: PaymentLedger,
        chain: Chain,
        face_value: int,
        win_prob: int,
        params_ttl_s: float = 600,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the ticket secret must be at least 16 bytes")
        if face_value <= 0 or not 0 < win_prob < 2**256:
            raise ValueError("face value must be positive and win_prob in 1 .. 2**256 - 1")
        self._secret = bytes(secret)
        self.address = check_address(address, "recipient address")
        self.store = store
        self.chain = chain
        self.face_value = int(face_value)
        self.win_prob = int(win_prob)
        self.params_ttl_s = float(params_ttl_s)
        self._now = now

    @property
    def ticket_expected_value(self) -> Fraction:
        return expected_value(self.face_value, self.win_prob)

    def recipient_rand(self, params: TicketParams, issued_to: str | None) -> int:
        """The rand behind ``params`` (see the module's docstring for the derivation)."""
        msg = b"".join(
            (
                params.seed.to_bytes(32, "big"),
                bytes.fromhex(issued_to[2:]) if issued_to else _ZERO_ADDRESS,
                params.face_value.to_bytes(32, "big"),
                params.win_prob.to_bytes(32, "big"),
                struct.pack(">d", params.expires_at),
                params.creation_round.to_bytes(32, "big"),
                params.creation_round_block_hash,
            )
        )
        return int.from_bytes(hmac.new(self._secret, msg, hashlib.sha256).digest(), "big")

    async def ticket_params(self, sender: str | None = None) -> TicketParams:
        """Fresh params (a new random seed), recorded in the ledger as issued."""
        issued_to = None if sender is None else check_address(sender, "sender")
        seed = secrets.randbits(256)
        unhashed = TicketParams(
            recipient=self.address,
            face_value=self.face_value,
            win_prob=self.win_prob,
            recipient_rand_hash=bytes(32),
            seed=seed,
            expires_at=self._now() + self.params_ttl_s,
            creation_round=0,  # off-chain: no RoundsManager
            creation_round_block_hash=bytes(keccak(seed.to_bytes(32, "big"))),
        )
        rand = self.recipient_rand(unhashed, issued_to)
        params = dataclasses.replace(
            unhashed, recipient_rand_hash=bytes(keccak(rand.to_bytes(32, "big")))
        )
        at = self._now()
        await self.store.transact(lambda tx: tx.add_issued(params, issued_to, at))
        return params

    async def balance(self, sender: str) -> Fraction:
        return await self.store.balance(check_address(sender, "sender"))

    async def receive(
        self,
        payment: Payment,
        fee: Fraction | int,
        job_id: str,
        *,
        price: Fraction | None = None,
        model_id: str = "",
        capability: str = "",
    ) -> Receipt:
        """Check ``payment``, credit it, and charge ``fee`` (wei) for ``job_id``.

        ``price`` is O's price per pixel for this job: when given, a payment expecting a
        lower one is refused. ``model_id`` / ``capability`` label the fee for earnings.
        PaymentRejected (nothing changed) or a Receipt. ValueError when ``job_id`` was
        already charged (a bug in the caller, not a payment problem).
        """
        fee = Fraction(fee)
        if fee < 0:
            raise ValueError(f"a fee cannot be negative ({fee})")
        tickets = payment.to_tickets()
        sigs = [sig for _, sig in payment.tickets]
        # Signature recovery is CPU work (milliseconds each): off the loop and the db thread.
        signers = await asyncio.to_thread(_recover_all, tickets, sigs) if tickets else []
        deposit = (await self.chain.deposit_of(payment.sender))[0] if tickets else 0
        now = self._now()

        def apply(tx: LedgerTx) -> Receipt:
            issued = self._check_params(tx, payment, now)
            params = issued.params
            if payment.ticket_params.recipient != self.address:
                raise PaymentRejected(
                    400,
                    f"the tickets are made out to {payment.ticket_params.recipient}, not to "
                    f"this orchestrator ({self.address})",
                    RejectReason.WRONG_RECIPIENT,
                )
            last = tx.last_nonce(payment.sender, params.recipient_rand_hash)
            _check_signatures(payment, signers, paid_before=last is not None)
            # As go-livepeer's recipient: each nonce is accepted once per (sender, params), in
            # any order, so concurrent jobs from one gateway may arrive out of order.
            seen: set[int] = set()
            for ticket in payment.to_tickets():
                nonce = ticket.sender_nonce
                if nonce in seen or tx.has_ticket(ticket.hash()):
                    raise PaymentRejected(
                        400,
                        f"ticket nonce {nonce} was already used with these ticket params by "
                        "this sender (a replayed ticket?)",
                        RejectReason.REPLAYED_NONCE,
                    )
                seen.add(nonce)
            if price is not None and payment.expected_price < price:
                raise PaymentRejected(
                    402,
                    f"the gateway expects to pay {format_wei(payment.expected_price, True)}, "
                    f"below this orchestrator's price of {format_wei(price, True)}",
                    RejectReason.PRICE_TOO_LOW,
                )
            if tickets:
                where = " (off-chain ledger)" if isinstance(self.chain, OffChainLedger) else ""
                available = deposit - tx.pending_face_value(payment.sender)
                if available < params.face_value:
                    raise PaymentRejected(
                        402,
                        f"the sender's deposit{where} less its unredeemed winning "
                        f"tickets is {format_wei(max(available, 0))}, below the ticket face "
                        f"value of {format_wei(params.face_value)}; the sender must deposit more",
                        RejectReason.INSUFFICIENT_DEPOSIT,
                    )
            ev = params.expected_value
            credited = ev * len(tickets)
            balance = tx.balance(payment.sender) + credited
            if balance < fee:
                missing = fee - balance
                raise PaymentRejected(
                    402,
                    f"insufficient balance: job costs {format_wei(fee)}, balance after this "
                    f"payment is {format_wei(balance)}, missing {format_wei(missing)}",
                    RejectReason.INSUFFICIENT_BALANCE,
                    missing,
                )
            return self._commit(
                tx, payment, issued, fee, job_id, credited, balance, now, (model_id, capability)
            )

        return await self.store.transact(apply)

    def _check_params(self, tx: LedgerTx, payment: Payment, now: float) -> IssuedParams:
        given = payment.ticket_params
        issued = tx.issued(given.seed)
        if issued is None:
            raise PaymentRejected(
                400,
                f"ticket params with seed {given.seed:#x} were not issued by this orchestrator "
                "(or have been forgotten); fetch fresh ticket params",
                RejectReason.UNKNOWN_PARAMS,
            )
        rand = self.recipient_rand(issued.params, issued.sender)
        if keccak(rand.to_bytes(32, "big")) != issued.params.recipient_rand_hash:
            raise PaymentRejected(
                400,
                "these ticket params were issued under another ticket secret (the node's "
                "secret changed); fetch fresh ticket params",
                RejectReason.UNKNOWN_PARAMS,
            )
        for name in _COMPARED:
            got, want = getattr(given, name), getattr(issued.params, name)
            if got != want:
                shown = (lambda v: "0x" + v.hex()) if isinstance(want, bytes) else str
                raise PaymentRejected(
                    400,
                    f"ticket params were altered: {name} is {shown(got)}, this orchestrator "
                    f"issued {shown(want)} with this seed",
                    RejectReason.TAMPERED_PARAMS,
                )
        if issued.sender is not None and issued.sender != payment.sender:
            raise PaymentRejected(
                400,
                f"these ticket params were issued to {issued.sender}, not to {payment.sender}; "
                "fetch your own ticket params",
                RejectReason.UNKNOWN_PARAMS,
            )
        if now >= issued.params.expires_at:
            raise PaymentRejected(
                400,
                f"the ticket params expired {now - issued.params.expires_at:.0f} s ago; fetch "
                "fresh ticket params",
                RejectReason.EXPIRED_PARAMS,
            )
        if issued.revealed_at is not None:
            raise PaymentRejected(
                400,
                "a winning ticket under these params was redeemed, revealing their random "
                "value; fetch fresh ticket params",
                RejectReason.EXPIRED_PARAMS,
            )
        return issued

    def _commit(
        self,
        tx: LedgerTx,
        payment: Payment,
        issued: IssuedParams,
        fee: Fraction,
        job_id: str,
        credited: Fraction,
        balance: Fraction,
        now: float,
        labels: tuple[str, str],
    ) -> Receipt:
        params = issued.params
        if tx.job_fee(job_id) is not None:
            raise ValueError(f"job {job_id!r} was already paid for")
        rand = self.recipient_rand(params, issued.sender)
        ev = params.expected_value
        winning = 0
        for ticket, (_, sig) in zip(payment.to_tickets(), payment.tickets, strict=True):
            won = is_winning(sig, rand, params.win_prob)
            winning += won
            tx.add_ticket(StoredTicket(ticket, sig, params.seed, ev, job_id, now, won))
        if payment.tickets:
            tx.set_nonce(payment.sender, params.recipient_rand_hash, payment.tickets[-1][0])
        tx.set_balance(payment.sender, balance - fee, now)
        tx.add_job_fee(JobFee(job_id, payment.sender, fee, credited, *labels, now))
        if winning:
            log.info("%d winning ticket(s) from %s for job %s", winning, payment.sender, job_id)
        return Receipt(
            job_id=job_id,
            sender=payment.sender,
            fee=fee,
            credited=credited,
            balance=balance - fee,
            tickets=len(payment.tickets),
            winning=winning,
            winning_face_value=winning * params.face_value,
        )

    async def refund(self, job_id: str) -> Fraction:
        """Credit back the fee of a job that failed on the node; returns the amount.

        0 for a job never charged (a free job) or already refunded: safe to call on any
        failure. The tickets' credit stays (they were valid payment)."""
        now = self._now()

        def apply(tx: LedgerTx) -> Fraction:
            charged = tx.job_fee(job_id)
            if charged is None or charged.refunded_at is not None:
                return Fraction(0)
            tx.set_balance(charged.sender, tx.balance(charged.sender) + charged.fee, now)
            tx.mark_refunded(job_id, now)
            return charged.fee

        return await self.store.transact(apply)

    async def redeem_winning(self) -> list[str]:
        """Redeem every winning ticket not yet redeemed through ``chain``; the ids of the
        redemptions done. A ticket that fails is logged and left for a later try."""
        done = []
        for stored in await self.store.tickets(winning=True, redeemed=False):
            issued = await self.store.issued(stored.seed)
            if issued is None:
                log.error("cannot redeem ticket for job %s: its params are gone", stored.job_id)
                continue
            rand = self.recipient_rand(issued.params, issued.sender)
            try:
                done.append(await self.chain.redeem(stored.ticket, stored.sig, rand))
            except ValueError as exc:
                log.error("redeeming the ticket of job %s failed: %s", stored.job_id, exc)
        return done


def _recover_all(tickets: list[Ticket], sigs: list[bytes]) -> list[str | None]:
    out: list[str | None] = []
    for ticket, sig in zip(tickets, sigs, strict=True):
        try:
            out.append(recover_signer(ticket, sig))
        except ValueError:
            out.append(None)
    return out


def _check_signatures(payment: Payment, signers: list[str | None], paid_before: bool) -> None:
    if not payment.tickets and not paid_before:
        raise PaymentRejected(
            401,
            "a payment without tickets draws on the sender's balance only under ticket "
            "params the sender has already paid a ticket under; send at least one ticket",
            RejectReason.BAD_SIGNATURE,
        )
    for (nonce, _), signer in zip(payment.tickets, signers, strict=True):
        if signer != payment.sender:
            found = "recovers to no key" if signer is None else f"recovers to {signer}"
            raise PaymentRejected(
                401,
                f"the signature of ticket {nonce} is not the sender's: it {found}, not "
                f"{payment.sender}",
                RejectReason.BAD_SIGNATURE,
            )
