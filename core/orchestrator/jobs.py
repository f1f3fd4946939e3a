"""Jobs on the node: capacity per model, routing to a runner holding the model, cold loads with
eviction, progress relayed as events, outputs saved, failures retried once.

Pure asyncio; everything blocking (SQLite, files) goes through the store's own thread.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

import httpx

from core import events as ev
from core.errors import BadRequest, OrchardError, OutOfVram, RunnerUnavailable, ServiceUnavailable
from core.orchestrator.payments import NodePayments, fee_text
from core.payments.tickets import BALANCE_HEADER
from core.pipelines import Capability
from core.placement import (
    Admission,
    Footprint,
    GpuBudget,
    ModelDemand,
    PlacementState,
    Resident,
    admit,
)
from core.runners.base import RunnerHandle, RunnerState
from core.runners.client import error_message
from core.store import JobRecord, JobState, JobStore

log = logging.getLogger(__name__)

#: How long a job waits for its crashed runner to come back before failing.
RECOVERY_WAIT_S = 90.0


class InsufficientCapacity(ServiceUnavailable):
    pass


@dataclass
class ModelSlot:
    """One (capability, model) the node offers."""

    capability: Capability
    model_id: str
    warm: bool
    capacity: int
    footprint: Footprint
    gpus: tuple[int, ...] | None = None
    #: optimization flags from aiModels.json, sent with every load of the model
    flags: dict[str, Any] = field(default_factory=dict)
    #: what the runner did with the flags, a line each (from its GET /models)
    optimizations: list[str] = field(default_factory=list)
    in_use: int = 0
    runners: set[str] = field(default_factory=set)  # runner ids holding it now
    last_used: float = 0.0

    @property
    def key(self) -> tuple[str, str]:
        return (self.capability.value, self.model_id)


@dataclass
class Device:
    """A GPU (or the CPU) with the runner that owns it."""

    index: int
    runner: RunnerHandle
    budget: GpuBudget
    jobs: int = 0


@dataclass(frozen=True)
class JobRequest:
    capability: Capability
    model_id: str
    params: dict[str, Any]  # what the client sent, image bytes aside
    pixels: int
    json: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    payment_header: str | None = None


@dataclass(frozen=True)
class JobResult:
    job_id: str
    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


class JobManager:
    """Admits, routes and runs jobs on the node's runners."""

    def __init__(
        self,
        slots: list[ModelSlot],
        devices: dict[int, Device],
        dedicated: dict[tuple[str, str], RunnerHandle],
        store: JobStore,
        bus: ev.EventBus,
        payments: NodePayments | None = None,
    ) -> None:
        self.slots = {s.key: s for s in slots}
        self.devices = devices
        self.dedicated = dedicated  # one runner per model: external URLs, containers
        self.store = store
        self.bus = bus
        self.payments = payments
        self._load_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.finished = 0
        self.failed = 0
        self.latency_sum = 0.0

    # ------------------------------------------------------------------ lookup
    def slot(self, cap: Capability, model_id: str) -> ModelSlot:
        if model_id:
            found = self.slots.get((cap.value, model_id))
            if found is None:
                offered = ", ".join(m for c, m in self.slots if c == cap.value) or "none"
                raise BadRequest(
                    f"model {model_id!r} is not offered for {cap.value} by this node "
                    f"(offered: {offered})"
                )
            return found
        mine = [s for (c, _), s in self.slots.items() if c == cap.value]
        if len(mine) == 1:
            return mine[0]
        if not mine:
            raise BadRequest(f"this node offers no {cap.value} model")
        raise BadRequest(
            f"this node offers several {cap.value} models "
            f"({', '.join(s.model_id for s in mine)}); set model_id"
        )

    def placement_state(self) -> PlacementState:
        """Budgets are free memory now (NVML, sampled each second), so loaded models are
        already outside them; CPU runners have no such reading, so their residents are
        subtracted from their share of RAM here."""
        residents = []
        used: dict[int, int] = {}
        for slot in self.slots.values():
            for rid in slot.runners:
                dev = self._device_of(rid)
                if dev is not None:
                    residents.append(Resident(dev.index, slot.footprint, slot.warm, slot.last_used))
                    used[dev.index] = used.get(dev.index, 0) + slot.footprint.need
        budgets = tuple(
            replace(d.budget, free=d.budget.total - used.get(d.index, 0))
            if d.index < 0
            else d.budget
            for d in self.devices.values()
        )
        return PlacementState(budgets, tuple(residents))

    def _device_of(self, runner_id: str) -> Device | None:
        return next((d for d in self.devices.values() if d.runner.runner_id == runner_id), None)

    # ------------------------------------------------------------------ running
    async def run(self, req: JobRequest) -> JobResult:
        slot = self.slot(req.capability, req.model_id)
        if slot.in_use >= slot.capacity:
            raise InsufficientCapacity(
                f"insufficient capacity: {slot.model_id} ({slot.capability.value}) is running "
                f"{slot.in_use} of {slot.capacity} jobs; retry shortly or raise its capacity"
            )
        slot.in_use += 1
        job_id = uuid.uuid4().hex
        created = time.time()
        record = JobRecord(
            job_id=job_id,
            capability=slot.capability.value,
            model_id=slot.model_id,
            state=JobState.QUEUED,
            created_at=created,
            started_at=None,
            finished_at=None,
            runner_id=None,
            gpu=None,
            request=req.params,
            status=None,
            error=None,
            outputs=(),
            pixels=req.pixels,
            fee="0",
            sender=None,
        )
        await self.store.add_job(record)
        self.bus.emit(ev.JobQueued(job_id, slot.capability.value, slot.model_id, slot.in_use))
        charged = False
        fee, receipt = Fraction(0), None
        try:
            if self.payments is not None:
                fee, receipt = await self.payments.charge(
                    req.payment_header, slot.capability, slot.model_id, req.pixels, job_id
                )
                charged = receipt is not None
            result = await self._run(job_id, slot, req, created, fee_text(fee))
            if receipt is not None:
                balance = receipt.balance
                result.headers[BALANCE_HEADER] = f"{balance.numerator}/{balance.denominator}"
            return result
        except OrchardError as exc:
            await self._fail(job_id, exc.status, exc.msg, charged)
            if charged and self.payments is not None and receipt is not None:
                # the fee was refunded: tell the gateway what it holds here now
                balance = await self.payments.balance(receipt.sender)
                exc.headers = {BALANCE_HEADER: f"{balance.numerator}/{balance.denominator}"}
            raise
        except Exception as exc:
            log.exception("job %s failed", job_id)
            await self._fail(job_id, 500, f"internal error: {exc}", charged)
            raise
        finally:
            slot.in_use -= 1
            slot.last_used = time.time()

    async def _fail(self, job_id: str, status: int, reason: str, refund: bool = False) -> None:
        self.failed += 1
        if refund and self.payments is not None:
            await self.payments.refund(job_id)  # the sender pays only for jobs it got
        await self.store.update_job(
            job_id, state=JobState.FAILED, status=status, error=reason, finished_at=time.time()
        )
        self.bus.emit(ev.JobFailed(job_id, status, reason))

    async def _run(
        self, job_id: str, slot: ModelSlot, req: JobRequest, created: float, fee: str
    ) -> JobResult:
        retried_oom = retried_crash = False
        while True:
            runner, gpu = await self._runner_for(slot)
            await self.store.update_job(
                job_id,
                state=JobState.RUNNING,
                runner_id=runner.runner_id,
                gpu=gpu,
                started_at=time.time(),
            )
            self.bus.emit(ev.JobAssigned(job_id, runner.runner_id, gpu))
            self.bus.emit(ev.JobStarted(job_id))
            dev = self.devices.get(gpu) if gpu is not None else None
            if dev is not None:
                dev.jobs += 1
            # progress is relayed only to someone listening (the app, an event stream); a
            # headless node spares the second connection and its events
            follower = (
                asyncio.create_task(self._relay_progress(job_id, runner))
                if self.bus.wants(ev.JobProgress)
                else None
            )
            try:
                resp = await runner.client.generate(
                    slot.capability.value,
                    json=req.json,
                    data=req.data,
                    files=req.files,
                    request_id=job_id,
                )
            except RunnerUnavailable as exc:
                if retried_crash:
                    raise RunnerUnavailable(
                        f"the runner {runner.runner_id} stopped while running this job, "
                        f"twice; the job was not completed ({exc.msg})"
                    ) from exc
                retried_crash = True
                log.warning(
                    "job %s: runner %s failed mid-job; retrying once", job_id, runner.runner_id
                )
                slot.runners.discard(runner.runner_id)
                await self._wait_recovered(runner)
                continue
            finally:
                if dev is not None:
                    dev.jobs -= 1
                await asyncio.sleep(0)
                if follower is not None:
                    follower.cancel()
            if resp.status_code == 500 and "out of memory" in error_message(resp).lower():
                if not retried_oom and await self._evict_idle(runner, slot):
                    retried_oom = True
                    continue
                raise OutOfVram(error_message(resp))
            if resp.status_code != 200:
                raise _passthrough(resp)
            return await self._finish(job_id, req, resp, runner, created, fee)

    async def _finish(
        self,
        job_id: str,
        req: JobRequest,
        resp: httpx.Response,
        runner: RunnerHandle,
        created: float,
        fee: str,
    ) -> JobResult:
        # Parsing the answer (a video's frames are megabytes of base64) stays off the loop,
        # which is the GUI's thread in the desktop app.
        images, frames = await asyncio.to_thread(_decode_media, resp.content)
        items = [(png, "png") for png in images]
        if frames:
            try:
                items = [(await runner.client.video(job_id), "mp4")]
            except OrchardError:
                items = [(png, "png") for png in frames]
        paths = await self.store.save_outputs(job_id, items)
        duration = time.time() - created
        await self.store.update_job(
            job_id,
            state=JobState.DONE,
            status=200,
            finished_at=time.time(),
            outputs=tuple(str(p) for p in paths),
            fee=fee,
        )
        self.finished += 1
        self.latency_sum += duration
        self.bus.emit(
            ev.JobFinished(job_id, tuple(str(p) for p in paths), duration, req.pixels, fee)
        )
        return JobResult(job_id, 200, resp.content, "application/json")

    async def _relay_progress(self, job_id: str, runner: RunnerHandle) -> None:
        try:
            async for event in runner.client.follow(job_id):
                if event.get("event") == "step":
                    self.bus.emit(
                        ev.JobProgress(
                            job_id,
                            int(event["step"]),
                            int(event["steps"]),
                            tuple(event.get("previews") or ()),
                        )
                    )
        except (OrchardError, httpx.HTTPError):
            pass  # progress is best effort; the job's own answer decides its fate

    # ------------------------------------------------------------------ placement
    async def _runner_for(self, slot: ModelSlot) -> tuple[RunnerHandle, int | None]:
        ext = self.dedicated.get(slot.key)
        if ext is not None:
            if ext.status.state != RunnerState.READY:
                raise RunnerUnavailable(
                    f"the runner {ext.runner_id} for {slot.model_id} at {ext.url} is "
                    f"{ext.status.state}: {ext.status.detail}"
                )
            return ext, None
        holders = [
            d
            for d in self.devices.values()
            if d.runner.runner_id in slot.runners and d.runner.status.state == RunnerState.READY
        ]
        if holders:
            best = min(holders, key=lambda d: (d.jobs, -d.budget.budget))
            return best.runner, best.index
        return await self._load_cold(slot)

    async def _load_cold(self, slot: ModelSlot) -> tuple[RunnerHandle, int | None]:
        lock = self._load_locks.setdefault(slot.key, asyncio.Lock())
        async with lock:
            for d in self.devices.values():  # loaded while we waited for the lock
                if d.runner.runner_id in slot.runners:
                    return d.runner, d.index
            busy = {s.key for s in self.slots.values() if s.in_use and s is not slot}
            demand = ModelDemand.from_footprint(slot.footprint, warm=slot.warm, gpus=slot.gpus)
            ready = [d for d in self.devices.values() if d.runner.status.state == RunnerState.READY]
            if not ready:
                raise RunnerUnavailable("no runner is ready on this node; check the runners' logs")
            state = self.placement_state()
            ready_ids = {d.index for d in ready}
            state = PlacementState(
                tuple(b for b in state.gpus if b.index in ready_ids), state.residents
            )
            admission: Admission = admit(state, demand, busy, time.time())
            dev = self.devices[admission.gpu]
            for key in admission.evict:
                victim = self.slots[key]
                self.bus.emit(ev.ModelChanged(dev.runner.runner_id, key[0], key[1], "unloading"))
                await dev.runner.unload(key[0], key[1])
                victim.runners.discard(dev.runner.runner_id)
                self.bus.emit(
                    ev.ModelChanged(
                        dev.runner.runner_id, key[0], key[1], "unloaded", "evicted to make room"
                    )
                )
            rid = dev.runner.runner_id
            self.bus.emit(ev.ModelChanged(rid, slot.key[0], slot.model_id, "loading"))
            try:
                loaded = await dev.runner.load(slot.key[0], slot.model_id, slot.flags or None)
            except OrchardError as exc:
                self.bus.emit(ev.ModelChanged(rid, slot.key[0], slot.model_id, "failed", exc.msg))
                raise
            slot.optimizations = list(loaded.get("optimizations") or [])
            measured = (loaded.get("vram") or {}).get("allocated_after_load")
            if measured:  # the weights measured on the device replace the estimated ones
                slot.footprint = slot.footprint.with_loaded_weights(int(measured))
            slot.runners.add(rid)
            self.bus.emit(ev.ModelChanged(rid, slot.key[0], slot.model_id, "warm"))
            return dev.runner, dev.index

    async def _evict_idle(self, runner: RunnerHandle, keep: ModelSlot) -> bool:
        """Unload idle cold models from ``runner`` after an out-of-memory error."""
        victims = [
            s
            for s in self.slots.values()
            if s is not keep and not s.warm and not s.in_use and runner.runner_id in s.runners
        ]
        for s in victims:
            await runner.unload(s.key[0], s.model_id)
            s.runners.discard(runner.runner_id)
            self.bus.emit(
                ev.ModelChanged(
                    runner.runner_id,
                    s.key[0],
                    s.model_id,
                    "unloaded",
                    "evicted after out of memory",
                )
            )
        return bool(victims)

    async def _wait_recovered(self, runner: RunnerHandle) -> None:
        deadline = time.monotonic() + RECOVERY_WAIT_S
        await asyncio.sleep(0.5)
        while time.monotonic() < deadline:
            st = runner.status.state
            if st == RunnerState.READY:
                for slot in self.slots.values():  # what it re-warmed
                    if slot.key in set(runner.warm_models):
                        slot.runners.add(runner.runner_id)
                return
            if st in (RunnerState.FAILED, RunnerState.STOPPED):
                break
            await asyncio.sleep(0.25)
        raise RunnerUnavailable(
            f"the runner {runner.runner_id} stopped while running this job and did not come "
            f"back ({runner.status.state}: {runner.status.detail})"
        )


class _Passthrough(OrchardError):
    pass


def _passthrough(resp: httpx.Response) -> OrchardError:
    """A runner's 4xx/5xx answer, kept with its status and message."""
    err = _Passthrough(error_message(resp))
    err.status = resp.status_code
    return err


def _data_url_bytes(url: str) -> bytes:
    return base64.b64decode(url.split(",", 1)[1])


def _decode_media(content: bytes) -> tuple[list[bytes], list[bytes]]:
    """(images, first video's frames) of a runner's ImageResponse or VideoResponse. Blocking."""
    import json

    body = json.loads(content)
    images = [_data_url_bytes(m["url"]) for m in body.get("images", [])]
    video = body.get("frames") or [[]]
    return images, [_data_url_bytes(m["url"]) for m in video[0]]
