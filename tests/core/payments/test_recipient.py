"""O's checks, in order, each with its status and message, and nothing changed on a reject."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from fractions import Fraction

import pytest
from eth_account.signers.local import LocalAccount

from core.payments.ledger import PaymentLedger
from core.payments.tickets import (
    Payment,
    PaymentRejected,
    RejectReason,
    Ticket,
    TicketParams,
    decode_header,
    encode_header,
    sign,
)

from .conftest import DEPOSIT, FEE, PRICE, Clock, Node, make_recipient
from .test_tickets import keccak256


def signed(params: TicketParams, account: LocalAccount, nonce: int, sender: str | None = None):
    """A one-ticket payment signed by ``account`` (claiming to be ``sender``)."""
    sender = sender or account.address
    sig = sign(Ticket.from_params(params, sender, nonce), account)
    return Payment(params, sender, PRICE, ((nonce, sig),))


async def snapshot(ledger: PaymentLedger, sender: str) -> tuple[Fraction, int, int]:
    tickets = await ledger.tickets()
    count = await ledger.transact(
        lambda tx: tx.execute("SELECT COUNT(*) FROM job_fees").fetchone()[0]
    )
    return await ledger.balance(sender), len(tickets), count


async def rejected(
    node: Node,
    payment: Payment,
    fee: Fraction,
    status: int,
    reason: RejectReason,
    message: str,
    **kw: object,
) -> PaymentRejected:
    """Receive ``payment`` for a new job; assert the rejection and that nothing changed."""
    before = await snapshot(node.ledger, node.sender.address)
    with pytest.raises(PaymentRejected, match=message) as caught:
        await node.recipient.receive(decode_header(encode_header(payment)), fee, "bad-job", **kw)  # type: ignore[arg-type]
    assert (caught.value.status, caught.value.reason) == (status, reason)
    assert await snapshot(node.ledger, node.sender.address) == before
    assert await node.ledger.job_fee("bad-job") is None
    return caught.value


async def test_an_honest_payment_is_credited_and_charged(node: Node) -> None:
    receipt = await node.pay("job-1")
    ev = node.recipient.ticket_expected_value
    assert receipt.tickets == 2  # the EV is a hair below the fee: 2 tickets for the first job
    assert receipt.credited == 2 * ev and receipt.fee == FEE
    assert receipt.balance == 2 * ev - FEE == await node.ledger.balance(node.sender.address)
    assert receipt.balance == node.sender.credit(node.recipient.address)
    fee = await node.ledger.job_fee("job-1")
    assert fee is not None and fee.fee == FEE and fee.sender == node.sender.address


async def test_forged_signature_is_401(node: Node, mallory: LocalAccount) -> None:
    await node.pay("job-1")
    params = await node.recipient.ticket_params()
    forged = signed(params, mallory, 1, sender=node.sender.address)
    await rejected(
        node, forged, FEE, 401, RejectReason.BAD_SIGNATURE, f"recovers to {mallory.address}"
    )


async def test_wrong_recipient_is_400(node: Node, mallory: LocalAccount) -> None:
    await node.pay("job-1")
    params = dataclasses.replace(await node.recipient.ticket_params(), recipient=mallory.address)
    payment = node.sender.payment_for(params, FEE, PRICE)
    await rejected(node, payment, FEE, 400, RejectReason.WRONG_RECIPIENT, "made out to")


async def test_expired_params_are_400(node: Node, clock: Clock) -> None:
    await node.pay("job-1")
    params = await node.recipient.ticket_params()
    clock.t += 601
    payment = node.sender.payment_for(params, FEE, PRICE)
    await rejected(
        node, payment, FEE, 400, RejectReason.EXPIRED_PARAMS, "expired 1 s ago; fetch fresh"
    )


async def test_replayed_nonce_is_400(node: Node) -> None:
    params = await node.recipient.ticket_params()
    payment = node.sender.payment_for(params, FEE, PRICE)
    await node.recipient.receive(payment, FEE, "job-1")
    message = "nonce 1 was already used with these ticket params"
    await rejected(node, payment, FEE, 400, RejectReason.REPLAYED_NONCE, message)
    # An accepted nonce sent again on its own is a replay too.
    old = signed(params, node.sender.account, 1)
    await rejected(node, old, Fraction(0), 400, RejectReason.REPLAYED_NONCE, "nonce 1")


async def test_nonces_may_arrive_out_of_order(node: Node) -> None:
    """Two jobs signed 1 then 2 whose requests arrive 2 then 1 are both paid."""
    params = await node.recipient.ticket_params()
    first = signed(params, node.sender.account, 1)
    second = signed(params, node.sender.account, 2)
    await node.recipient.receive(second, Fraction(0), "job-b")
    await node.recipient.receive(first, Fraction(0), "job-a")


async def test_too_little_value_is_402_with_the_amount_missing(node: Node) -> None:
    await node.pay("job-1")
    balance = await node.ledger.balance(node.sender.address)
    params = await node.recipient.ticket_params()
    payment = signed(params, node.sender.account, 1)
    fee = 5 * FEE
    missing = fee - balance - node.recipient.ticket_expected_value
    error = await rejected(
        node, payment, fee, 402, RejectReason.INSUFFICIENT_BALANCE, "insufficient balance"
    )
    assert error.missing == missing
    assert f"job costs {int(fee)} wei" in error.msg and "missing ≈" in error.msg
    # Nothing was accepted, so the same nonce is good for a later job.
    receipt = await node.recipient.receive(payment, Fraction(0), "job-2")
    assert receipt.tickets == 1


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("face_value", lambda p: p.face_value * 2),
        ("win_prob", lambda p: p.win_prob * 2),
        ("recipient_rand_hash", lambda p: bytes(32)),
        ("expires_at", lambda p: p.expires_at + 3600),
    ],
)
async def test_tampered_params_are_400(
    node: Node, field: str, change: Callable[[TicketParams], object]
) -> None:
    await node.pay("job-1")
    params = await node.recipient.ticket_params()
    tampered = dataclasses.replace(params, **{field: change(params)})
    payment = signed(tampered, node.sender.account, 1)
    await rejected(node, payment, FEE, 400, RejectReason.TAMPERED_PARAMS, f"altered: {field} is")


async def test_unknown_seed_is_400(node: Node) -> None:
    await node.pay("job-1")
    params = await node.recipient.ticket_params()
    payment = signed(dataclasses.replace(params, seed=params.seed ^ 1), node.sender.account, 1)
    await rejected(
        node, payment, FEE, 400, RejectReason.UNKNOWN_PARAMS, "not issued by this orchestrator"
    )


async def test_params_from_another_secret_are_refused(node: Node) -> None:
    params = await node.recipient.ticket_params()
    node.recipient._secret = b"another secret, after a restart"
    payment = signed(params, node.sender.account, 1)
    await rejected(node, payment, FEE, 400, RejectReason.UNKNOWN_PARAMS, "another ticket secret")


async def test_params_issued_to_another_sender_are_400(node: Node, mallory: LocalAccount) -> None:
    params = await node.recipient.ticket_params(sender=mallory.address)
    payment = signed(params, node.sender.account, 1)
    await rejected(
        node, payment, FEE, 400, RejectReason.UNKNOWN_PARAMS, f"issued to {mallory.address}"
    )


async def test_price_below_os_is_402(node: Node) -> None:
    params = await node.recipient.ticket_params()
    payment = signed(params, node.sender.account, 1)
    message = "expects to pay 4 wei/pixel, below this orchestrator's price of 5 wei/pixel"
    await rejected(node, payment, FEE, 402, RejectReason.PRICE_TOO_LOW, message, price=Fraction(5))


async def test_deposit_must_cover_the_face_value(node: Node) -> None:
    await node.chain.set_deposit(node.sender.address, node.recipient.face_value - 1, 0)
    params = await node.recipient.ticket_params()
    payment = signed(params, node.sender.account, 1)
    await rejected(node, payment, FEE, 402, RejectReason.INSUFFICIENT_DEPOSIT, "deposit more")


async def test_a_payment_without_tickets_needs_a_ticket_first(node: Node) -> None:
    await node.pay("job-1")
    params = await node.recipient.ticket_params()
    empty = Payment(params, node.sender.address, PRICE, ())
    await rejected(
        node, empty, Fraction(1), 401, RejectReason.BAD_SIGNATURE, "send at least one ticket"
    )


async def test_refund_credits_back_the_fee_once(node: Node) -> None:
    receipt = await node.pay("job-1")
    assert await node.recipient.refund("job-1") == FEE
    assert await node.recipient.refund("job-1") == 0
    assert await node.recipient.refund("never-charged") == 0
    assert await node.ledger.balance(node.sender.address) == receipt.balance + FEE
    charged = await node.ledger.job_fee("job-1")
    assert charged is not None and charged.refunded_at is not None
    with pytest.raises(ValueError, match="already paid"):
        await node.pay("job-1")


async def test_honest_stream_keeps_balance_within_one_ticket(node: Node) -> None:
    """200 jobs of varied size; one ticket in ten wins; the balance never strays."""
    ev = node.recipient.ticket_expected_value
    credited = charged = Fraction(0)
    sizes = [(512, 512), (768, 768), (1024, 576), (256, 256)]
    params = await node.recipient.ticket_params()
    for i in range(200):
        if i % 50 == 0:  # B refreshes its params now and then
            params = await node.recipient.ticket_params()
        width, height = sizes[i % len(sizes)]
        fee = PRICE * width * height
        receipt = await node.pay_with(params, f"job-{i}", fee)
        credited += receipt.credited
        charged += fee
        balance = await node.ledger.balance(node.sender.address)
        assert balance == credited - charged == receipt.balance
        assert 0 <= balance < ev, f"job {i}: balance {balance} outside [0, {ev})"
        assert balance == node.sender.credit(node.recipient.address)
    tickets = await node.ledger.tickets()
    winners = [t for t in tickets if t.winning]
    assert 0 < len(winners) < len(tickets) / 3
    assert sum(t.expected_value for t in tickets) == credited
    # Every stored outcome agrees with the winning rule recomputed from O's rand.
    for stored in tickets:
        issued = await node.ledger.issued(stored.seed)
        assert issued is not None
        rand = node.recipient.recipient_rand(issued.params, issued.sender)
        value = int.from_bytes(keccak256(stored.sig + rand.to_bytes(32, "big")), "big")
        assert stored.winning is (value < stored.ticket.win_prob)


async def test_high_value_tickets_leave_credit_for_later_jobs(
    ledger, o_account, b_account, clock
) -> None:
    from core.payments.sender import TicketSender

    recipient, chain = make_recipient(ledger, o_account, clock, face_value=int(FEE) * 100)
    await chain.set_deposit(b_account.address, DEPOSIT)
    node = Node(recipient, ledger, chain, TicketSender(b_account))
    assert recipient.ticket_expected_value == pytest.approx(10 * FEE, rel=1e-9)
    params = await recipient.ticket_params()
    counts = [(await node.pay_with(params, f"job-{i}")).tickets for i in range(12)]
    # A ticket is worth a hair under ten fees: the tenth job needs the next ticket.
    assert counts == [1] + [0] * 8 + [1, 0, 0]
    assert await ledger.balance(b_account.address) == node.sender.credit(recipient.address)


async def test_restart_keeps_balances_and_refuses_replays(
    tmp_path, o_account, b_account, clock
) -> None:
    from core.payments.sender import TicketSender

    sender = TicketSender(b_account)
    async with PaymentLedger(tmp_path / "o") as ledger:
        recipient, chain = make_recipient(ledger, o_account, clock)
        await chain.set_deposit(b_account.address, DEPOSIT)
        params = await recipient.ticket_params()
        first = sender.payment_for(params, FEE, PRICE)
        receipt = await recipient.receive(first, FEE, "job-1")
    async with PaymentLedger(tmp_path / "o") as ledger:
        recipient, chain = make_recipient(ledger, o_account, clock)
        assert await ledger.balance(b_account.address) == receipt.balance
        assert await chain.deposit_of(b_account.address) == (DEPOSIT, 0)
        with pytest.raises(PaymentRejected) as caught:
            await recipient.receive(first, FEE, "job-2")
        assert caught.value.reason is RejectReason.REPLAYED_NONCE
        assert await ledger.balance(b_account.address) == receipt.balance
        # The params issued before the restart still work with the next nonce.
        second = await recipient.receive(sender.payment_for(params, FEE, PRICE), FEE, "job-2")
        assert second.balance == sender.credit(recipient.address)
        assert await recipient.refund("job-1") == FEE


async def test_winning_tickets_are_redeemed_off_chain(ledger, o_account, b_account, clock) -> None:
    from core.payments.chain import RedeemError
    from core.payments.sender import TicketSender

    always = 2**256 - 1
    recipient, chain = make_recipient(
        ledger, o_account, clock, face_value=int(FEE), win_prob=always
    )
    await chain.set_deposit(b_account.address, int(FEE) * 3 // 2, int(FEE))
    node = Node(recipient, ledger, chain, TicketSender(b_account))
    params = await recipient.ticket_params()
    receipt = await node.pay_with(params, "job-1")
    assert receipt.winning == receipt.tickets == 2
    assert receipt.winning_face_value == 2 * int(FEE)
    tx_ids = await recipient.redeem_winning()
    assert len(tx_ids) == 2 and all(t.startswith("offchain:0x") for t in tx_ids)
    # 1.5 fees of deposit and 1 of reserve paid 2 face values: 0.5 of reserve is left.
    assert await chain.deposit_of(b_account.address) == (0, int(FEE) // 2)
    stored = await ledger.tickets(winning=True)
    assert [t.tx_id for t in stored] == tx_ids and all(t.paid == int(FEE) for t in stored)
    assert await recipient.redeem_winning() == []
    issued = await ledger.issued(params.seed)
    assert issued is not None
    rand = recipient.recipient_rand(issued.params, issued.sender)
    with pytest.raises(RedeemError, match="already redeemed"):
        await chain.redeem(stored[0].ticket, stored[0].sig, rand)
    with pytest.raises(RedeemError, match="does not match"):
        await chain.redeem(stored[0].ticket, stored[0].sig, rand + 1)
    # The redemption revealed the rand: no more tickets under these params.
    with pytest.raises(PaymentRejected, match="revealing") as caught:
        await node.pay_with(params, "job-2")
    assert caught.value.reason is RejectReason.EXPIRED_PARAMS


async def test_negative_fee_is_a_caller_bug(node: Node) -> None:
    params = await node.recipient.ticket_params()
    with pytest.raises(ValueError, match="negative"):
        await node.recipient.receive(Payment(params, node.sender.address, PRICE), -1, "j")


async def test_prune_forgets_expired_params_but_not_unredeemed_winners(
    node: Node, clock: Clock
) -> None:
    unused = await node.recipient.ticket_params()
    used = await node.recipient.ticket_params()
    receipt = await node.pay_with(used, "job-1")
    clock.t += 601
    assert await node.ledger.prune(clock.t) == (1 if receipt.winning else 2)
    assert await node.ledger.issued(unused.seed) is None
    assert (await node.ledger.issued(used.seed) is not None) is bool(receipt.winning)
    # Tickets under forgotten params are refused as unknown (or expired): never replayed.
    with pytest.raises(PaymentRejected) as caught:
        await node.pay_with(used, "job-2")
    assert caught.value.reason in (RejectReason.UNKNOWN_PARAMS, RejectReason.EXPIRED_PARAMS)
    assert (await node.pay("job-3")).fee == FEE
