"""A runner's output: a size-bounded log file plus the last lines in memory for the GUI.

Lines arrive from a reader thread (a child's stdout, a container's log stream); the file is
written there too, so the event loop never waits on the disk. ``tail()`` is safe to call
from any thread.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

#: Rotate the log file at this size (the current file plus ``BACKUPS`` older ones are kept).
MAX_BYTES = 4 * 1024 * 1024
BACKUPS = 2
#: Lines kept in memory.
TAIL_LINES = 500


class LogSink:
    """Appends lines to ``path`` (rotated at ``max_bytes``) and keeps the last ones."""

    def __init__(
        self,
        path: Path | None,
        *,
        max_bytes: int = MAX_BYTES,
        backups: int = BACKUPS,
        tail_lines: int = TAIL_LINES,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lines: deque[str] = deque(maxlen=tail_lines)
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._size = 0
        self._broken = False

    def write(self, line: str) -> None:
        """Add one line (without its newline). Blocks on the disk: call off the loop."""
        line = line.rstrip("\r\n")
        with self._lock:
            self._lines.append(line)
            if self.path is None or self._broken:
                return
            data = (line + "\n").encode("utf-8", "replace")
            try:
                if self._file is None:
                    self._open()
                elif self._size + len(data) > self.max_bytes:
                    self._rotate()
                assert self._file is not None
                self._file.write(data)
                self._file.flush()
                self._size += len(data)
            except OSError as exc:  # a full disk must not take the runner down
                self._broken = True
                log.warning("cannot write runner log %s: %s; keeping it in memory", self.path, exc)

    def tail(self, n: int | None = None) -> list[str]:
        """The last ``n`` lines (all kept ones by default), oldest first."""
        with self._lock:
            lines = list(self._lines)
        return lines if n is None else lines[-n:]

    def close(self) -> None:
        """Close the file (a later line opens it again). Blocks on the disk."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def _open(self) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("ab")
        self._size = self._file.tell()
        if self._size >= self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        assert self.path is not None
        if self._file is not None:
            self._file.close()
        for i in range(self.backups, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            newer = self.path.with_name(f"{self.path.name}.{i - 1}") if i > 1 else self.path
            if newer.exists():
                newer.replace(older)
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        self._file = self.path.open("ab")
        self._size = 0

    def pump(
        self,
        chunks: Iterable[bytes],
        *,
        first_line: str | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> threading.Thread:
        """Copy ``chunks`` (bytes as they come) into the log, line by line, on a daemon
        thread, until they end; then call ``on_end`` (e.g. to close the stream).
        ``first_line`` is written first (e.g. the command started)."""

        def run() -> None:
            try:
                if first_line is not None:
                    self.write(first_line)
                pending = b""
                for chunk in chunks:
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for raw in lines:
                        self.write(raw.decode("utf-8", "replace"))
                    if len(pending) > 65536:  # a very long line: cut it
                        self.write(pending.decode("utf-8", "replace"))
                        pending = b""
                if pending:
                    self.write(pending.decode("utf-8", "replace"))
            except Exception as exc:  # the stream broke: the process is gone or going
                log.debug("runner log stream ended: %r", exc)
            finally:
                if on_end is not None:
                    on_end()

        thread = threading.Thread(target=run, name=f"runner-log:{self.path}", daemon=True)
        thread.start()
        return thread
