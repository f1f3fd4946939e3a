"""O's payment ledger in SQLite: what it issued, what it received, what each sender has left.

``data_dir/payments.db`` (WAL, ``synchronous=NORMAL``) beside the job store's
``orchard.db``, owned by one process at a time (a lock file beside it). It holds the ticket
params O issued, the highest nonce accepted per (sender, recipient_rand_hash), every
accepted ticket (the winning ones with their signature, for redemption), each sender's
balance, the fee of each job, and the off-chain deposits (``core.payments.chain``).

Amounts are exact: integers and :class:`~fractions.Fraction` s stored as TEXT
(``"123"``, ``"7/3"``), never REAL. Times are unix seconds (REAL).

As in ``core.store``, one worker thread owns the connection and the API is async. A change
that must be all-or-nothing runs as one function on that thread inside ``BEGIN IMMEDIATE``
… ``COMMIT`` through :meth:`PaymentLedger.transact`; an exception rolls it back whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, TypeVar

from core import sqlite
from core.errors import OrchardError
from core.filelock import acquire_lock
from core.payments.tickets import Ticket, TicketParams

log = logging.getLogger(__name__)

__all__ = ["DB_FILENAME", "IssuedParams", "JobFee", "LedgerTx", "PaymentLedger", "StoredTicket"]

DB_FILENAME = "payments.db"
T = TypeVar("T")

# Migrations[i] takes the schema from version i to i + 1. Append; never edit one released.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE issued_params (
            seed TEXT PRIMARY KEY, recipient TEXT NOT NULL, sender TEXT,
            face_value TEXT NOT NULL, win_prob TEXT NOT NULL,
            recipient_rand_hash TEXT NOT NULL UNIQUE, expires_at REAL NOT NULL,
            creation_round TEXT NOT NULL, creation_round_block_hash TEXT NOT NULL,
            issued_at REAL NOT NULL, revealed_at REAL)""",
        "CREATE INDEX issued_expiry ON issued_params (expires_at)",
        """CREATE TABLE nonces (
            sender TEXT NOT NULL, recipient_rand_hash TEXT NOT NULL, last_nonce TEXT NOT NULL,
            PRIMARY KEY (sender, recipient_rand_hash))""",
        """CREATE TABLE balances (
            sender TEXT PRIMARY KEY, balance TEXT NOT NULL, updated_at REAL NOT NULL)""",
        """CREATE TABLE tickets (
            ticket_hash TEXT PRIMARY KEY, sender TEXT NOT NULL, recipient TEXT NOT NULL,
            face_value TEXT NOT NULL, win_prob TEXT NOT NULL, sender_nonce TEXT NOT NULL,
            recipient_rand_hash TEXT NOT NULL, creation_round TEXT NOT NULL,
            creation_round_block_hash TEXT NOT NULL, sig TEXT NOT NULL, seed TEXT NOT NULL,
            expected_value TEXT NOT NULL, job_id TEXT NOT NULL, received_at REAL NOT NULL,
            winning INTEGER NOT NULL, redeemed_at REAL, tx_id TEXT, paid TEXT)""",
        "CREATE INDEX tickets_winning ON tickets (winning, redeemed_at)",
        "CREATE INDEX tickets_sender ON tickets (sender, winning, redeemed_at)",
        """CREATE TABLE job_fees (
            job_id TEXT PRIMARY KEY, sender TEXT NOT NULL, fee TEXT NOT NULL,
            credited TEXT NOT NULL, model_id TEXT NOT NULL, capability TEXT NOT NULL,
            charged_at REAL NOT NULL, refunded_at REAL)""",
        "CREATE INDEX job_fees_charged ON job_fees (charged_at)",
        """CREATE TABLE deposits (
            sender TEXT PRIMARY KEY, deposit TEXT NOT NULL, reserve TEXT NOT NULL,
            updated_at REAL NOT NULL)""",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)


class LedgerError(OrchardError):
    """The payment ledger cannot be used (not open, owned by another process, too new)."""


