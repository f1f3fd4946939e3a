"""Local runners: ``orchard runner`` as a subprocess of the node, one per device.

No runner outlives the node:

- The child starts in its own session and process group, so :meth:`LocalRunner.stop`
  (SIGTERM, a grace period, then SIGKILL) ends it together with anything it started.
- On Linux the child asks the kernel, before ``exec``, for ``SIGTERM`` when its parent dies
  (``prctl(PR_SET_PDEATHSIG, SIGTERM)``, through ctypes in ``preexec_fn``). That holds even
  when the node is killed with ``kill -9`` and has no chance to clean up. The kernel tracks
  the *thread* that forked, not the process, so runners are launched from the event loop's
  thread, never from a worker thread that may exit before the node does.
- Elsewhere (macOS, Windows) there is no such signal: a node killed hard leaves its runners
  to be stopped by hand. A clean stop or shutdown ends them everywhere.

The bearer token is random per runner and reaches the child through its environment
(``ORCHARD_RUNNER_TOKEN``), not its command line, which other local users can read.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path

import core
from core.procstream import signal_group
from core.runners.base import CannotStart, RestartPolicy, RunnerHandle
from core.runners.logsink import LogSink

#: Linux ``prctl`` option that sets the signal sent to a process when its parent dies.
PR_SET_PDEATHSIG = 1
#: The source checkout holding ``app`` and ``core``, if Orchard runs from one (not from an
#: installed package): added to the child's ``PYTHONPATH`` so ``python -m app`` finds them.
SOURCE_ROOT = Path(core.__file__).resolve().parent.parent

_PRCTL: Callable[..., int] | None = None
if sys.platform.startswith("linux"):
    try:
        _PRCTL = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).prctl
    except (OSError, AttributeError):  # no prctl: runners only die with a clean stop
        _PRCTL = None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``port`` now (a port in TIME_WAIT after the last
    runner died counts as free, as servers such as uvicorn set SO_REUSEADDR)."""
    with socket.socket() as s:
        if os.name == "posix":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def die_with_parent_fn() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive SIGTERM when this thread exits."""
    prctl = _PRCTL
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def describe_exit(returncode: int) -> str:
    """``exit code 3`` or ``signal SIGKILL``, with a hint for the usual suspects."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    hint = " (killed: out of memory, or by someone)" if returncode == -signal.SIGKILL else ""
    return f"signal {name}{hint}"


