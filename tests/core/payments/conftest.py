"""Fixtures for the payment tests: real secp256k1 keys, a real SQLite ledger, a fake clock."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from core.payments.chain import OffChainLedger
from core.payments.ledger import PaymentLedger
from core.payments.recipient import TicketRecipient
from core.payments.sender import TicketSender
from core.payments.tickets import decode_header, encode_header

SECRET = bytes(range(32))
PRICE = Fraction(4)  # wei per pixel
FEE = Fraction(512 * 512) * PRICE  # one 512x512 image
FACE_VALUE = int(FEE) * 10
WIN_PROB = 2**256 // 10  # one ticket in ten wins: a ticket is worth about one fee
DEPOSIT = 10**18


class Clock:
    """Settable unix time, starting now (B's state file drops params expired by real time)."""

    def __init__(self) -> None:
        self.t = float(int(time.time()))

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def o_account() -> LocalAccount:
    return Account.from_key("0x" + "11" * 32)


@pytest.fixture
def b_account() -> LocalAccount:
    return Account.from_key("0x" + "22" * 32)


@pytest.fixture
def mallory() -> LocalAccount:
    return Account.from_key("0x" + "33" * 32)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[PaymentLedger]:
    async with PaymentLedger(tmp_path / "data") as opened:
        yield opened


@dataclass
class Node:
    """O (recipient, ledger, off-chain chain) and B (sender), wired together."""

    recipient: TicketRecipient
    ledger: PaymentLedger
    chain: OffChainLedger
    sender: TicketSender

    async def pay(self, job_id: str, fee: Fraction = FEE, **kw: object):
        params = await self.recipient.ticket_params()
        return await self.pay_with(params, job_id, fee, **kw)

    async def pay_with(self, params, job_id: str, fee: Fraction = FEE, **kw: object):
        payment = self.sender.payment_for(params, fee, PRICE)
        wire = decode_header(encode_header(payment))
        return await self.recipient.receive(wire, fee, job_id, **kw)  # type: ignore[arg-type]


def make_recipient(
    ledger: PaymentLedger,
    o_account: LocalAccount,
    clock: Clock,
    face_value: int = FACE_VALUE,
    win_prob: int = WIN_PROB,
) -> tuple[TicketRecipient, OffChainLedger]:
    chain = OffChainLedger(ledger, now=clock)
    recipient = TicketRecipient(
        SECRET, o_account.address, ledger, chain, face_value, win_prob, 600, now=clock
    )
    return recipient, chain


@pytest.fixture
async def node(
    ledger: PaymentLedger, o_account: LocalAccount, b_account: LocalAccount, clock: Clock
) -> Node:
    recipient, chain = make_recipient(ledger, o_account, clock)
    await chain.set_deposit(b_account.address, DEPOSIT, DEPOSIT // 10)
    return Node(recipient, ledger, chain, TicketSender(b_account))
