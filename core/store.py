"""Job history in SQLite and job outputs as files, in the user's data directory.

``data_dir/orchard.db`` is in WAL mode with ``synchronous=NORMAL``: a committed job
survives the node being killed (a power cut may lose the last few). Outputs are written to
``data_dir/outputs/<YYYY-MM-DD>/<job_id>-<n>.<ext>`` through a temporary file and
``os.replace``, so a file that exists is whole.

All SQLite work, and the output files' writes, run on one dedicated worker thread that
owns the connection. The API is async and never blocks the event loop. One process owns a
data directory at a time (a lock file beside the database): on :meth:`JobStore.open`,
jobs that a killed node left ``queued`` or ``running`` become ``interrupted``.

Fees are decimal strings, summed exactly with :class:`~decimal.Decimal`; never floats.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import re
import sqlite3
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Context, Decimal, Inexact, InvalidOperation
from enum import StrEnum
from functools import reduce
from pathlib import Path
from typing import IO, Any, TypeVar

from core import sqlite
from core.errors import OrchardError
from core.filelock import acquire_lock

log = logging.getLogger(__name__)

__all__ = [
    "DB_FILENAME",
    "INTERRUPTED_ERROR",
    "SCHEMA_VERSION",
    "JobRecord",
    "JobState",
    "JobStore",
    "StoreError",
    "migrate",
]

DB_FILENAME = "orchard.db"
INTERRUPTED_ERROR = "the node stopped before this job finished"

T = TypeVar("T")


class StoreError(OrchardError):
    """The job store cannot be used (not open, owned by another process, too new)."""


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


_UNFINISHED = (JobState.QUEUED, JobState.RUNNING)


@dataclass(frozen=True)
class JobRecord:
    """One job. ``request`` holds the request's parameters without image bytes (JSON)."""

    job_id: str
    capability: str
    model_id: str
    state: JobState = JobState.QUEUED
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    runner_id: str | None = None
    gpu: int | None = None
    request: dict[str, Any] = field(default_factory=dict)
    status: int | None = None
    error: str | None = None
    outputs: tuple[str, ...] = ()
    pixels: int = 0
    fee: str = "0"
    sender: str | None = None


_COLUMNS = tuple(f.name for f in dataclasses.fields(JobRecord))
_UPDATABLE = frozenset(_COLUMNS) - {"job_id"}

# Migrations[i] takes the schema from version i to i + 1. Append; never edit one released.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE jobs (
            job_id      TEXT PRIMARY KEY,
            capability  TEXT NOT NULL,
            model_id    TEXT NOT NULL,
            state       TEXT NOT NULL,
            created_at  REAL NOT NULL,
            started_at  REAL,
            finished_at REAL,
            runner_id   TEXT,
            gpu         INTEGER,
            request     TEXT NOT NULL DEFAULT '{}',
            status      INTEGER,
            error       TEXT,
            outputs     TEXT NOT NULL DEFAULT '[]',
            pixels      INTEGER NOT NULL DEFAULT 0,
            fee         TEXT NOT NULL DEFAULT '0',
            sender      TEXT
        )""",
        "CREATE INDEX jobs_created ON jobs (created_at)",
        "CREATE INDEX jobs_state ON jobs (state, created_at)",
        "CREATE INDEX jobs_model ON jobs (model_id, created_at)",
        "CREATE INDEX jobs_capability ON jobs (capability, created_at)",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

# Exact decimal sums: wide enough for any fee, and rounding raises instead of hiding.
_EXACT = Context(prec=1000, traps=[Inexact, InvalidOperation])
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SAFE_EXT = re.compile(r"[a-z0-9]{1,8}")


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database to :data:`SCHEMA_VERSION`; returns the version it had before."""

    def too_new(version: int) -> Exception:
        return StoreError(
            f"the job database is from a newer Orchard (schema {version}, this one knows "
            f"{SCHEMA_VERSION}); upgrade Orchard or move the database away"
        )

    return sqlite.migrate(conn, _MIGRATIONS, too_new)


_transaction = sqlite.transaction


