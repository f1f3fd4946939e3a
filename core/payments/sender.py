"""B's side of ticket payments: sign just enough tickets to cover each job's fee.

:class:`TicketSender` keeps, per orchestrator (recipient address), the credit it believes
that O holds for it, and per (recipient, recipient_rand_hash) the last nonce it used. For a
fee it signs ``ceil((fee - credit) / ticket_ev)`` tickets (none when the credit covers it),
nonces counting up from 1 under each params. The first payment under new params carries at
least one ticket: O lets a payment without tickets draw on the balance only under params
the sender has already paid a ticket under (that is how O knows who is asking).

The state is in memory, or, given ``state_path``, also in a small JSON file rewritten
atomically after each change, so that after a restart B neither reuses a nonce under
params it still holds nor forgets its credit. Without a file, fetch fresh params after a
restart (a new recipient_rand_hash starts a new nonce sequence) and re-sync the credit from
O's balance (:meth:`TicketSender.sync_credit`).

Signing is CPU work (milliseconds a ticket): from async code call :meth:`payment_for`
through ``asyncio.to_thread``. The object is thread-safe.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from core.payments.tickets import (
    MAX_TICKETS,
    Payment,
    Ticket,
    TicketParams,
    check_address,
    parse_price,
    sign,
)

__all__ = ["TicketSender", "load_or_create_key"]


class TicketSender:
    """Makes :class:`~core.payments.tickets.Payment` s for one gateway account."""

    def __init__(
        self,
        account: LocalAccount,
        state_path: Path | None = None,
        *,
        max_tickets: int = MAX_TICKETS,
    ) -> None:
        self.account = account
        self.address = check_address(account.address, "sender")
        self.state_path = None if state_path is None else Path(state_path)
        self.max_tickets = max_tickets
        self._lock = threading.Lock()
        self._credit: dict[str, Fraction] = {}
        # (recipient, rand hash hex) -> [last nonce, tickets believed accepted, expires_at]
        self._sessions: dict[tuple[str, str], list[Any]] = {}
        if self.state_path is not None and self.state_path.exists():
            self._load(self.state_path)

    def credit(self, recipient: str) -> Fraction:
        """The credit this sender believes ``recipient`` holds for it (wei)."""
        with self._lock:
            return self._credit.get(check_address(recipient, "recipient"), Fraction(0))

    def payment_for(
        self, params: TicketParams, fee: Fraction | int, price_per_pixel: Fraction | int | str
    ) -> Payment:
        """A payment covering ``fee`` (wei) at O ``params.recipient``, counted as spent.

        ValueError when it would take more than ``max_tickets`` tickets (O's ticket expected
        value is too small for this fee) or the fee is negative."""
        fee = Fraction(fee)
        if fee < 0:
            raise ValueError(f"a fee cannot be negative ({fee})")
        price = parse_price(price_per_pixel)
        ev = params.expected_value
        if ev <= 0:
            raise ValueError("these ticket params give tickets no value (win_prob or face 0)")
        key = (params.recipient, params.recipient_rand_hash.hex())
        with self._lock:
            credit = self._credit.get(params.recipient, Fraction(0))
            session = self._sessions.setdefault(key, [0, 0, params.expires_at])
            count = math.ceil((fee - credit) / ev) if fee > credit else 0
            if count == 0 and session[1] == 0:
                count = 1  # O must see a signature under new params once
            if count > self.max_tickets:
                raise ValueError(
                    f"a fee of {fee} wei needs {count} tickets of {float(ev):.6g} wei each; at "
                    f"most {self.max_tickets} fit a payment (O's ticket value is too small)"
                )
            first = session[0] + 1
            session[0] += count
            session[1] += count
            self._credit[params.recipient] = credit + count * ev - fee
            self._save()
        tickets = []
        for nonce in range(first, first + count):
            ticket = Ticket.from_params(params, self.address, nonce)
            tickets.append((nonce, sign(ticket, self.account)))
        return Payment(params, self.address, price, tuple(tickets))

    def payment_rejected(self, payment: Payment, fee: Fraction | int) -> None:
        """O refused ``payment`` (made for ``fee``) and changed nothing: undo its credit.
        Its nonces are not reused (O needs only rising nonces)."""
        params = payment.ticket_params
        key = (params.recipient, params.recipient_rand_hash.hex())
        with self._lock:
            credit = self._credit.get(params.recipient, Fraction(0))
            count = len(payment.tickets)
            self._credit[params.recipient] = credit - count * params.expected_value + Fraction(fee)
            if key in self._sessions:
                self._sessions[key][1] = max(0, self._sessions[key][1] - count)
            self._save()

    def refunded(self, recipient: str, fee: Fraction | int) -> None:
        """O accepted the payment but the job failed and O refunded its fee."""
        recipient = check_address(recipient, "recipient")
        with self._lock:
            self._credit[recipient] = self._credit.get(recipient, Fraction(0)) + Fraction(fee)
            self._save()

    def sync_credit(self, recipient: str, balance: Fraction | int | str) -> None:
        """Take O's word for the balance it holds for us (from its response)."""
        recipient = check_address(recipient, "recipient")
        with self._lock:
            self._credit[recipient] = parse_price(balance)
            self._save()

    # -- persistence -----------------------------------------------------------------------

    def _load(self, path: Path) -> None:
        data = json.loads(path.read_text())
        if data.get("sender") != self.address:
            raise ValueError(f"{path} holds the state of {data.get('sender')}, not {self.address}")
        self._credit = {check_address(r): Fraction(v) for r, v in data["credit"].items()}
        for entry in data["sessions"]:
            recipient, rand_hash, nonce, accepted, expires_at = entry
            self._sessions[(check_address(recipient), rand_hash)] = [nonce, accepted, expires_at]

    def _save(self) -> None:
        """Write the state atomically (called with the lock held); drops expired params."""
        if self.state_path is None:
            return
        now = time.time()
        self._sessions = {k: v for k, v in self._sessions.items() if v[2] > now}
        data = {
            "sender": self.address,
            "credit": {r: f"{c.numerator}/{c.denominator}" for r, c in self._credit.items()},
            "sessions": [[r, h, *v] for (r, h), v in self._sessions.items()],
        }
        _write_private(self.state_path, json.dumps(data, indent=1).encode(), replace=True)


def load_or_create_key(path: Path, password: str | None = None) -> LocalAccount:
    """B's Ethereum account from ``path``, created when absent.

    Without a password the file is JSON ``{"address", "private_key"}`` (hex), mode 600.
    With one it is a standard encrypted Ethereum keystore (v3, scrypt), the format geth and
    go-livepeer read; decrypting takes about a second. Blocking: call it at start-up or
    through ``asyncio.to_thread``."""
    path = Path(path)
    if path.exists():
        data = json.loads(path.read_text())
        if "crypto" in data or "Crypto" in data:
            if password is None:
                raise ValueError(f"{path} is an encrypted keystore: a password is needed")
            return Account.from_key(Account.decrypt(data, password))
        return Account.from_key(data["private_key"])
    account = Account.create()
    if password is not None:
        content: dict[str, Any] = Account.encrypt(account.key, password)
    else:
        content = {"address": account.address, "private_key": "0x" + account.key.hex()}
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_private(path, json.dumps(content, indent=1).encode(), replace=False)
    return account


def _write_private(path: Path, data: bytes, replace: bool) -> None:
    """Write ``data`` to ``path`` (mode 600) through a temporary file; with
    ``replace=False`` fail if ``path`` appeared meanwhile."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # FileExistsError rather than overwrite a key
            os.unlink(tmp)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