@dataclass(frozen=True)
class IssuedParams:
    params: TicketParams
    sender: str | None  # issued on request of this sender, or None
    issued_at: float
    revealed_at: float | None  # a redemption revealed the rand: no more tickets on these


@dataclass(frozen=True)
class StoredTicket:
    ticket: Ticket
    sig: bytes
    seed: int
    expected_value: Fraction
    job_id: str
    received_at: float
    winning: bool
    redeemed_at: float | None = None
    tx_id: str | None = None
    paid: int | None = None  # what the redemption paid out (may be below face value)


@dataclass(frozen=True)
class JobFee:
    job_id: str
    sender: str
    fee: Fraction
    credited: Fraction  # expected value of the tickets that came with the job
    model_id: str
    capability: str
    charged_at: float
    refunded_at: float | None = None


def _ftext(value: Fraction | int) -> str:
    value = Fraction(value)
    return f"{value.numerator}/{value.denominator}" if value.denominator != 1 else str(value)


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _unhex(text: str) -> bytes:
    return bytes.fromhex(text[2:])


def _enc(value: Any) -> Any:
    """A field as SQLite holds it: int and Fraction as exact TEXT, bytes as 0x hex, bool as
    0/1; str, float (times) and None as they are."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | Fraction):
        return _ftext(value)
    if isinstance(value, bytes):
        return _hex(value)
    return value


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "int": int,
    "Fraction": Fraction,
    "bytes": _unhex,
    "bool": bool,
    "float": float,
    "str": str,
}


def _dec(cls: type[T], row: sqlite3.Row, **given: Any) -> T:
    """An instance of the dataclass ``cls`` from the row's columns of its fields' names."""
    values = dict(given)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in values:
            raw = row[f.name]
            kind = str(f.type).split(" | ")[0]
            values[f.name] = None if raw is None else _DECODERS[kind](raw)
    return cls(**values)


def _row(obj: Any, **extra: Any) -> dict[str, Any]:
    return {**{f.name: _enc(getattr(obj, f.name)) for f in dataclasses.fields(obj)}, **extra}


def _insert(conn: sqlite3.Connection, table: str, row: dict[str, Any]) -> None:
    names = ", ".join(row)
    marks = ", ".join(f":{name}" for name in row)
    conn.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", row)


class LedgerTx:
    """The ledger's synchronous operations, for use inside :meth:`PaymentLedger.transact`
    (on the ledger's thread, in one transaction)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, args)

    # -- issued params
    def add_issued(self, params: TicketParams, sender: str | None, issued_at: float) -> None:
        _insert(self.conn, "issued_params", _row(params, sender=sender, issued_at=issued_at))

    def issued(self, seed: int) -> IssuedParams | None:
        r = self.conn.execute("SELECT * FROM issued_params WHERE seed = ?", (str(seed),)).fetchone()
        if r is None:
            return None
        return IssuedParams(_dec(TicketParams, r), r["sender"], r["issued_at"], r["revealed_at"])

    def mark_revealed(self, recipient_rand_hash: bytes, at: float) -> None:
        self.conn.execute(
            "UPDATE issued_params SET revealed_at = ? WHERE recipient_rand_hash = ?"
            " AND revealed_at IS NULL",
            (at, _hex(recipient_rand_hash)),
        )

    # -- nonces
    def last_nonce(self, sender: str, recipient_rand_hash: bytes) -> int | None:
        row = self.conn.execute(
            "SELECT last_nonce FROM nonces WHERE sender = ? AND recipient_rand_hash = ?",
            (sender, _hex(recipient_rand_hash)),
        ).fetchone()
        return None if row is None else int(row[0])

    def set_nonce(self, sender: str, recipient_rand_hash: bytes, nonce: int) -> None:
        self.conn.execute(
            "INSERT INTO nonces VALUES (?, ?, ?) ON CONFLICT (sender, recipient_rand_hash)"
            " DO UPDATE SET last_nonce = excluded.last_nonce",
            (sender, _hex(recipient_rand_hash), str(nonce)),
        )

    # -- balances
    def balance(self, sender: str) -> Fraction:
        row = self.conn.execute("SELECT balance FROM balances WHERE sender = ?", (sender,))
        found = row.fetchone()
        return Fraction(0) if found is None else Fraction(found[0])

    def set_balance(self, sender: str, balance: Fraction, at: float) -> None:
        self.conn.execute(
            "INSERT INTO balances VALUES (?, ?, ?) ON CONFLICT (sender)"
            " DO UPDATE SET balance = excluded.balance, updated_at = excluded.updated_at",
            (sender, _ftext(balance), at),
        )

    # -- tickets
    def add_ticket(self, t: StoredTicket) -> None:
        row = {**_row(t.ticket, ticket_hash=_hex(t.ticket.hash())), **_row(t)}
        del row["ticket"]
        _insert(self.conn, "tickets", row)

    def has_ticket(self, ticket_hash: bytes) -> bool:
        """Whether this exact ticket (same sender, params and nonce) was accepted before."""
        row = self.conn.execute(
            "SELECT 1 FROM tickets WHERE ticket_hash = ?", (_hex(ticket_hash),)
        ).fetchone()
        return row is not None

    def tickets(self, where: str = "", args: tuple[Any, ...] = ()) -> list[StoredTicket]:
        sql = "SELECT * FROM tickets" + (f" WHERE {where}" if where else "") + " ORDER BY rowid"
        rows = self.conn.execute(sql, args)
        return [_dec(StoredTicket, r, ticket=_dec(Ticket, r)) for r in rows]

    def pending_face_value(self, sender: str) -> int:
        """Face value of ``sender``'s winning tickets not yet redeemed."""
        rows = self.conn.execute(
            "SELECT face_value FROM tickets WHERE sender = ? AND winning = 1"
            " AND redeemed_at IS NULL",
            (sender,),
        )
        return sum(int(r[0]) for r in rows)

    def mark_redeemed(self, ticket_hash: bytes, tx_id: str, paid: int, at: float) -> None:
        cur = self.conn.execute(
            "UPDATE tickets SET redeemed_at = ?, tx_id = ?, paid = ? WHERE ticket_hash = ?"
            " AND winning = 1 AND redeemed_at IS NULL",
            (at, tx_id, str(paid), _hex(ticket_hash)),
        )
        if cur.rowcount != 1:
            raise KeyError(f"no unredeemed winning ticket {_hex(ticket_hash)}")

    # -- job fees
    def add_job_fee(self, fee: JobFee) -> None:
        try:
            _insert(self.conn, "job_fees", _row(fee))
        except sqlite3.IntegrityError:
            raise ValueError(f"job {fee.job_id!r} was already paid for") from None

    def job_fee(self, job_id: str) -> JobFee | None:
        row = self.conn.execute("SELECT * FROM job_fees WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else _dec(JobFee, row)

    def mark_refunded(self, job_id: str, at: float) -> None:
        self.conn.execute("UPDATE job_fees SET refunded_at = ? WHERE job_id = ?", (at, job_id))

    # -- off-chain deposits
    def deposit(self, sender: str) -> tuple[int, int]:
        row = self.conn.execute(
            "SELECT deposit, reserve FROM deposits WHERE sender = ?", (sender,)
        ).fetchone()
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    def set_deposit(self, sender: str, deposit: int, reserve: int, at: float) -> None:
        if deposit < 0 or reserve < 0:
            raise ValueError("a deposit and a reserve cannot be negative")
        self.conn.execute(
            "INSERT INTO deposits VALUES (?, ?, ?, ?) ON CONFLICT (sender) DO UPDATE SET"
            " deposit = excluded.deposit, reserve = excluded.reserve,"
            " updated_at = excluded.updated_at",
            (sender, str(deposit), str(reserve), at),
        )

    # -- housekeeping
    def prune_params(self, expired_before: float) -> int:
        """Forget params that expired before ``expired_before`` and their nonces, except
        those a winning ticket not yet redeemed still needs. Tickets on forgotten params
        are refused as unknown, so no replay becomes possible."""
        keep = "SELECT recipient_rand_hash FROM tickets WHERE winning = 1 AND redeemed_at IS NULL"
        cur = self.conn.execute(
            f"DELETE FROM issued_params WHERE expires_at < ? AND recipient_rand_hash NOT IN"
            f" ({keep})",
            (expired_before,),
        )
        self.conn.execute(
            "DELETE FROM nonces WHERE recipient_rand_hash NOT IN"
            " (SELECT recipient_rand_hash FROM issued_params)"
        )
        return cur.rowcount


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database to :data:`SCHEMA_VERSION`; returns the version it had before."""

    def too_new(version: int) -> Exception:
        return LedgerError(
            f"the payment ledger is from a newer Orchard (schema {version}, this one knows "
            f"{SCHEMA_VERSION}); upgrade Orchard or move {DB_FILENAME} away"
        )

    return sqlite.migrate(conn, _MIGRATIONS, too_new)


_transaction = sqlite.transaction


class PaymentLedger:
    """``async with PaymentLedger(data_dir) as ledger``; see the module's docstring."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.db_path = self.data_dir / DB_FILENAME
        self._worker: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # used only on the worker thread
        self._lock: IO[bytes] | None = None

    async def open(self) -> None:
        if self._worker is not None:
            return
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="orchard-payments")
        try:
            await self._run(self._open_sync)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        worker = self._worker
        if worker is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(worker, self._close_sync)
        finally:
            self._worker = None
            worker.shutdown(wait=False)

    async def __aenter__(self) -> PaymentLedger:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def transact(self, fn: Callable[[LedgerTx], T]) -> T:
        """Run ``fn`` on the ledger thread in one transaction; an exception undoes it all."""
        return await self._run(self._transact_sync, fn)

    # -- conveniences
    async def balance(self, sender: str) -> Fraction:
        return await self.transact(lambda tx: tx.balance(sender))

    async def job_fee(self, job_id: str) -> JobFee | None:
        return await self.transact(lambda tx: tx.job_fee(job_id))

    async def issued(self, seed: int) -> IssuedParams | None:
        return await self.transact(lambda tx: tx.issued(seed))

    async def tickets(
        self, winning: bool | None = None, redeemed: bool | None = None
    ) -> list[StoredTicket]:
        """Accepted tickets, oldest first; filter on winning and on redeemed."""
        clauses = []
        if winning is not None:
            clauses.append(f"winning = {int(winning)}")
        if redeemed is not None:
            clauses.append("redeemed_at IS NOT NULL" if redeemed else "redeemed_at IS NULL")
        return await self.transact(lambda tx: tx.tickets(" AND ".join(clauses)))

    async def prune(self, expired_before: float) -> int:
        return await self.transact(lambda tx: tx.prune_params(expired_before))

    # -- worker-thread side
    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._worker is None:
            raise LedgerError("the payment ledger is not open")
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    def _transact_sync(self, fn: Callable[[LedgerTx], T]) -> T:
        conn = self._conn
        assert conn is not None
        with _transaction(conn):
            return fn(LedgerTx(conn))

    def _open_sync(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = _acquire_lock(self.data_dir / f"{DB_FILENAME}.lock")
        conn = sqlite.connect_wal(self.db_path)
        self._conn = conn
        migrate(conn)

    def _close_sync(self) -> None:
        conn, lock, self._conn, self._lock = self._conn, self._lock, None, None
        try:
            if conn is not None:
                with contextlib.closing(conn):
                    conn.execute("PRAGMA optimize")
        finally:
            if lock is not None:
                lock.close()


def _acquire_lock(path: Path) -> IO[bytes]:
    """Hold an exclusive lock on ``path`` for this process; LedgerError if another has it."""
    try:
        return acquire_lock(path)
    except OSError:
        raise LedgerError(
            f"another Orchard process is using the payment ledger in {path.parent}; stop it "
            "or choose another data directory"
        ) from None
