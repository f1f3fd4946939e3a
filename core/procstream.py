"""A child process in its own process group whose output lines arrive on the event loop.

Threads read the pipes (so it works on any asyncio loop, qasync's included) and hand each
line to the loop; a line redrawn in place (ended by a lone ``\\r``, as progress bars do) comes
flagged as transient. Leaving :meth:`StreamedProcess.lines` early (cancelling the task that
reads it) kills the child and everything it started. Used for pip in the runtime setup and
for ``orchard bench`` run from the app.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import signal
import subprocess
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import IO

#: Lines of each stream kept for an error message.
TAIL_LINES = 40


def split_lines(buf: str, emit: Callable[[str, bool], None]) -> str:
    """Emit the complete lines of ``buf`` as ``(text, transient)``: ended by ``\\n`` or
    ``\\r\\n``, or transient, ended by a lone ``\\r`` (a progress bar redrawn in place).
    Returns the incomplete rest."""
    start = i = 0
    n = len(buf)
    while i < n:
        ch = buf[i]
        if ch == "\n":
            emit(buf[start:i], False)
            start = i + 1
        elif ch == "\r":
            if i + 1 == n:
                break  # a \n may follow in the next chunk
            crlf = buf[i + 1] == "\n"
            emit(buf[start:i], not crlf)
            i += crlf
            start = i + 1
        i += 1
    return buf[start:]


def signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send ``sig`` to ``proc``'s process group (POSIX), or end ``proc`` (Windows)."""
    try:
        if os.name == "posix":
            os.killpg(proc.pid, sig)  # its own group: the child and all it started
        elif sig == signal.SIGTERM:
            proc.terminate()
        else:
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass


class StreamedProcess:
    """``cmd`` as a child in its own process group. :meth:`lines` yields
    ``(text, transient, stream)``, ``stream`` being ``"stdout"`` or ``"stderr"`` (always
    ``"stdout"`` with ``merge_stderr``). ``preexec_fn`` runs in the child before it execs
    (e.g. :func:`core.runners.local.die_with_parent_fn`'s)."""

    def __init__(
        self,
        cmd: Sequence[str],
        env: Mapping[str, str],
        *,
        merge_stderr: bool = False,
        preexec_fn: Callable[[], None] | None = None,
        name: str = "child",
    ) -> None:
        self.cmd = list(cmd)
        self.env = dict(env)
        self.merge_stderr = merge_stderr
        self.preexec_fn = preexec_fn
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self.stderr_tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.stdout_tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._kill_timer: asyncio.TimerHandle | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def tail(self) -> list[str]:
        """The last lines it wrote on stderr (on stdout when stderr has none)."""
        return list(self.stderr_tail or self.stdout_tail)

    async def lines(self) -> AsyncIterator[tuple[str, bool, str]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, bool, str] | None] = asyncio.Queue()
        posix = os.name == "posix"
        # Popen on the loop's thread (fork and exec take milliseconds): a parent-death
        # signal set by preexec_fn follows the thread that forked, which lives with the loop.
        self.proc = proc = subprocess.Popen(
            self.cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if self.merge_stderr else subprocess.PIPE,
            env=self.env,
            start_new_session=posix,
            preexec_fn=self.preexec_fn if posix else None,
            creationflags=0 if posix else getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0),
        )

        def put(item: tuple[str, bool, str] | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def pump(pipe: IO[bytes], stream: str) -> None:
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            rest = ""
            try:
                while chunk := pipe.read1(65536):  # type: ignore[attr-defined]
                    rest = split_lines(
                        rest + decoder.decode(chunk), lambda t, cr: put((t, cr, stream))
                    )
                rest += decoder.decode(b"", final=True)
                if rest.strip("\r"):
                    put((rest.strip("\r"), False, stream))
            finally:
                put(None)

        pipes = [(proc.stdout, "stdout"), (proc.stderr, "stderr")]
        threads = [
            threading.Thread(target=pump, args=(pipe, s), name=f"{self.name}-{s}", daemon=True)
            for pipe, s in pipes
            if pipe is not None
        ]
        for t in threads:
            t.start()
        try:
            open_pipes = len(threads)
            while open_pipes:
                item = await queue.get()
                if item is None:
                    open_pipes -= 1
                    continue
                text, transient, stream = item
                if text.strip() and not transient:
                    (self.stderr_tail if stream == "stderr" else self.stdout_tail).append(text)
                yield item
            self.returncode = await asyncio.to_thread(proc.wait)
        finally:
            if proc.poll() is None:
                signal_group(proc, signal.SIGKILL)
                await asyncio.to_thread(proc.wait)
            if self._kill_timer is not None:
                self._kill_timer.cancel()
            for t in threads:
                await asyncio.to_thread(t.join, 5.0)
            for pipe, _ in pipes:
                if pipe is not None:
                    pipe.close()

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            signal_group(self.proc, sig)

    def stop(self, grace_s: float) -> None:
        """SIGTERM now, SIGKILL if it is still there after ``grace_s`` seconds."""
        self.signal(signal.SIGTERM)
        if self._kill_timer is None:
            loop = asyncio.get_running_loop()
            self._kill_timer = loop.call_later(grace_s, self.signal, signal.SIGKILL)