def _check_fee(fee: object) -> str:
    if not isinstance(fee, str):
        raise TypeError(f"a fee is a decimal string (never a float), not {fee!r}")
    try:
        value = Decimal(fee)
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite() or value < 0:
        raise ValueError(f"a fee is a finite, non-negative decimal string, not {fee!r}")
    return fee


def _decimal_str(value: Decimal) -> str:
    """``Decimal("0.30")`` -> ``"0.3"``, ``Decimal("1E+2")`` -> ``"100"``; never an exponent."""
    if value == 0:
        return "0"
    return format(value.normalize(_EXACT), "f")


def _to_row(fields: dict[str, Any]) -> dict[str, Any]:
    row = dict(fields)
    if "state" in row:
        row["state"] = str(JobState(row["state"]))
    if "capability" in row:
        row["capability"] = str(row["capability"])
    if "request" in row:
        row["request"] = json.dumps(row["request"], sort_keys=True, allow_nan=False)
    if "outputs" in row:
        if isinstance(row["outputs"], str):
            raise TypeError("outputs must be a sequence of paths, not one string")
        row["outputs"] = json.dumps([str(p) for p in row["outputs"]])
    if "fee" in row:
        row["fee"] = _check_fee(row["fee"])
    return row


def _from_row(row: sqlite3.Row) -> JobRecord:
    data = dict(zip(row.keys(), row, strict=True))
    data["state"] = JobState(data["state"])
    data["request"] = json.loads(data["request"])
    data["outputs"] = tuple(json.loads(data["outputs"]))
    return JobRecord(**data)


