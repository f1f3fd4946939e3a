"""What every runner handle shares: its state, health polling and the restart policy.

A handle is the orchestrator's view of one runner. Subclasses say only how to launch,
check and end the runner's process (a subprocess, a container, or nothing for a runner at
someone else's URL); :class:`RunnerHandle` polls ``/health`` about once a second, maps the
answer to a :class:`RunnerState`, and restarts a managed runner that crashed, with
exponential backoff, until it gives up into ``failed``.

Health mapping: ``LOADING`` → starting; ``OK`` (or Livepeer's ``IDLE``) → ready; ``ERROR``
→ unhealthy (polling goes on). For a managed runner, the process exiting, or refusing
connections after it was ready, is a crash; for an external one it is only unhealthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, ClassVar

import httpx

from core.errors import ModelNotLoaded, OrchardError, RunnerUnavailable, ServiceUnavailable
from core.runners.client import RunnerClient

log = logging.getLogger(__name__)


class RunnerState(StrEnum):
    STARTING = "starting"  # launched, loading or not answering yet
    READY = "ready"  # /health says OK: takes jobs
    UNHEALTHY = "unhealthy"  # answers, but not OK (or an external runner is unreachable)
    RESTARTING = "restarting"  # crashed; waiting out the backoff before launching again
    STOPPED = "stopped"  # not started, or stopped on purpose
    FAILED = "failed"  # gave up: the detail says what to do


@dataclass(frozen=True)
class RunnerStatus:
    """One runner's state, as shown to the operator. ``pid`` for a local runner,
    ``container_id`` for a Docker one, neither for an external one."""

    runner_id: str
    state: RunnerState
    detail: str = ""
    restarts: int = 0
    pid: int | None = None
    container_id: str | None = None
    url: str = ""


@dataclass(frozen=True)
class RestartPolicy:
    """How a managed runner is watched and restarted."""

    poll_interval_s: float = 1.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    #: A crash after this long healthy starts the count (and the backoff) afresh.
    healthy_reset_s: float = 60.0
    #: Give up into ``failed`` after this many crashes in a row without that much health.
    max_quick_crashes: int = 5
    #: How long a launched runner may refuse connections before that counts as a crash.
    start_timeout_s: float = 600.0
    #: How long ``stop`` waits after SIGTERM before SIGKILL.
    stop_timeout_s: float = 10.0

    def backoff(self, crashes: int) -> float:
        """The wait before relaunching after the ``crashes``-th crash in a row."""
        return float(min(self.backoff_initial_s * 2 ** max(crashes - 1, 0), self.backoff_max_s))


class CannotStart(ServiceUnavailable):
    """Launching cannot work until the operator acts (no Docker engine, no such image):
    the handle goes to ``failed`` at once instead of retrying."""


StateCallback = Callable[[RunnerStatus], None]


class RunnerHandle(ABC):
    """One runner, as the orchestrator manages it. Use it from the event loop thread."""

    #: Whether a crash is ours to restart (a process or container we launched).
    managed: ClassVar[bool] = True
    #: Check every this many polls that the runner accepts our token (external runners).
    verify_token_every: ClassVar[int] = 0

    def __init__(
        self,
        runner_id: str,
        *,
        url: str,
        token: str | None,
        capacity: int = 1,
        device: str = "cpu",
        gpu_index: int | None = None,
        warm: Iterable[tuple[str, str]] = (),
        policy: RestartPolicy | None = None,
    ) -> None:
        self.runner_id = runner_id
        self.token = token
        #: Jobs it accepts at once (``capacity`` in aiModels.json; 0 means 1, as in Livepeer).
        self.capacity = max(1, capacity)
        self.device = device
        self.gpu_index = gpu_index
        self.policy = policy or RestartPolicy()
        self._warm: dict[tuple[str, str], dict[str, Any] | None] = dict.fromkeys(warm)
        self._client = RunnerClient(url, token)
        self._retired: list[RunnerClient] = []
        self._pid: int | None = None
        self._container_id: str | None = None
        self._status = RunnerStatus(runner_id, RunnerState.STOPPED, "not started", url=url)
        self._listeners: list[StateCallback] = []
        self._changed: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ public
    @property
    def url(self) -> str:
        return self._client.base_url

    @property
    def client(self) -> RunnerClient:
        """The client for the current process (replaced when a restart changes the URL)."""
        return self._client

    @property
    def status(self) -> RunnerStatus:
        return self._status

    @property
    def state(self) -> RunnerState:
        return self._status.state

    @property
    def warm_models(self) -> list[tuple[str, str]]:
        """What a restart brings back: the configured warm set plus models loaded since."""
        return list(self._warm)

    def warm_flags(self) -> dict[str, dict[str, Any]]:
        """model_id -> optimization flags of the warm set (models without flags left out)."""
        return {model_id: dict(f) for (_, model_id), f in self._warm.items() if f}

    def set_warm_flags(self, flags: Mapping[str, Mapping[str, Any]]) -> None:
        """Optimization flags for models of the configured warm set (before ``start``)."""
        for key in self._warm:
            if flags.get(key[1]):
                self._warm[key] = dict(flags[key[1]])

    def on_state(self, callback: StateCallback) -> Callable[[], None]:
        """Call ``callback(status)`` on every change; returns a function that unsubscribes."""
        self._listeners.append(callback)

        def unsubscribe() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return unsubscribe

    async def load(
        self, pipeline: str, model_id: str, optimization_flags: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Load a model on the runner and remember it, so a restart re-warms it."""
        result = await self._client.load(pipeline, model_id, optimization_flags)
        self._warm[(pipeline, model_id)] = optimization_flags
        return result

    async def unload(self, pipeline: str, model_id: str) -> None:
        """Unload a model and forget it (a restart will not bring it back)."""
        try:
            await self._client.unload(pipeline, model_id)
        except ModelNotLoaded:
            self._warm.pop((pipeline, model_id), None)
            raise
        self._warm.pop((pipeline, model_id), None)

    async def start(self) -> None:
        """Launch the runner and watch it. Returns at once; follow :meth:`on_state` or
        :meth:`wait_for` for readiness. Starting a started handle does nothing."""
        if self._task is not None and not self._task.done():
            return
        if self._client.is_closed:  # started again after a stop
            self._client = RunnerClient(self._client.base_url, self.token, self._client.timeout)
        self._set(RunnerState.STARTING, "starting", restarts=0)
        self._task = asyncio.create_task(self._supervise(), name=f"runner {self.runner_id}")

    async def stop(self) -> None:
        """Stop watching, end the process or container (reaped: no orphan), and close the
        client; requests still in flight on it fail with ``RunnerUnavailable``."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        try:
            await self._terminate()
        finally:
            for client in [*self._retired, self._client]:
                await client.aclose()
            self._retired.clear()
            self._set(RunnerState.STOPPED, "stopped")

    async def aclose(self) -> None:
        """The same as :meth:`stop`."""
        await self.stop()

    async def wait_for(self, *states: RunnerState, timeout: float) -> RunnerStatus:
        """Wait until the state is one of ``states``; ``TimeoutError`` names the last one."""
        if self._changed is None:
            self._changed = asyncio.Event()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._status.state not in states:
            left = deadline - loop.time()
            if left <= 0:
                s = self._status
                raise TimeoutError(
                    f"runner {self.runner_id} is {s.state} after {timeout:g} s, not "
                    f"{'/'.join(states)}: {s.detail}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return self._status

    # ------------------------------------------------------------ for subclasses
    async def _launch(self) -> None:  # noqa: B027  (external runners launch nothing)
        """Start the process or container. Raise :class:`CannotStart` when retrying is
        pointless; any other exception counts as a crash."""

    async def _terminate(self) -> None:  # noqa: B027
        """End the process or container and reap it. Idempotent; may be interrupted."""

    async def _exit_reason(self) -> str | None:
        """Why the process or container has ended, or ``None`` while it runs."""
        return None

    def _failure_help(self) -> str:
        """What to look at when the runner gave up (e.g. the end of its log)."""
        return ""

    def _set_url(self, url: str) -> None:
        """Point the client at a new address (a relaunch on another port)."""
        if url.rstrip("/") == self._client.base_url:
            return
        self._retired.append(self._client)
        self._client = RunnerClient(url, self.token, self._client.timeout)

    @abstractmethod
    def _describe(self) -> str:
        """A short description for logs, e.g. ``local runner gpu0 (cuda:0)``."""

    # ------------------------------------------------------------ state machine
    def _set(self, state: RunnerState, detail: str, **changes: Any) -> None:
        new = replace(
            self._status,
            state=state,
            detail=detail,
            pid=self._pid,
            container_id=self._container_id,
            url=self.url,
            **changes,
        )
        if new == self._status:
            return
        if new.state != self._status.state:
            level = logging.WARNING if state == RunnerState.FAILED else logging.INFO
            first = detail.splitlines()[0] if detail else ""
            log.log(level, "%s: %s (%s)", self._describe(), state, first)
        self._status = new
        if self._changed is not None:
            self._changed.set()
        for callback in list(self._listeners):
            try:
                callback(new)
            except Exception:
                log.exception("runner state callback %r failed", callback)

    async def _supervise(self) -> None:
        try:
            await self._restart_loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not leave the runner looking alive
            log.exception("%s: supervision failed", self._describe())
            self._set(RunnerState.FAILED, f"internal error while watching the runner: {exc!r}")

    async def _restart_loop(self) -> None:
        policy = self.policy
        crashes = 0
        while True:
            try:
                await self._launch()
            except CannotStart as exc:
                await self._terminate()
                self._set(RunnerState.FAILED, exc.msg)
                return
            except Exception as exc:
                log.warning("%s: launch failed", self._describe(), exc_info=True)
                reason, healthy_for = f"could not start: {exc}", 0.0
            else:
                self._set(RunnerState.STARTING, "started; waiting for it to listen")
                reason, healthy_for = await self._watch()
            crashes = 1 if healthy_for >= policy.healthy_reset_s else crashes + 1
            if crashes >= policy.max_quick_crashes:
                self._set(RunnerState.UNHEALTHY, f"{reason}; giving up")
                await self._terminate()
                self._set(RunnerState.FAILED, self._failed_detail(reason, crashes))
                return
            delay = policy.backoff(crashes)
            self._set(
                RunnerState.RESTARTING,
                f"{reason}; restarting in {delay:g} s "
                f"(crash {crashes} in a row; giving up at {policy.max_quick_crashes})",
            )
            await self._terminate()
            await asyncio.sleep(delay)
            self._set(RunnerState.STARTING, "restarting", restarts=self._status.restarts + 1)

    def _failed_detail(self, reason: str, crashes: int) -> str:
        text = (
            f"the runner crashed {crashes} times in a row, last: {reason}. Orchard stopped "
            "restarting it. Look at its log for the cause (a missing model, a driver or "
            "CUDA error, out of memory), fix it, then start the runner again."
        )
        help_text = self._failure_help()
        return f"{text}\n{help_text}" if help_text else text

    async def _watch(self) -> tuple[str, float]:
        """Poll until a managed runner crashes; returns why, and its longest healthy spell."""
        policy = self.policy
        loop = asyncio.get_running_loop()
        launched = loop.time()
        ready_since: float | None = None
        longest = 0.0
        ever_ready = False
        polls = 0
        last_health = ""
        while True:
            now = loop.time()
            if ready_since is not None:
                longest = max(longest, now - ready_since)
            reason = await self._exit_reason()
            if reason is not None:
                return reason, longest
            try:
                health = await self._client.health()
            except RunnerUnavailable as exc:
                refused = isinstance(exc.__cause__, httpx.ConnectError)
                if self.managed and ever_ready and refused:
                    return f"it stopped answering ({exc.msg})", longest
                if self.managed and not ever_ready:
                    if now - launched > policy.start_timeout_s:
                        return (
                            f"it did not answer within {policy.start_timeout_s:g} s "
                            f"of starting ({exc.msg})",
                            0.0,
                        )
                    self._set(RunnerState.STARTING, "started; waiting for it to listen")
                else:
                    ready_since = None
                    self._set(RunnerState.UNHEALTHY, exc.msg)
                last_health = ""
            except OrchardError as exc:
                ready_since = None
                self._set(
                    RunnerState.UNHEALTHY,
                    f"{self.url}/health answered {exc.status}: {exc.msg}",
                )
                last_health = ""
            else:
                if health in ("OK", "IDLE"):
                    polls += 1
                    problem = None
                    if self.verify_token_every and (
                        self.state != RunnerState.READY or polls % self.verify_token_every == 0
                    ):
                        problem = await self._check_token()
                    if problem is None:
                        ever_ready = True
                        ready_since = now if ready_since is None else ready_since
                        self._set(RunnerState.READY, "ready")
                    else:
                        ready_since = None
                        self._set(RunnerState.UNHEALTHY, problem)
                elif health == "LOADING":
                    self._set(RunnerState.STARTING, "loading models")
                elif health != last_health:  # ERROR: ask once what went wrong
                    ready_since = None
                    self._set(RunnerState.UNHEALTHY, await self._error_detail(health))
                last_health = health
            await asyncio.sleep(policy.poll_interval_s)

    async def _error_detail(self, health: str) -> str:
        text = f"the runner at {self.url} reports {health}"
        try:
            models = await self._client.models(timeout=5.0)
        except OrchardError:
            return text  # Livepeer's ai-runner has no /models: its log says more
        errors = models.get("warm_errors") or []
        return f"{text}: {'; '.join(map(str, errors))}" if errors else text

    async def _check_token(self) -> str | None:
        """``None`` when the runner takes our token (or cannot tell us), else the problem."""
        try:
            await self._client.models(timeout=5.0)
        except RunnerUnavailable as exc:
            return exc.msg
        except OrchardError as exc:
            if exc.status == 401:
                given = "a token" if self.token else "no token"
                return (
                    f'the runner at {self.url} refused {given} ({exc.msg}): set "token" '
                    "in aiModels.json to the runner's token"
                )
        return None  # 404: Livepeer's ai-runner has no /models; it checks tokens per job
