"""The node: devices, runners, the placement of warm models, jobs, and the HTTP service.

Run in-process by the desktop app (on the qasync loop) and headless by ``orchard node``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

import core
from core import events as ev
from core import gpus as gpu_mod
from core import modelstore
from core.config import Backend, ModelEntry, ModelsConfig
from core.errors import BadRequest, OrchardError, RunnerUnavailable
from core.orchestrator.jobs import Device, JobManager, ModelSlot
from core.orchestrator.payments import NodePayments
from core.pipelines import LIVEPEER_CAPABILITY_IDS, Capability
from core.pipelines.common import Limits
from core.placement import (
    NATIVE_SIZE,
    TYPICAL_WEIGHTS,
    CalibrationStore,
    Footprint,
    GpuBudget,
    ModelDemand,
    VramEstimate,
    describe,
    detect_arch,
    estimate_vram,
    footprint_bytes,
    gib,
    plan,
    weights_bytes,
)
from core.runners.base import RunnerHandle, RunnerState
from core.runners.external import ExternalRunner
from core.runners.local import LocalRunner
from core.store import JobStore

log = logging.getLogger(__name__)

#: Livepeer's default orchestrator port.
DEFAULT_PORT = 8935


class NodeError(BadRequest):
    """The node cannot start as configured; the message says what to change."""


@dataclass
class NodeSettings:
    config: ModelsConfig
    data_dir: Path
    models_dir: Path
    gpus: str = "all"  # "all", "cpu", "cpu:N" (N CPU runners, for tests and demos), "0,1"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    reserve: dict[int, int] = field(default_factory=dict)  # bytes kept free per GPU
    limits: Limits = field(default_factory=Limits)
    runner_python: str = sys.executable
    ready_timeout_s: float = 180.0
    docker_image: str = "livepeer/ai-runner:latest"
    free: bool = False  # free mode for local testing: no payment asked


def parse_gpus(spec: str, inventory: gpu_mod.GpuInventory) -> list[int]:
    """Device indices for ``spec``; CPU runners are -1, -2, ..."""
    spec = spec.strip().lower()
    if spec.startswith("cpu"):
        count = int(spec.partition(":")[2] or 1)
        return [-(i + 1) for i in range(count)]
    available = [g.index for g in inventory.gpus]
    if spec == "all":
        return available or [-1]
    try:
        wanted = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise NodeError(f"--gpus must be all, cpu or indices like 0,1 (got {spec!r})") from None
    missing = [i for i in wanted if i not in available]
    if missing:
        have = ", ".join(map(str, available)) or (inventory.error or "none")
        raise NodeError(f"GPU {missing[0]} does not exist on this machine (GPUs: {have})")
    return wanted


def estimate_footprint(
    models_dir: Path,
    cap: Capability,
    model_id: str,
    *,
    calibration: CalibrationStore | None = None,
    device_name: str | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Footprint:
    """Weights from the files, activations calibrated per family at its native size. Blocking.

    A model far smaller than its family's full size (the tiny test models) gets activations
    scaled by its share of the family's weights. When ``calibration`` holds a usable
    ``orchard bench`` measurement of the model (preferring one taken on ``device_name``, then
    one with the model's optimisation ``flags``: None for no preference, ``{}`` for the plain
    path), that measurement carried to the native size replaces the estimate as
    ``measured_bytes``.
    """
    path = modelstore.resolve(models_dir, model_id)
    index = modelstore.read_model_index(path)
    unet_cfg = None
    with contextlib.suppress(OSError, ValueError):
        unet_cfg = json.loads((path / "unet" / "config.json").read_text())
    arch = detect_arch(index, unet_cfg, model_id=model_id)
    weights = weights_bytes(path, 2)
    width, height, frames = NATIVE_SIZE[arch]
    est = estimate_vram(arch, weights, width, height, frames)
    typical = TYPICAL_WEIGHTS.get(arch) or weights or 1
    scale = min(1.0, weights / typical)
    activations = int(est.activations * scale)
    key = (cap.value, model_id)
    estimate = VramEstimate(weights, activations, weights + activations)
    m = None
    if calibration is not None:
        m = calibration.lookup(*key, device_name=device_name, flags=flags)
    if m is None:
        return Footprint(key, estimate)
    default_frames = (unet_cfg or {}).get("num_frames")
    measured = footprint_bytes(
        m,
        width,
        height,
        frames,
        default_frames=default_frames if isinstance(default_frames, int) else frames,
    )
    size = f"{width}x{height}" + (f"x{frames}" if frames > 1 else "")
    taken = f"{m.width}x{m.height}" + (f"x{m.frames}" if m.frames and m.frames > 1 else "")
    carried = "" if taken == size else f", so {gib(measured)} at its native {size}"
    log.info(
        "placement: %s uses the orchard bench measurement of %s on %s: %s at %s%s "
        "(the estimate was %s)",
        describe(key),
        m.date or "an unknown date",
        m.device_name,
        gib(m.nvml_delta or 0),
        taken,
        carried,
        gib(estimate.total),
    )
    return Footprint(key, estimate, measured)


def _one_gpu_name(budgets: Sequence[GpuBudget]) -> str | None:
    """The GPUs' name when every GPU of the node has the same one (a bench measurement taken
    on that model of card is preferred); None with no GPU or mixed cards."""
    names = {b.name for b in budgets if b.index >= 0}
    return names.pop() if len(names) == 1 else None


class Node:
    """An orchestrator with its runners. ``await start()``, ``await stop()``."""

    def __init__(self, settings: NodeSettings, bus: ev.EventBus | None = None) -> None:
        self.settings = settings
        self.bus = bus or ev.EventBus()
        self.store = JobStore(settings.data_dir)
        self.inventory: gpu_mod.GpuInventory | None = None
        self.devices: dict[int, Device] = {}
        # runners that serve one model each: external URLs and Docker containers
        self.dedicated: dict[tuple[str, str], RunnerHandle] = {}
        self.node_id = (
            "orchard-" + hashlib.sha256(str(settings.data_dir.resolve()).encode()).hexdigest()[:12]
        )
        self.slots: list[ModelSlot] = []
        self.jobs: JobManager | None = None
        self.state = "stopped"
        self.url = f"http://{settings.host}:{settings.port}"
        self._server: uvicorn.Server | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self.started_at: float | None = None
        self.telemetry: gpu_mod.TelemetrySampler | None = None
        self.payments = NodePayments(settings.config, settings.data_dir, settings.free)

    # ------------------------------------------------------------------ lifecycle
    def _set_state(self, state: str, detail: str = "") -> None:
        self.state = state
        self.bus.emit(ev.NodeChanged(state, detail))

    async def start(self) -> None:
        self._set_state("starting")
        try:
            await self._start()
        except BaseException as exc:
            await self._teardown()
            msg = exc.msg if isinstance(exc, OrchardError) else str(exc)
            self._set_state("failed", msg)
            raise
        self.started_at = time.time()
        self._set_state("running", self.url)

    async def _start(self) -> None:
        s = self.settings
        await self.store.open()
        self.inventory = await asyncio.to_thread(gpu_mod.probe)
        indices = parse_gpus(s.gpus, self.inventory)
        budgets = await asyncio.to_thread(self._budgets, indices)
        entries = [e for e in s.config.entries if e.supported and not e.gateway_key]
        for w in s.config.warnings:
            log.warning("%s", w)
        offered = [(e.capability, e.model_id) for e in entries if e.capability is not None]
        self.payments.check_prices(offered)  # before anything loads
        await self.payments.open(offered)
        placed = [e for e in entries if e.effective_backend in (Backend.LOCAL, Backend.DOCKER)]
        docker_keys = {e.key for e in entries if e.effective_backend == Backend.DOCKER}
        self.slots = await asyncio.to_thread(self._make_slots, placed, budgets)
        # ai-runner containers load their one model at start: they are warm by nature.
        warm = [sl for sl in self.slots if sl.warm or sl.key in docker_keys]
        result = plan(
            budgets,
            [ModelDemand.from_footprint(sl.footprint, warm=True, gpus=sl.gpus) for sl in warm],
        )
        for w in result.warnings:
            log.warning("placement: %s", w)
        per_device: dict[int, list[tuple[str, str]]] = {i: [] for i in indices}
        for sl in warm:
            if sl.key not in docker_keys:
                for gpu in result.assignments.get(sl.key, ()):
                    per_device[gpu].append(sl.key)
        for idx, budget in zip(indices, budgets, strict=True):
            runner = LocalRunner(
                f"runner-{'cpu' if idx < 0 else 'gpu'}{abs(idx) - 1 if idx < 0 else idx}",
                device="cpu" if idx < 0 else f"cuda:{idx}",
                models_dir=s.models_dir,
                warm=per_device[idx],
                python=s.runner_python,
                log_path=s.data_dir / "logs" / f"runner-{idx}.log",
            )
            runner.set_warm_flags({sl.model_id: sl.flags for sl in warm if sl.flags})
            runner.on_state(self._on_runner_state)
            self.devices[idx] = Device(idx, runner, budget)
        by_key = {e.key: e for e in entries}
        if docker_keys:
            from core.runners.docker import DockerRunner, cleanup_leftovers

            removed = await cleanup_leftovers(self.node_id)
            if removed:
                log.info("removed leftover containers of this node: %s", ", ".join(removed))
            for n, sl in enumerate(sl for sl in self.slots if sl.key in docker_keys):
                e = by_key[sl.key]
                placed_on: tuple[int | None, ...] = result.assignments.get(sl.key) or (None,)
                on = placed_on[0]
                cmd = e.extra.get("command")
                docker_runner = DockerRunner(
                    f"docker-{n}",
                    self.node_id,
                    s.models_dir,
                    warm=[sl.key],
                    gpu_index=on if on is not None and on >= 0 else None,
                    image=str(e.extra.get("image") or s.docker_image),
                    command=[str(c) for c in cmd] if isinstance(cmd, list) else None,
                    capacity=sl.capacity,
                    log_path=s.data_dir / "logs" / f"docker-{n}.log",
                )
                docker_runner.set_warm_flags({sl.model_id: sl.flags} if sl.flags else {})
                docker_runner.on_state(self._on_runner_state)
                self.dedicated[sl.key] = docker_runner
        for e in entries:
            if e.effective_backend == Backend.EXTERNAL and e.capability is not None:
                ext = ExternalRunner(
                    f"external-{len(self.dedicated)}", e.url or "", e.token, e.effective_capacity
                )
                ext.on_state(self._on_runner_state)
                self.dedicated[e.key] = ext
                self.slots.append(
                    ModelSlot(
                        e.capability,
                        e.model_id,
                        e.warm,
                        e.effective_capacity,
                        Footprint(e.key, measured_bytes=0),
                    )
                )
        handles: list[RunnerHandle] = [d.runner for d in self.devices.values()]
        handles += list(self.dedicated.values())
        await asyncio.gather(*(h.start() for h in handles))
        managed = [d.runner for d in self.devices.values()]
        managed += [h for k, h in self.dedicated.items() if k in docker_keys]
        await self._wait_ready(managed)
        for d in self.devices.values():
            for key in per_device[d.index]:
                next(sl for sl in self.slots if sl.key == key).runners.add(d.runner.runner_id)
        for key, handle in self.dedicated.items():
            next(sl for sl in self.slots if sl.key == key).runners.add(handle.runner_id)
        await self._measure()
        self.jobs = JobManager(
            self.slots, self.devices, self.dedicated, self.store, self.bus, self.payments
        )
        gpus = [i for i in indices if i >= 0]
        self.telemetry = gpu_mod.TelemetrySampler(indices=gpus or None)
        self.telemetry.subscribe(self._on_samples)
        self.telemetry.start()
        await self._serve()

    def _budgets(self, indices: list[int]) -> list[GpuBudget]:
        s = self.settings
        out = []
        cpu_count = sum(1 for i in indices if i < 0)
        for idx in indices:
            if idx < 0:
                cpu = gpu_mod.cpu_device()
                share = cpu.memory_total // max(cpu_count, 1)
                # a "cpu" reserve (index -1) applies to each CPU runner
                reserve = s.reserve.get(idx, s.reserve.get(-1, 0))
                out.append(GpuBudget(idx, f"CPU ({cpu.name})", share, share, reserve))
            else:
                with gpu_mod.Nvml() as nvml:
                    info, sample = nvml.info(idx), nvml.sample(idx)
                out.append(
                    GpuBudget(
                        idx, info.name, info.memory_total, sample.memory_free, s.reserve.get(idx, 0)
                    )
                )
        return out

    def _make_slots(
        self, entries: list[ModelEntry], budgets: Sequence[GpuBudget] = ()
    ) -> list[ModelSlot]:
        """Each entry's footprint: the estimate, or on a node with GPUs an ``orchard bench``
        measurement from the data directory's calibration file when it holds one (preferring
        one taken on the node's model of card). Blocking: reads the model files and the file."""
        gpus = [b for b in budgets if b.index >= 0]
        calibration = CalibrationStore.in_dir(self.settings.data_dir) if gpus else None
        device_name = _one_gpu_name(gpus)
        slots = []
        for e in entries:
            cap = e.capability
            assert cap is not None
            try:
                fp = estimate_footprint(
                    self.settings.models_dir,
                    cap,
                    e.model_id,
                    calibration=calibration,
                    device_name=device_name,
                    flags=e.orchard_flags,
                )
            except OrchardError as exc:
                if e.warm:
                    raise NodeError(f"warm model {e.model_id} ({e.pipeline}): {exc.msg}") from None
                log.warning(
                    "cold model %s (%s) is not offered: %s", e.model_id, e.pipeline, exc.msg
                )
                continue
            slots.append(
                ModelSlot(
                    cap,
                    e.model_id,
                    e.warm,
                    e.effective_capacity,
                    fp,
                    e.gpus,
                    flags=e.orchard_flags,
                )
            )
        return slots

    async def _wait_ready(self, runners: list[RunnerHandle]) -> None:
        deadline = time.monotonic() + self.settings.ready_timeout_s
        while time.monotonic() < deadline:
            states = [r.status for r in runners]
            failed = [st for st in states if st.state in (RunnerState.FAILED, RunnerState.STOPPED)]
            if failed:
                raise RunnerUnavailable(
                    f"runner {failed[0].runner_id} failed to start: {failed[0].detail}"
                )
            if all(st.state == RunnerState.READY for st in states):
                return
            await asyncio.sleep(0.2)
        slow = [r.runner_id for r in runners if r.status.state != RunnerState.READY]
        raise RunnerUnavailable(f"runners {', '.join(slow)} were not ready in time")

    async def _measure(self) -> None:
        """Replace estimates by what the runners measured after loading (CUDA only)."""
        for d in self.devices.values():
            try:
                listing = await d.runner.client.models()
            except OrchardError:
                continue
            for m in listing.get("models", []):
                allocated = (m.get("vram") or {}).get("allocated_after_load")
                for sl in self.slots:
                    if sl.key == (m["pipeline"], m["model_id"]):
                        sl.optimizations = list(m.get("optimizations") or [])
                        if allocated:
                            sl.footprint = sl.footprint.with_loaded_weights(int(allocated))

    async def _serve(self) -> None:
        from core.orchestrator.service import create_app

        config = uvicorn.Config(
            create_app(self),
            host=self.settings.host,
            port=self.settings.port,
            log_level="warning",
            lifespan="off",
            access_log=False,
        )
        server = _Server(config)
        self._server = server
        self._serve_task = asyncio.create_task(server.serve())
        while not server.started:
            if self._serve_task.done():
                exc = self._serve_task.exception()
                raise NodeError(f"could not serve on {self.url}: {exc or 'address in use?'}")
            await asyncio.sleep(0.05)
        sock = server.servers[0].sockets[0].getsockname() if server.servers else None
        if sock:
            self.url = f"http://{self.settings.host}:{sock[1]}"

    async def stop(self) -> None:
        if self.state in ("stopped", "stopping"):
            return
        self._set_state("stopping")
        await self._teardown()
        self._set_state("stopped")

    def _on_samples(self, samples: tuple[gpu_mod.GpuSample, ...]) -> None:
        """Keep each GPU's free memory current for the placement of cold models."""
        from dataclasses import replace

        for sample in samples:
            dev = self.devices.get(sample.index)
            if dev is not None and sample.index >= 0:
                dev.budget = replace(dev.budget, free=sample.memory_free)

    async def _teardown(self) -> None:
        if self.telemetry is not None:
            await self.telemetry.stop()
            self.telemetry = None
        if self._server is not None:
            self._server.should_exit = True
            if self._serve_task is not None:
                with contextlib.suppress(Exception):
                    await self._serve_task
            self._server = None
        handles: list[RunnerHandle] = [d.runner for d in self.devices.values()]
        handles += list(self.dedicated.values())
        await asyncio.gather(*(h.stop() for h in handles), return_exceptions=True)
        await self.payments.close()
        await self.store.close()

    def _on_runner_state(self, status: Any) -> None:
        self.bus.emit(ev.RunnerChanged(status.runner_id, str(status.state), status.detail))

    # ------------------------------------------------------------------ reports
    def health(self) -> str:
        return "OK" if self.state == "running" else self.state.upper()

    def info(self, sender: str | None = None) -> dict[str, Any]:
        """Capabilities, per-model constraints, prices and hardware, close to Livepeer's
        ``OrchestratorInfo`` (capabilities, constraints per capability, capability prices)."""
        per_cap: dict[str, dict[str, Any]] = {}
        prices = []
        for sl in self.slots:
            cid = str(LIVEPEER_CAPABILITY_IDS[sl.capability])
            models = per_cap.setdefault(cid, {"name": sl.capability.value, "models": {}})["models"]
            models[sl.model_id] = {
                "warm": sl.warm,
                "capacity": sl.capacity,
                "capacity_in_use": sl.in_use,
                "runner_version": core.__version__,
                "loaded": bool(sl.runners),
                "gpus": sorted(
                    d.index for d in self.devices.values() if d.runner.runner_id in sl.runners
                ),
                "optimization_flags": sl.flags,
                "optimizations": sl.optimizations,
            }
            price = self.payments.price(sl.capability, sl.model_id, sender)
            if self.settings.free:  # free mode is explicit, and advertised as price 0
                prices.append(
                    {
                        "capability": int(cid),
                        "constraint": sl.model_id,
                        "price_per_unit": "0",
                        "pixels_per_unit": 1,
                        "currency": "WEI",
                    }
                )
            elif price is not None:
                prices.append(
                    {
                        "capability": int(cid),
                        "constraint": sl.model_id,
                        "price_per_unit": str(price.price_per_unit),
                        "pixels_per_unit": price.pixels_per_unit,
                        "currency": price.currency,
                    }
                )
        hardware = [
            {
                "gpu": d.index,
                "name": d.budget.name,
                "memory_total": d.budget.total,
                "memory_free": d.budget.free,
                "runner": d.runner.runner_id,
                "runner_state": str(d.runner.status.state),
                "pid": d.runner.status.pid,
            }
            for d in self.devices.values()
        ]
        return {
            "version": core.__version__,
            "state": self.state,
            "capabilities": {"per_capability": per_cap},
            "capabilities_prices": prices,
            "payment": self.payments.info(),
            "hardware": hardware,
        }

    def metrics(self) -> str:
        return "\n".join(_metrics_lines(self)) + "\n"


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the node's owner handles signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _metrics_lines(node: Node) -> Iterator[str]:
    jobs = node.jobs
    yield "# HELP orchard_jobs_total Jobs finished, by outcome."
    yield "# TYPE orchard_jobs_total counter"
    yield f'orchard_jobs_total{{outcome="done"}} {jobs.finished if jobs else 0}'
    yield f'orchard_jobs_total{{outcome="failed"}} {jobs.failed if jobs else 0}'
    yield "# HELP orchard_job_seconds_sum Total time of finished jobs."
    yield "# TYPE orchard_job_seconds_sum counter"
    yield f"orchard_job_seconds_sum {jobs.latency_sum if jobs else 0:.6f}"
    yield "# HELP orchard_capacity_in_use Jobs running or queued per model."
    yield "# TYPE orchard_capacity_in_use gauge"
    for sl in node.slots:
        yield (
            f'orchard_capacity_in_use{{pipeline="{sl.capability.value}",'
            f'model="{sl.model_id}"}} {sl.in_use}'
        )
    yield "# HELP orchard_model_memory_bytes Memory a model needs (measured, else estimated)."
    yield "# TYPE orchard_model_memory_bytes gauge"
    for sl in node.slots:
        for d in node.devices.values():
            if d.runner.runner_id in sl.runners:
                yield (
                    f'orchard_model_memory_bytes{{gpu="{d.index}",'
                    f'pipeline="{sl.capability.value}",model="{sl.model_id}",'
                    f'measured="{str(sl.footprint.measured).lower()}"}} {sl.footprint.need}'
                )
    yield "# HELP orchard_runner_up Whether a runner is ready."
    yield "# TYPE orchard_runner_up gauge"
    for d in node.devices.values():
        up = int(d.runner.status.state == RunnerState.READY)
        yield f'orchard_runner_up{{runner="{d.runner.runner_id}",gpu="{d.index}"}} {up}'
    yield "# HELP orchard_gpu_memory_free_bytes Free memory per device at the last sample."
    yield "# TYPE orchard_gpu_memory_free_bytes gauge"
    for d in node.devices.values():
        yield f'orchard_gpu_memory_free_bytes{{gpu="{d.index}"}} {d.budget.free}'
