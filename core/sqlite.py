"""SQLite as Orchard uses it: WAL, autocommit connections, explicit transactions, numbered
migrations recorded in a ``schema_version`` table. Shared by the job store and the payment
ledger (each on its own worker thread)."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

log = logging.getLogger(__name__)


def connect_wal(path: Path) -> sqlite3.Connection:
    """An autocommit connection in WAL mode, ``synchronous=NORMAL``, rows as ``sqlite3.Row``."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 5000")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        log.warning("SQLite refused WAL mode for %s (got %s)", path, mode)
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error); ``conn`` is autocommit."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def migrate(
    conn: sqlite3.Connection,
    migrations: Sequence[Sequence[str]],
    too_new: Callable[[int], Exception],
) -> int:
    """Run ``migrations[v]`` for every version ``v`` the database lacks, each step in a
    transaction; returns the version it had before. ``too_new(version)`` is raised for a
    database from a newer Orchard."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    before = int(conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0)
    if before > len(migrations):
        raise too_new(before)
    for version in range(before, len(migrations)):
        with transaction(conn):
            for statement in migrations[version]:
                conn.execute(statement)
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version + 1,))
        log.info(
            "%s migrated to schema %d",
            conn.execute("PRAGMA database_list").fetchone()[2],
            version + 1,
        )
    return before