class LocalRunner(RunnerHandle):
    """``python -m app runner`` on ``device`` ("cpu" or "cuda:N"), on a loopback port."""

    def __init__(
        self,
        runner_id: str,
        device: str,
        models_dir: Path,
        warm: Iterable[tuple[str, str]] = (),
        port: int | None = None,
        python: str = sys.executable,
        extra_args: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        *,
        capacity: int = 1,
        policy: RestartPolicy | None = None,
    ) -> None:
        gpu_index: int | None = None
        if device.startswith("cuda:") and device[5:].isdigit():
            gpu_index = int(device[5:])
        elif device != "cpu":
            raise ValueError(f"device must be cpu or cuda:N, got {device!r}")
        self._port_auto = port is None
        self.port = free_port() if port is None else port
        super().__init__(
            runner_id,
            url=f"http://127.0.0.1:{self.port}",
            token=secrets.token_urlsafe(32),
            capacity=capacity,
            device=device,
            gpu_index=gpu_index,
            warm=warm,
            policy=policy or RestartPolicy(start_timeout_s=180.0),
        )
        self.models_dir = Path(models_dir)
        self.python = python
        self.extra_args = tuple(extra_args)
        self.env = dict(env or {})
        self.log = LogSink(log_path)
        self._proc: subprocess.Popen[bytes] | None = None
        self._pump: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self._pid

    def log_tail(self, n: int | None = None) -> list[str]:
        """The runner's last output lines (500 kept), oldest first."""
        return self.log.tail(n)

    def command(self) -> list[str]:
        """The command line that launches the runner (without the token)."""
        child_device = "cpu" if self.gpu_index is None else "cuda:0"
        cmd = [self.python, "-m", "app", "runner", "--device", child_device]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--models-dir", str(self.models_dir)]
        for pipeline, model_id in self.warm_models:
            cmd += ["--warm", f"{pipeline}:{model_id}"]
        for model_id, flags in self.warm_flags().items():
            cmd += ["--flags", f"{model_id}:{json.dumps(flags, separators=(',', ':'))}"]
        return [*cmd, *self.extra_args]

    def child_env(self) -> dict[str, str]:
        from core.runtime import clean_env, frozen

        # a frozen app's library path must not leak into the runtime's Python
        base = clean_env() if frozen() else os.environ
        env = {**base, **self.env, "PYTHONUNBUFFERED": "1"}
        env["ORCHARD_RUNNER_TOKEN"] = self.token or ""
        if (SOURCE_ROOT / "pyproject.toml").is_file():  # never a whole site-packages
            path = env.get("PYTHONPATH")
            env["PYTHONPATH"] = f"{SOURCE_ROOT}{os.pathsep}{path}" if path else str(SOURCE_ROOT)
        if self.gpu_index is not None:
            # The child sees only its GPU, as cuda:0; PCI order matches nvidia-smi's numbers.
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpu_index)
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        return env

    def _describe(self) -> str:
        return f"local runner {self.runner_id} ({self.device})"

    # ------------------------------------------------------------ process
    async def _launch(self) -> None:
        if self._port_auto and not port_is_free(self.port):
            self.port = free_port()
            self._set_url(f"http://127.0.0.1:{self.port}")
        cmd = self.command()
        # Popen runs here, on the loop thread (fork and exec take milliseconds): see the
        # module docstring for why PDEATHSIG needs a long-lived thread.
        try:
            if os.name == "posix":
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=self.child_env(),
                    start_new_session=True,
                    preexec_fn=die_with_parent_fn(),
                )
            else:
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=self.child_env(),
                    creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0),
                )
        except OSError as exc:
            raise CannotStart(
                f"cannot run the runner with {self.python!r}: {exc}; check the Python "
                "interpreter Orchard was installed with"
            ) from exc
        self._proc = proc
        self._pid = proc.pid
        out = proc.stdout
        assert isinstance(out, io.BufferedReader)
        self._pump = self.log.pump(
            iter(partial(out.read1, 65536), b""),
            first_line=f"--- orchard: started (pid {proc.pid}): {' '.join(cmd)}",
            on_end=out.close,
        )

    def _returncode(self) -> int | None:
        """The exit status if the process has ended, without reaping it, so that its
        process group id stays reserved until :meth:`_terminate` has swept the group."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return None if proc is None else proc.returncode
        if hasattr(os, "waitid"):
            try:
                res = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return proc.poll()
            if res is None:
                return None
            killed = res.si_code in (os.CLD_KILLED, os.CLD_DUMPED)
            return -res.si_status if killed else res.si_status
        return proc.poll()

    async def _exit_reason(self) -> str | None:
        code = self._returncode()
        if code is None:
            return None
        return f"the runner process {self._pid} ended with {describe_exit(code)}"

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is not None:
            signal_group(self._proc, sig)  # its own group: the runner and all it started

    async def _terminate(self) -> None:
        proc = self._proc
        if proc is None:
            return
        loop = asyncio.get_running_loop()
        if self._returncode() is None:
            self._signal(signal.SIGTERM)
            deadline = loop.time() + self.policy.stop_timeout_s
            while self._returncode() is None and loop.time() < deadline:
                await asyncio.sleep(0.05)
        if self._returncode() is None or os.name == "posix":
            # SIGKILL what is left: a runner that ignored SIGTERM, or children it left in its
            # group (the leader is not reaped yet, so the group id cannot have been reused).
            kill = getattr(signal, "SIGKILL", signal.SIGTERM)
            self._signal(kill)
            deadline = loop.time() + 5.0
            while self._returncode() is None and loop.time() < deadline:
                await asyncio.sleep(0.02)
        proc.poll()  # reap
        if proc.returncode is None:  # unkillable (a process stuck in the kernel)
            raise RuntimeError(f"runner process {proc.pid} did not die after SIGKILL")
        ended = f"--- orchard: process {proc.pid} ended with {describe_exit(proc.returncode)}"
        await asyncio.to_thread(self.log.write, ended)
        self._proc = None
        self._pid = None

    async def stop(self) -> None:
        try:
            await super().stop()
        finally:
            await asyncio.to_thread(self._close_log)

    def _close_log(self) -> None:
        if self._pump is not None:
            self._pump.join(5.0)  # the pipe has closed: every process of the group is gone
            self._pump = None
        self.log.close()

    def _failure_help(self) -> str:
        where = f"Its log: {self.log.path}. " if self.log.path else ""
        tail = "\n".join(self.log_tail(20))
        return f"{where}Last lines:\n{tail}" if tail else where.strip()
