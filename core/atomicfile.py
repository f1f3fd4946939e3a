"""Writing a file so that it holds either its old or its new content, never a mix.

Write the new content to a temporary file beside the target and fsync it (:func:`write_temp`),
``os.replace`` it over the target, then fsync the directory (:func:`fsync_dir`) so that the
rename itself survives a power cut. Used by the configuration and the calibration file.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def write_temp(beside: Path, data: bytes) -> Path:
    """``data`` in a new, fsynced temporary file in ``beside``'s directory; its path."""
    fd, name = tempfile.mkstemp(prefix=f".{beside.name}.", suffix=".tmp", dir=beside.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; Windows has no directory handles)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:  # the new file is in place; only its durability is in doubt
        log.warning("could not fsync %s after saving: %s", directory, exc)
