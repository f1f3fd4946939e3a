"""Where deposits are read and winning tickets are redeemed.

:class:`Chain` is the interface Livepeer's TicketBroker contract will sit behind.
:class:`OffChainLedger` is the only implementation today, and it is OFF-CHAIN: there is no
blockchain, no ETH moves. A sender's deposit and reserve are numbers an operator records in
the local payment ledger; "redeeming" a winning ticket checks it as TicketBroker's
``redeemWinningTicket`` would, moves its face value out of that recorded deposit (then
reserve) and marks the ticket redeemed, with a transaction id ``offchain:<ticket hash>``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from eth_hash.auto import keccak

from core.payments.ledger import LedgerTx, PaymentLedger
from core.payments.tickets import Ticket, check_address, is_winning, recover_signer

__all__ = ["OFFCHAIN_TX_PREFIX", "Chain", "OffChainLedger", "RedeemError"]

OFFCHAIN_TX_PREFIX = "offchain:"


class RedeemError(ValueError):
    """A winning ticket cannot be redeemed (not winning, already redeemed, wrong rand...)."""


@runtime_checkable
class Chain(Protocol):
    """Deposits and redemption: Livepeer's TicketBroker, or the off-chain stand-in."""

    async def deposit_of(self, sender: str) -> tuple[int, int]:
        """``(deposit, reserve)`` of ``sender`` in wei."""
        ...

    async def redeem(self, ticket: Ticket, sig: bytes, recipient_rand: int) -> str:
        """Redeem a winning ticket; returns the transaction id."""
        ...


class OffChainLedger:
    """OFF-CHAIN stand-in for TicketBroker: deposits recorded in the local ledger.

    Nothing here touches a blockchain; an operator (or a test) records what each gateway
    has deposited with :meth:`set_deposit`, e.g. against an agreement made outside Orchard.
    """

    def __init__(self, ledger: PaymentLedger, now: Callable[[], float] = time.time) -> None:
        self.ledger = ledger
        self._now = now

    async def set_deposit(self, sender: str, deposit: int, reserve: int = 0) -> None:
        """Record ``sender``'s deposit and reserve (wei) — off-chain, in the local ledger."""
        address = check_address(sender, "sender")
        at = self._now()
        await self.ledger.transact(lambda tx: tx.set_deposit(address, deposit, reserve, at))

    async def deposit_of(self, sender: str) -> tuple[int, int]:
        """``(deposit, reserve)`` recorded off-chain for ``sender``; (0, 0) when none."""
        return await self.ledger.transact(lambda tx: tx.deposit(sender))

    async def redeem(self, ticket: Ticket, sig: bytes, recipient_rand: int) -> str:
        """Off-chain redemption with TicketBroker's checks: the rand matches the ticket's
        hash commitment, the signature is the sender's, the ticket wins and was not
        redeemed before. Pays the face value from the recorded deposit, then the reserve
        (as much as they hold), marks the ticket redeemed and the params' rand revealed.
        Returns ``offchain:0x<ticket hash>``. RedeemError when a check fails."""
        rand_hash = keccak(recipient_rand.to_bytes(32, "big"))
        if rand_hash != ticket.recipient_rand_hash:
            raise RedeemError("the recipient rand does not match the ticket's recipientRandHash")
        try:
            signer = recover_signer(ticket, sig)
        except ValueError as exc:
            raise RedeemError(f"invalid ticket signature: {exc}") from None
        if signer != ticket.sender:
            raise RedeemError(f"the ticket signature is {signer}'s, not the sender's")
        if not is_winning(sig, recipient_rand, ticket.win_prob):
            raise RedeemError("the ticket did not win")
        ticket_hash = ticket.hash()
        tx_id = f"{OFFCHAIN_TX_PREFIX}0x{ticket_hash.hex()}"
        at = self._now()

        def pay(tx: LedgerTx) -> None:
            deposit, reserve = tx.deposit(ticket.sender)
            from_deposit = min(deposit, ticket.face_value)
            from_reserve = min(reserve, ticket.face_value - from_deposit)
            try:
                tx.mark_redeemed(ticket_hash, tx_id, from_deposit + from_reserve, at)
            except KeyError:
                raise RedeemError(
                    f"ticket 0x{ticket_hash.hex()} is not a winning ticket awaiting redemption"
                    " in this ledger (already redeemed?)"
                ) from None
            tx.set_deposit(ticket.sender, deposit - from_deposit, reserve - from_reserve, at)
            tx.mark_revealed(ticket.recipient_rand_hash, at)

        await self.ledger.transact(pay)
        return tx_id