class JobStore:
    """Job history and outputs under ``data_dir``; ``async with JobStore(d) as store``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.db_path = self.data_dir / DB_FILENAME
        self.outputs_dir = self.data_dir / "outputs"
        #: Ids of the jobs that :meth:`open` found unfinished and marked interrupted.
        self.recovered: tuple[str, ...] = ()
        self._worker: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # used only on the db thread
        self._lock: IO[bytes] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Create or migrate the database, and mark jobs a killed node left interrupted.

        StoreError when another process has the data directory open.
        """
        if self._worker is not None:
            return
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="orchard-store")
        try:
            await self._run(self._open_sync)
        except BaseException:
            await self.close()
            raise
        if self.recovered:
            log.warning("marked %d unfinished job(s) interrupted", len(self.recovered))

    async def close(self) -> None:
        worker = self._worker
        if worker is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(worker, self._close_sync)
        finally:
            self._worker = None
            worker.shutdown(wait=False)  # idle by now: the close above was its last work

    async def __aenter__(self) -> JobStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- jobs -----------------------------------------------------------------------------

    async def add_job(self, job: JobRecord) -> None:
        """Insert ``job``; ValueError when a job with its id exists."""
        row = _to_row(dataclasses.asdict(job))
        await self._run(self._add_sync, row)

    async def update_job(self, job_id: str, **fields: Any) -> JobRecord:
        """Change some fields of a job and return it; KeyError when there is no such job."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise TypeError(f"cannot update {', '.join(sorted(unknown))} of a job")
        return await self._run(self._update_sync, job_id, _to_row(fields))

    async def get_job(self, job_id: str) -> JobRecord | None:
        return await self._run(self._get_sync, job_id)

    async def recent_jobs(
        self,
        limit: int = 100,
        offset: int = 0,
        state: JobState | str | None = None,
        capability: str | None = None,
        model_id: str | None = None,
    ) -> list[JobRecord]:
        """Jobs newest first (by ``created_at``), optionally filtered."""
        state = None if state is None else JobState(state)
        given = {"state": state, "capability": capability, "model_id": model_id}
        where = {name: str(value) for name, value in given.items() if value is not None}
        sql = "SELECT * FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(f"{name} = ?" for name in where)
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?"
        args = (*where.values(), int(limit), int(offset))
        return await self._run(self._select_sync, sql, args)

    async def stats(self, days: int = 30) -> dict[str, Any]:
        """Counts and exact fee sums::

        {"total_jobs": int, "by_state": {state: n} (every state), "by_model": {model: n},
         "fees_by_model": {model: "1.5"}, "total_fees": "1.5",
         "jobs_per_day": {"YYYY-MM-DD": n}, "fees_per_day": {"YYYY-MM-DD": "0.3"}}

        The per-day maps cover the last ``days`` local days, oldest first, today included,
        days without jobs as 0; a job counts on the day it was created.
        """
        return await self._run(self._stats_sync, days)

    async def prune(self, older_than_days: float) -> int:
        """Delete finished jobs created more than ``older_than_days`` ago, and their output
        files under the outputs folder. Returns how many jobs went."""
        cutoff = time.time() - older_than_days * 86400
        outputs = await self._run(self._prune_sync, cutoff)
        await self._run(self._delete_outputs_sync, outputs)
        return len(outputs)

    # -- outputs --------------------------------------------------------------------------

    async def save_outputs(self, job_id: str, items: list[tuple[bytes, str]]) -> list[Path]:
        """Write each ``(data, ext)`` to ``outputs/<today>/<job_id>-<n>.<ext>`` atomically.

        ``n`` counts on from the job's files already there. Returns the absolute paths.
        It does not touch the job's record: pass the paths to :meth:`update_job`.
        """
        if not _SAFE_NAME.fullmatch(job_id):
            raise ValueError(f"job id {job_id!r} cannot name a file")
        exts = [ext.lower().lstrip(".") for _, ext in items]
        for ext in exts:
            if not _SAFE_EXT.fullmatch(ext):
                raise ValueError(f"bad output file extension {ext!r}")
        payloads = [(bytes(data), ext) for (data, _), ext in zip(items, exts, strict=True)]
        folder = self.outputs_dir / dt.date.today().isoformat()
        return await self._run(self._save_sync, folder, job_id, payloads)

    # -- worker-thread side -----------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._worker is None:
            raise StoreError("the job store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    def _db_conn(self) -> sqlite3.Connection:
        assert self._conn is not None
        return self._conn

    def _open_sync(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = _acquire_lock(self.data_dir / f"{DB_FILENAME}.lock")
        conn = sqlite.connect_wal(self.db_path)
        self._conn = conn
        migrate(conn)
        with _transaction(conn):
            states = tuple(str(s) for s in _UNFINISHED)
            rows = conn.execute(
                "SELECT job_id FROM jobs WHERE state IN (?, ?) ORDER BY created_at", states
            ).fetchall()
            conn.execute(
                "UPDATE jobs SET state = ?, error = ? WHERE state IN (?, ?)",
                (str(JobState.INTERRUPTED), INTERRUPTED_ERROR, *states),
            )
        self.recovered = tuple(r[0] for r in rows)

    def _close_sync(self) -> None:
        conn, lock, self._conn, self._lock = self._conn, self._lock, None, None
        try:
            if conn is not None:
                with contextlib.closing(conn):
                    conn.execute("PRAGMA optimize")
        finally:
            if lock is not None:
                lock.close()  # closing the descriptor releases the lock

    def _add_sync(self, row: dict[str, Any]) -> None:
        names = ", ".join(row)
        marks = ", ".join("?" * len(row))
        try:
            self._db_conn().execute(
                f"INSERT INTO jobs ({names}) VALUES ({marks})", tuple(row.values())
            )
        except sqlite3.IntegrityError:
            raise ValueError(f"job {row['job_id']!r} is already in the store") from None

    def _update_sync(self, job_id: str, row: dict[str, Any]) -> JobRecord:
        conn = self._db_conn()
        with _transaction(conn):
            if row:
                sets = ", ".join(f"{name} = ?" for name in row)
                conn.execute(f"UPDATE jobs SET {sets} WHERE job_id = ?", (*row.values(), job_id))
            job = self._get_sync(job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    def _get_sync(self, job_id: str) -> JobRecord | None:
        row = self._db_conn().execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
        found = row.fetchone()
        return None if found is None else _from_row(found)

    def _select_sync(self, sql: str, args: tuple[Any, ...]) -> list[JobRecord]:
        return [_from_row(r) for r in self._db_conn().execute(sql, args)]

    def _stats_sync(self, days: int) -> dict[str, Any]:
        first = dt.date.today() - dt.timedelta(days=days - 1)
        since = dt.datetime.combine(first, dt.time()).timestamp()
        conn = self._db_conn()  # the only writer is this thread: both reads agree
        grouped = conn.execute(
            "SELECT model_id, state, fee, COUNT(*) FROM jobs GROUP BY model_id, state, fee"
        )
        by_state = dict.fromkeys((str(s) for s in JobState), 0)
        by_model: Counter[str] = Counter()
        fees_by_model: defaultdict[str, Decimal] = defaultdict(Decimal)
        for model_id, state, fee, count in grouped:
            by_state[state] = by_state.get(state, 0) + count
            by_model[model_id] += count
            fee_sum = _EXACT.multiply(Decimal(fee), count)
            fees_by_model[model_id] = _EXACT.add(fees_by_model[model_id], fee_sum)
        day_keys = [(first + dt.timedelta(days=i)).isoformat() for i in range(days)]
        jobs_per_day = dict.fromkeys(day_keys, 0)
        fees_per_day = dict.fromkeys(day_keys, Decimal(0))
        recent = conn.execute("SELECT created_at, fee FROM jobs WHERE created_at >= ?", (since,))
        for created_at, fee in recent:
            day = dt.date.fromtimestamp(created_at).isoformat()
            if day in jobs_per_day:
                jobs_per_day[day] += 1
                fees_per_day[day] = _EXACT.add(fees_per_day[day], Decimal(fee))
        return {
            "total_jobs": sum(by_model.values()),
            "by_state": by_state,
            "by_model": dict(by_model),
            "fees_by_model": {m: _decimal_str(v) for m, v in fees_by_model.items()},
            "total_fees": _decimal_str(reduce(_EXACT.add, fees_by_model.values(), Decimal(0))),
            "jobs_per_day": jobs_per_day,
            "fees_per_day": {d: _decimal_str(v) for d, v in fees_per_day.items()},
        }

    def _prune_sync(self, cutoff: float) -> list[list[str]]:
        conn = self._db_conn()
        states = tuple(str(s) for s in _UNFINISHED)
        where = "created_at < ? AND state NOT IN (?, ?)"
        with _transaction(conn):
            rows = conn.execute(f"SELECT outputs FROM jobs WHERE {where}", (cutoff, *states))
            outputs = [json.loads(r[0]) for r in rows.fetchall()]
            conn.execute(f"DELETE FROM jobs WHERE {where}", (cutoff, *states))
        return outputs

    def _delete_outputs_sync(self, outputs: Iterable[list[str]]) -> None:
        root = self.outputs_dir.resolve()
        folders = set()
        for paths in outputs:
            for name in paths:
                path = Path(name).resolve()
                if not path.is_relative_to(root):
                    continue  # never delete what Orchard did not write
                path.unlink(missing_ok=True)
                folders.add(path.parent)
        for folder in folders:
            if folder != root and not any(folder.iterdir()):
                folder.rmdir()

    def _save_sync(self, folder: Path, job_id: str, items: list[tuple[bytes, str]]) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        pattern = re.compile(re.escape(job_id) + r"-(\d+)\.[a-z0-9]+")
        taken = [int(m.group(1)) for p in folder.iterdir() if (m := pattern.fullmatch(p.name))]
        first = max(taken, default=-1) + 1
        paths = []
        for n, (data, ext) in enumerate(items, start=first):
            path = folder / f"{job_id}-{n}.{ext}"
            _write_atomic(path, data)
            paths.append(path.resolve())
        return paths


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _acquire_lock(path: Path) -> IO[bytes]:
    """Hold an exclusive lock on ``path`` for this process; StoreError if another has it."""
    try:
        return acquire_lock(path)
    except OSError:
        raise StoreError(
            f"another Orchard process is using {path.parent}; stop it or choose another "
            "data directory"
        ) from None
