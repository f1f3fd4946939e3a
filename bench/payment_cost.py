"""Time a ticket payment adds to a job: signing on B and checking on O, next to an unpaid
baseline (the same loop without payment) in the same run.

B: ``TicketSender.payment_for`` + ``encode_header``. O: ``decode_header`` +
``TicketRecipient.receive`` (signature recovery, the SQLite transaction on the ledger's
thread). The ledger is a real WAL database in a temporary folder; deposits are off-chain.

    .venv/bin/python bench/payment_cost.py [--iterations 500]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

from _common import median_ms, p95_ms
from eth_account import Account
from eth_keys.backends import get_backend

from core.config import Price
from core.payments.chain import OffChainLedger
from core.payments.ledger import PaymentLedger
from core.payments.pricing import fee_for
from core.payments.recipient import TicketRecipient
from core.payments.sender import TicketSender
from core.payments.tickets import decode_header, encode_header

PRICE = Price(Fraction(4), 1, "WEI")
PIXELS = 512 * 512
FEE = fee_for(PIXELS, PRICE)
WIN_PROB = 2**253  # one ticket in eight wins


async def scenario(data: Path, face_value: int, iterations: int) -> dict[str, float]:
    o, b = Account.create(), Account.create()
    async with PaymentLedger(data) as ledger:
        chain = OffChainLedger(ledger)
        await chain.set_deposit(b.address, 10**24)
        recipient = TicketRecipient(b"s" * 32, o.address, ledger, chain, face_value, WIN_PROB)
        sender = TicketSender(b)
        params = await recipient.ticket_params()
        sign_s, verify_s, tickets, size = [], [], 0, 0
        for i in range(iterations):
            t0 = time.perf_counter()
            fee = fee_for(PIXELS, PRICE)
            header = encode_header(sender.payment_for(params, fee, PRICE.per_pixel))
            t1 = time.perf_counter()
            receipt = await recipient.receive(decode_header(header), fee, f"job-{i}")
            t2 = time.perf_counter()
            sign_s.append(t1 - t0)
            verify_s.append(t2 - t1)
            tickets += receipt.tickets
            size = max(size, len(header))
    return {
        "tickets": tickets / iterations,
        "b": median_ms(sign_s),
        "b95": p95_ms(sign_s),
        "o": median_ms(verify_s),
        "o95": p95_ms(verify_s),
        "bytes": size,
    }


async def baseline(iterations: int) -> dict[str, float]:
    """The same loop, unpaid: the fee is computed and nothing else happens."""
    b_s, o_s = [], []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fee_for(PIXELS, PRICE)
        t1 = time.perf_counter()
        await asyncio.sleep(0)
        t2 = time.perf_counter()
        b_s.append(t1 - t0)
        o_s.append(t2 - t1)
    return {"tickets": 0, "b": median_ms(b_s), "b95": p95_ms(b_s), "o": median_ms(o_s),
            "o95": p95_ms(o_s), "bytes": 0}  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=500)
    n = parser.parse_args().iterations
    fee = int(FEE)
    rows = [("unpaid (baseline)", await baseline(n))]
    with tempfile.TemporaryDirectory() as tmp:
        for name, face_value in (
            ("paid, ticket EV = fee", 8 * fee),
            ("paid, ticket EV = 8 x fee", 64 * fee),
            ("paid, ticket EV = fee / 4", 2 * fee),
        ):
            rows.append((name, await scenario(Path(tmp) / name.replace(" ", "_"), face_value, n)))
    print(
        f"payment cost per job, {n} jobs of {PIXELS} px at {PRICE.per_pixel} wei/pixel; "
        f"{platform.processor() or platform.machine()}, Python {sys.version.split()[0]}, "
        f"eth-keys backend {type(get_backend()).__name__}"
    )
    print()
    print(f"| {'case':<26} | tickets/job | B sign ms (p95) | O verify ms (p95) | header bytes |")
    print(f"|{'-' * 28}|-------------|-----------------|-------------------|--------------|")
    for name, r in rows:
        print(
            f"| {name:<26} | {r['tickets']:>11.2f} | {r['b']:>6.3f} ({r['b95']:>6.3f}) |"
            f" {r['o']:>7.3f} ({r['o95']:>7.3f}) | {int(r['bytes']):>12} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
