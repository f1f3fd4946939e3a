"""Earnings over the ledger, and the report the CLI prints."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction

from core.payments.earnings import earnings, format_earnings
from core.payments.ledger import PaymentLedger

from .conftest import FEE, Clock, Node


async def test_earnings_sum_fees_tickets_and_refunds(node: Node, clock: Clock) -> None:
    receipts = [await node.pay("job-a1", model_id="org/a", capability="text-to-image")]
    receipts.append(await node.pay("job-a2", model_id="org/a", capability="text-to-image"))
    receipts.append(
        await node.pay("job-b1", 2 * FEE, model_id="org/b", capability="image-to-video")
    )
    receipts.append(await node.pay("job-b2", model_id="org/b"))
    await node.recipient.refund("job-b2")
    today = dt.date.fromtimestamp(clock.t)
    e = await earnings(node.ledger, days=7, today=today)
    assert e.total_fees == 4 * FEE
    assert e.per_model == {"org/a": 2 * FEE, "org/b": 2 * FEE}
    assert e.jobs == 3 and e.refunded_jobs == 1
    assert e.per_day[-1] == (today, 4 * FEE) and len(e.per_day) == 7
    assert e.per_day[0] == (today - dt.timedelta(days=6), Fraction(0))
    tickets = await node.ledger.tickets()
    assert e.tickets == len(tickets) == sum(r.tickets for r in receipts)
    assert e.expected_value_received == sum(r.credited for r in receipts)
    assert e.winning_tickets == sum(r.winning for r in receipts)
    assert e.winning_face_value == sum(r.winning_face_value for r in receipts)
    assert e.per_sender == {node.sender.address: 4 * FEE}
    report = format_earnings(e)
    assert "off-chain" in report and "org/a" in report and today.isoformat() in report
    assert "0.000000000 ETH (2097152 wei)" in report  # 2 x 512x512 x 4 wei


async def test_empty_ledger(ledger: PaymentLedger) -> None:
    e = await earnings(ledger, days=3)
    assert e.total_fees == 0 and e.per_model == {} and len(e.per_day) == 3
    assert "Fees charged" in format_earnings(e)
