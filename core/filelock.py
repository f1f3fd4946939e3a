"""An exclusive lock on a file for the life of a process (flock, or msvcrt on Windows).

The OS releases it when the process dies, so a killed node never leaves it held.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO


def acquire_lock(path: Path) -> IO[bytes]:
    """Hold an exclusive lock on ``path``; OSError (BlockingIOError) if another process has
    it. Close the returned file to release it."""
    f = path.open("a+b")
    try:
        if sys.platform == "win32":
            import msvcrt

            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise
    return f
