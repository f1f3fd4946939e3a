"""What the node earned: fees charged, tickets received and won, from the payment ledger.

Fees are what jobs cost (less refunds); the expected value received is what the tickets
were worth; winning face value is what redemption can actually collect. Over many tickets
the three agree; over a few, winnings are lumpy. All amounts are wei, exact.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from fractions import Fraction

from core.payments.ledger import LedgerTx, PaymentLedger
from core.payments.pricing import format_eth

__all__ = ["Earnings", "earnings", "format_earnings"]


@dataclass(frozen=True)
class Earnings:
    total_fees: Fraction
    per_model: dict[str, Fraction]
    per_day: list[tuple[dt.date, Fraction]]  # the last ``days`` local days, oldest first
    winning_tickets: int
    winning_face_value: int
    expected_value_received: Fraction
    jobs: int = 0  # jobs charged (refunded ones excluded)
    refunded_jobs: int = 0
    tickets: int = 0
    redeemed_tickets: int = 0
    redeemed_value: int = 0  # what redemptions paid out (off-chain: from recorded deposits)
    per_sender: dict[str, Fraction] = field(default_factory=dict)


async def earnings(ledger: PaymentLedger, days: int = 30, today: dt.date | None = None) -> Earnings:
    """Sum the ledger; ``per_day`` covers ``days`` local days ending ``today``."""
    last = today or dt.date.today()
    first = last - dt.timedelta(days=days - 1)
    return await ledger.transact(lambda tx: _earnings_sync(tx, first, days))


def _earnings_sync(tx: LedgerTx, first: dt.date, days: int) -> Earnings:
    total = Fraction(0)
    per_model: defaultdict[str, Fraction] = defaultdict(Fraction)
    per_sender: defaultdict[str, Fraction] = defaultdict(Fraction)
    day_keys = [first + dt.timedelta(days=i) for i in range(days)]
    per_day = dict.fromkeys(day_keys, Fraction(0))
    jobs = refunded = 0
    fees = tx.execute(
        "SELECT sender, fee, model_id, capability, charged_at, refunded_at FROM job_fees"
    )
    for sender, fee_text, model_id, capability, charged_at, refunded_at in fees:
        if refunded_at is not None:
            refunded += 1
            continue
        fee = Fraction(fee_text)
        jobs += 1
        total += fee
        per_model[model_id or capability or "(unlabelled)"] += fee
        per_sender[sender] += fee
        day = dt.date.fromtimestamp(charged_at)
        if day in per_day:
            per_day[day] += fee
    ev = Fraction(0)
    count = wins = redeemed = 0
    win_face = paid = 0
    rows = tx.execute("SELECT expected_value, winning, face_value, redeemed_at, paid FROM tickets")
    for ev_text, winning, face_value, redeemed_at, paid_text in rows:
        count += 1
        ev += Fraction(ev_text)
        if winning:
            wins += 1
            win_face += int(face_value)
        if redeemed_at is not None:
            redeemed += 1
            paid += int(paid_text or 0)
    return Earnings(
        total_fees=total,
        per_model=dict(sorted(per_model.items())),
        per_day=list(per_day.items()),
        winning_tickets=wins,
        winning_face_value=win_face,
        expected_value_received=ev,
        jobs=jobs,
        refunded_jobs=refunded,
        tickets=count,
        redeemed_tickets=redeemed,
        redeemed_value=paid,
        per_sender=dict(sorted(per_sender.items())),
    )


def format_earnings(e: Earnings, show_days: int = 7) -> str:
    """A plain-text report for ``orchard earnings``: totals, per model, the last days."""
    lines = [
        "Earnings (off-chain ledger)",
        "",
        f"  {'Fees charged':<28}{format_eth(e.total_fees)}",
        f"  {'Jobs charged':<28}{e.jobs}"
        + (f" ({e.refunded_jobs} refunded)" if e.refunded_jobs else ""),
        f"  {'Tickets received':<28}{e.tickets}",
        f"  {'Expected value received':<28}{format_eth(e.expected_value_received)}",
        f"  {'Winning tickets':<28}{e.winning_tickets}",
        f"  {'Winning face value':<28}{format_eth(e.winning_face_value)}",
        f"  {'Redeemed (off-chain)':<28}{e.redeemed_tickets} tickets, "
        f"{format_eth(e.redeemed_value)}",
    ]
    if e.per_model:
        width = max(len("Model"), *(len(m) for m in e.per_model))
        lines += ["", f"  {'Model':<{width}}  Fees"]
        lines += [f"  {m:<{width}}  {format_eth(fee)}" for m, fee in e.per_model.items()]
    recent = e.per_day[-show_days:] if show_days > 0 else []
    if recent:
        lines += ["", f"  {'Day':<10}  Fees"]
        lines += [f"  {day.isoformat():<10}  {format_eth(fee)}" for day, fee in recent]
    return "\n".join(lines) + "\n"
