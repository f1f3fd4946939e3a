"""The ledger's file: one owner at a time, exact amounts, atomic transactions."""

from __future__ import annotations

import sqlite3
from fractions import Fraction
from pathlib import Path

import pytest

from core.payments.ledger import DB_FILENAME, LedgerError, PaymentLedger


async def test_one_process_owns_the_ledger(tmp_path: Path) -> None:
    async with PaymentLedger(tmp_path):
        with pytest.raises(LedgerError, match="another Orchard process"):
            await PaymentLedger(tmp_path).open()
    async with PaymentLedger(tmp_path):
        pass


async def test_not_open_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="not open"):
        await PaymentLedger(tmp_path).balance("0x" + "00" * 20)


async def test_amounts_are_exact_text_and_transactions_atomic(tmp_path: Path) -> None:
    sender = "0x" + "ab" * 20
    async with PaymentLedger(tmp_path) as ledger:
        await ledger.transact(lambda tx: tx.set_balance(sender, Fraction(1, 3) + 10**30, 1.0))

        def half_done(tx):  # type: ignore[no-untyped-def]
            tx.set_balance(sender, Fraction(0), 2.0)
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            await ledger.transact(half_done)
        assert await ledger.balance(sender) == Fraction(1, 3) + 10**30
    with sqlite3.connect(tmp_path / DB_FILENAME) as conn:
        ((text, kind),) = conn.execute("SELECT balance, typeof(balance) FROM balances").fetchall()
    conn.close()
    assert kind == "text" and text == f"{3 * 10**30 + 1}/3"
