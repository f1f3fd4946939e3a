"""B's side: keys, nonces, credit, and its state across restarts."""

from __future__ import annotations

import json
import stat
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from core.payments.sender import TicketSender, load_or_create_key
from core.payments.tickets import TicketParams, recover_signer

from .conftest import FEE, PRICE, Node


def test_plain_key_file_is_private_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "gateway.json"
    account = load_or_create_key(path)
    data = json.loads(path.read_text())
    assert data["address"] == account.address and data["private_key"].startswith("0x")
    if sys.platform != "win32":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path).address == account.address


def test_keystore_with_a_password(tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    account = load_or_create_key(path, password="correct horse")
    assert "crypto" in json.loads(path.read_text())
    assert load_or_create_key(path, password="correct horse").address == account.address
    with pytest.raises(ValueError, match="password"):
        load_or_create_key(path)
    with pytest.raises(ValueError):
        load_or_create_key(path, password="wrong")


async def test_nonces_rise_per_params_from_one(node: Node) -> None:
    a = await node.recipient.ticket_params()
    b = await node.recipient.ticket_params()
    fee = 3 * node.recipient.ticket_expected_value
    first = node.sender.payment_for(a, fee, PRICE)
    second = node.sender.payment_for(a, fee, PRICE)
    other = node.sender.payment_for(b, fee, PRICE)
    assert [n for n, _ in first.tickets] == [1, 2, 3]
    assert [n for n, _ in second.tickets] == [4, 5, 6]
    assert [n for n, _ in other.tickets] == [1, 2, 3]
    for payment in (first, other):
        for ticket, (_, sig) in zip(payment.to_tickets(), payment.tickets, strict=True):
            assert recover_signer(ticket, sig) == node.sender.address
    assert first.expected_price == PRICE and first.sender == node.sender.address


async def test_rejected_payment_gives_its_credit_back(node: Node) -> None:
    params = await node.recipient.ticket_params()
    payment = node.sender.payment_for(params, FEE, PRICE)
    assert (
        node.sender.credit(params.recipient) == len(payment.tickets) * params.expected_value - FEE
    )
    node.sender.payment_rejected(payment, FEE)
    assert node.sender.credit(params.recipient) == 0
    # The next payment under these params carries a ticket again (none was accepted).
    again = node.sender.payment_for(params, Fraction(0), PRICE)
    assert [n for n, _ in again.tickets] == [len(payment.tickets) + 1]
    node.sender.refunded(params.recipient, FEE)
    node.sender.sync_credit(params.recipient, "7/2")
    assert node.sender.credit(params.recipient) == Fraction(7, 2)


async def test_too_many_tickets_is_a_clear_error(node: Node) -> None:
    params = await node.recipient.ticket_params()
    with pytest.raises(ValueError, match="needs 41 tickets"):
        node.sender.payment_for(params, 40.5 * params.expected_value, PRICE)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        node.sender.payment_for(params, Fraction(-1), PRICE)


async def test_state_file_survives_a_restart(
    node: Node, b_account: LocalAccount, tmp_path: Path
) -> None:
    state = tmp_path / "sender.json"
    sender = TicketSender(b_account, state)
    params = await node.recipient.ticket_params()
    first = sender.payment_for(params, FEE, PRICE)
    receipt = await node.recipient.receive(first, FEE, "job-1")
    if sys.platform != "win32":
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
    reborn = TicketSender(b_account, state)
    assert reborn.credit(params.recipient) == receipt.balance
    second = reborn.payment_for(params, FEE, PRICE)
    assert second.tickets[0][0] == first.tickets[-1][0] + 1
    assert (await node.recipient.receive(second, FEE, "job-2")).balance == reborn.credit(
        params.recipient
    )


def test_state_file_of_another_account_is_refused(
    b_account: LocalAccount, mallory: LocalAccount, tmp_path: Path
) -> None:
    state = tmp_path / "sender.json"
    TicketSender(b_account, state).sync_credit(mallory.address, 1)
    with pytest.raises(ValueError, match="holds the state of"):
        TicketSender(mallory, state)


def test_params_without_value_are_refused(b_account: LocalAccount) -> None:
    params = TicketParams(b_account.address, 10, 0, bytes(32), 1, 2e9)
    with pytest.raises(ValueError, match="no value"):
        TicketSender(b_account).payment_for(params, FEE, PRICE)
