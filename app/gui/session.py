"""The app's state over the core: the configuration, the devices and the operator's choices,
the node (one :class:`~core.orchestrator.node.Node` per start, on one event bus), telemetry,
and the job store while the node is stopped.

Everything blocking (NVML, disk, SQLite) goes through the core's async APIs or
``asyncio.to_thread``; all of it runs on the Qt thread's asyncio loop (qasync).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from app.gui import demo
from app.gui.catalogue import Catalogue, load_catalogue
from app.gui.fit import FitReport, report
from app.gui.settings import AppSettings
from app.gui.tasks import spawn
from core import config as cfg_mod
from core import events as ev
from core.config import Backend, ConfigError, ModelEntry, ModelsConfig
from core.errors import OrchardError
from core.gpus import CPU_INDEX, CpuDevice, GpuInventory, TelemetrySampler, cpu_device, probe
from core.orchestrator.node import Node, NodeError, NodeSettings, estimate_footprint
from core.pipelines import Capability
from core.placement import (
    NATIVE_SIZE,
    TYPICAL_WEIGHTS,
    ArchFamily,
    CalibrationStore,
    Footprint,
    GpuBudget,
    Resident,
    estimate_vram,
)
from core.placement.estimate import ModelKey
from core.store import JobRecord, JobStore, StoreError
from widgets.vram_bar import ModelUse

log = logging.getLogger(__name__)

EMPTY_STATS: dict[str, Any] = {
    "total_jobs": 0,
    "by_state": {},
    "by_model": {},
    "fees_by_model": {},
    "total_fees": "0",
    "jobs_per_day": {},
    "fees_per_day": {},
}


class NodeSession(QObject):
    """One operator's node and choices. ``await open()`` first, ``await close()`` last."""

    config_changed = Signal(object)  # ModelsConfig
    choices_changed = Signal()  # GPUs used or reserves
    demo_status = Signal(str, bool)  # message, busy (building the demo models)

    def __init__(
        self,
        settings: AppSettings,
        data_dir: Path,
        models_dir: Path,
        config_path: Path | None = None,
        *,
        bus: ev.EventBus | None = None,
        telemetry_interval: float = 1.0,
        runner_python: str = sys.executable,
        catalogue: Catalogue | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.data_dir = Path(data_dir)
        self.models_dir = Path(models_dir)
        self.config_path = Path(
            config_path or settings.config_path or self.data_dir / cfg_mod.DEFAULT_FILENAME
        )
        self.bus = bus or ev.EventBus()
        self.sampler = TelemetrySampler(interval=telemetry_interval)
        self.runner_python = runner_python
        self.catalogue = catalogue or load_catalogue()
        self.inventory = GpuInventory((), None, None)
        self.cpu = CpuDevice(CPU_INDEX, "CPU", 0, 1)
        self.config = ModelsConfig(source=str(self.config_path))
        self.config_error: str | None = None
        self.first_start = False
        self.node: Node | None = None
        self.history = JobStore(self.data_dir)
        self.use_gpus: set[int] = set()
        self.reserve: dict[int, int] = settings.reserve
        self.host = settings.host
        self.port = settings.port
        self._free: bool | None = settings.free_mode
        self._start_task: asyncio.Task[Any] | None = None
        self._demo_task: asyncio.Task[None] | None = None
        self.demo_error: str | None = None

    # ----------------------------------------------------------------- lifecycle
    async def open(self) -> None:
        self.bus.bind(asyncio.get_running_loop())
        self.inventory, self.cpu = await asyncio.to_thread(lambda: (probe(), cpu_device()))
        saved = self.settings.use_gpus
        present = {g.index for g in self.inventory.gpus}
        self.use_gpus = present if saved is None else saved & present
        self.sampler.start()
        await self._open_history()
        await self._load_initial_config()

    async def close(self) -> None:
        await self.stop_node()
        if self._demo_task is not None and not self._demo_task.done():
            self._demo_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._demo_task
        await self.sampler.stop()
        await self.history.close()

    async def _open_history(self) -> None:
        try:
            await self.history.open()
        except OrchardError as exc:
            log.warning("job history unavailable: %s", exc.msg)

    async def _load_initial_config(self) -> None:
        path = self.config_path
        exists = await asyncio.to_thread(path.exists)
        if exists:
            await self.load_config(path)
        else:
            self.first_start = True
            log.info("nothing configured yet: a demo configuration on the tiny models")
            await self.set_config(demo.demo_config(str(path)))
        self.ensure_demo_models()

    # ----------------------------------------------------------------- demo
    @property
    def is_demo(self) -> bool:
        return demo.is_demo(self.config)

    def ensure_demo_models(self) -> asyncio.Task[None] | None:
        """Build the tiny models in a subprocess if the configuration uses them and they
        are missing. The task is awaited by :meth:`start_node`."""
        uses_tiny = any(e.model_id.startswith(demo.DEMO_PREFIX) for e in self.config.entries)
        if not uses_tiny or (self._demo_task is not None and not self._demo_task.done()):
            return self._demo_task
        self._demo_task = spawn(self._build_demo(), "build the demo models")
        return self._demo_task

    async def _build_demo(self) -> None:
        if await asyncio.to_thread(demo.tiny_present, self.models_dir):
            return
        self.demo_status.emit("Building the tiny demo models (about a minute)…", True)
        try:
            await demo.make_tiny(self.models_dir, self.runner_python)
        except demo.DemoError as exc:
            self.demo_error = exc.msg
            self.demo_status.emit(exc.msg, False)
            return
        self.demo_error = None
        self.demo_status.emit("The demo models are ready.", False)

    # ----------------------------------------------------------------- config
    async def load_config(self, path: Path) -> bool:
        """Read ``path`` (it becomes the configuration file); False with
        :attr:`config_error` set when it cannot be used."""
        try:
            config = await asyncio.to_thread(cfg_mod.load, path)
        except (ConfigError, FileNotFoundError) as exc:
            msg = exc.msg if isinstance(exc, ConfigError) else f"{path} does not exist"
            self.config_error = msg
            log.warning("cannot use %s: %s", path, msg)
            self.config_changed.emit(self.config)
            return False
        self.config_path = Path(path)
        self.settings.config_path = self.config_path
        self.config_error = None
        self.config = config
        for w in config.warnings:
            log.warning("%s", w)
        self.config_changed.emit(config)
        return True

    async def set_config(self, config: ModelsConfig, save: bool = True) -> None:
        """Use ``config`` (applies at the next start) and save it atomically, with a backup."""
        config = ModelsConfig.from_entries(config.entries, source=str(self.config_path))
        self.config = config
        self.config_error = None
        if save:
            await asyncio.to_thread(self.config_path.parent.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(cfg_mod.save, config, self.config_path)
            self.settings.config_path = self.config_path
        self.config_changed.emit(config)

    async def export_config(self, path: Path) -> None:
        await asyncio.to_thread(cfg_mod.save, self.config, path)

    async def add_model(self, pipeline: str, model_id: str) -> str | None:
        """Add ``model_id`` for ``pipeline`` (cold); returns why not, or None."""
        if any(e.key == (pipeline, model_id) for e in self.config.entries):
            return f"{model_id} is already configured for {pipeline}"
        try:
            entry = ModelEntry(pipeline, model_id)
            config = ModelsConfig.from_entries((*self.config.entries, entry))
        except ConfigError as exc:
            return exc.msg
        await self.set_config(config)
        if model_id.startswith(demo.DEMO_PREFIX):
            self.ensure_demo_models()
        return None

    # ----------------------------------------------------------------- choices
    def devices(self) -> list[tuple[int, str]]:
        """The devices a node would use now, as ``(index, label)``."""
        if not self.inventory.has_gpu:
            return [(CPU_INDEX, f"CPU ({self.cpu.name})")]
        return [(g.index, f"GPU {g.index} ({g.name})") for g in self.inventory.gpus]

    def set_use(self, index: int, on: bool) -> None:
        if on:
            self.use_gpus.add(index)
        else:
            self.use_gpus.discard(index)
        self.settings.use_gpus = self.use_gpus
        self.choices_changed.emit()

    def set_reserve(self, index: int, reserve: int) -> None:
        self.reserve[index] = reserve
        self.settings.reserve = self.reserve
        self.choices_changed.emit()

    @property
    def free(self) -> bool:
        """Free mode: the node asks no payment. Unless the operator chose, on for the demo
        configuration (so a first test generation works) and off otherwise."""
        return self.is_demo if self._free is None else self._free

    def set_free(self, on: bool) -> None:
        self._free = on
        self.settings.free_mode = on
        self.choices_changed.emit()

    def gpus_spec(self) -> str:
        if not self.inventory.has_gpu:
            return "cpu"
        if not self.use_gpus:
            raise NodeError("no GPU is chosen for the node; turn one on on the GPUs page")
        return ",".join(str(i) for i in sorted(self.use_gpus))

    def budgets(self) -> list[GpuBudget]:
        """The chosen devices' budgets now: NVML free memory (the RAM share for the CPU)."""
        loaded = self._loaded_bytes()
        if not self.inventory.has_gpu:
            total = self.cpu.memory_total
            free = total - loaded.get(CPU_INDEX, 0)
            name = f"CPU ({self.cpu.name})"  # as the node names it
            return [GpuBudget(CPU_INDEX, name, total, free, self.reserve.get(CPU_INDEX, 0))]
        out = []
        for g in self.inventory.gpus:
            if g.index not in self.use_gpus:
                continue
            sample = self.sampler.latest(g.index)
            free = sample.memory_free if sample else g.memory_total
            out.append(
                GpuBudget(g.index, g.name, g.memory_total, free, self.reserve.get(g.index, 0))
            )
        return out

    # ----------------------------------------------------------------- node
    @property
    def running(self) -> bool:
        return self.node is not None and self.node.state == "running"

    @property
    def state(self) -> str:
        return self.node.state if self.node is not None else "stopped"

    def url(self) -> str | None:
        return self.node.url if self.running and self.node is not None else None

    async def start_node(self, host: str | None = None, port: int | None = None) -> bool:
        """Start a node on the current configuration; False when it did not start (the
        reason went out as a ``NodeChanged("failed", ...)`` event)."""
        if self.state in ("starting", "running", "stopping"):
            return self.running
        self.host = host or self.host
        self.port = self.port if port is None else port
        self.settings.host, self.settings.port = self.host, self.port
        try:
            spec = self.gpus_spec()
            self._check_config()
        except OrchardError as exc:
            self.bus.emit(ev.NodeChanged("failed", exc.msg))
            return False
        self._start_task = asyncio.current_task()
        try:
            if self._demo_task is not None:
                self.bus.emit(ev.NodeChanged("starting", "building the demo models first"))
                await self._demo_task
                if self.demo_error:
                    self.bus.emit(ev.NodeChanged("failed", self.demo_error))
                    return False
            await self.history.close()
            extra: dict[str, Any] = {}
            if "free" in {f.name for f in dataclasses.fields(NodeSettings)}:
                extra["free"] = self.free  # payments: the node asks for tickets unless free
            node = Node(
                NodeSettings(
                    config=self.config,
                    data_dir=self.data_dir,
                    models_dir=self.models_dir,
                    gpus=spec,
                    host=self.host,
                    port=self.port,
                    reserve=dict(self.reserve),
                    runner_python=self.runner_python,
                    **extra,
                ),
                self.bus,
            )
            self.node = node
            await node.start()
            return True
        except asyncio.CancelledError:
            self.bus.emit(ev.NodeChanged("stopped", "start cancelled"))
            await self._open_history()
            return False
        except Exception as exc:  # the node said why in its NodeChanged("failed") event
            msg = exc.msg if isinstance(exc, OrchardError) else f"{type(exc).__name__}: {exc}"
            log.warning("the node did not start: %s", msg)
            await self._open_history()
            return False
        finally:
            self._start_task = None

    def _check_config(self) -> None:
        if self.config_error:
            raise NodeError(f"the configuration cannot be used: {self.config_error}")
        if not any(e.supported for e in self.config.entries):
            raise NodeError(
                "no models configured: add one on the Models page (or import an aiModels.json)"
            )

    async def stop_node(self) -> None:
        node = self.node
        task = self._start_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if node is not None and node.state not in ("stopped", "failed"):
            await node.stop()
            await self._open_history()

    def runner_pids(self) -> list[int]:
        if self.node is None:
            return []
        return [p for d in self.node.devices.values() if (p := d.runner.status.pid)]

    def runner_logs(self) -> dict[str, list[str]]:
        """Each local runner's last output lines (LocalRunner.log_tail: memory, no disk)."""
        if self.node is None:
            return {}
        out = {}
        for d in self.node.devices.values():
            tail = getattr(d.runner, "log_tail", None)
            if tail is not None:
                out[d.runner.runner_id] = list(tail())
        return out

    def info(self) -> dict[str, Any] | None:
        return self.node.info() if self.running and self.node is not None else None

    def offered(self) -> dict[str, list[str]]:
        """Models the running node offers, per pipeline."""
        out: dict[str, list[str]] = {}
        if self.running and self.node is not None:
            for sl in self.node.slots:
                out.setdefault(sl.capability.value, []).append(sl.model_id)
        return out

    def _loaded_bytes(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for index in self.node.devices if self.running and self.node else {}:
            out[index] = sum(m.bytes for m in self.models_on(index))
        return out

    def models_on(self, index: int) -> list[ModelUse]:
        """The models a running node holds on device ``index``; the weights that pipelines
        of one model share are counted once."""
        node = self.node
        if node is None or not self.running or index not in node.devices:
            return []
        rid = node.devices[index].runner.runner_id
        groups: dict[str, list[Any]] = {}
        for sl in node.slots:
            if rid in sl.runners:
                groups.setdefault(sl.model_id, []).append(sl)
        out = []
        for model_id, slots in groups.items():
            shared = max(sl.footprint.shared for sl in slots)
            size = shared + sum(sl.footprint.need - sl.footprint.shared for sl in slots)
            pipes = " + ".join(sl.capability.value for sl in slots)
            measured = all(sl.footprint.measured for sl in slots)
            out.append(ModelUse(f"{model_id} ({pipes})", size, measured))
        return out

    def residents(self) -> list[Resident]:
        node = self.node
        if node is None or not self.running:
            return []
        out = []
        for d in node.devices.values():
            for sl in node.slots:
                if d.runner.runner_id in sl.runners:
                    out.append(Resident(d.index, sl.footprint, sl.warm, sl.last_used))
        return out

    # ----------------------------------------------------------------- estimates
    async def fit_report(self) -> FitReport:
        """Needs and verdicts for every local model (reads model files: in a thread)."""
        config = self.config
        measured: dict[ModelKey, Footprint] = {}
        if self.running and self.node is not None:
            measured = {sl.key: sl.footprint for sl in self.node.slots}
        entries = [
            e
            for e in config.entries
            if e.supported
            and e.gateway_key is None
            and e.effective_backend in (Backend.LOCAL, Backend.DOCKER)
        ]

        def estimate() -> tuple[dict[ModelKey, Footprint | None], dict[ModelKey, str]]:
            # orchard bench measurements count as the node counts them (docs/placement.md)
            calibration = CalibrationStore.in_dir(self.data_dir)
            fps: dict[ModelKey, Footprint | None] = {}
            notes: dict[ModelKey, str] = {}
            for e in entries:
                if e.key in measured:
                    fps[e.key] = measured[e.key]
                    continue
                cap = Capability(e.pipeline)
                try:
                    fps[e.key] = estimate_footprint(
                        self.models_dir,
                        cap,
                        e.model_id,
                        calibration=calibration,
                        flags=e.orchard_flags,
                    )
                except OrchardError:
                    fps[e.key], notes[e.key] = self._typical(e)
                except (OSError, ValueError) as exc:
                    fps[e.key], notes[e.key] = None, f"cannot read the model: {exc}"
            return fps, notes

        footprints, notes = await asyncio.to_thread(estimate)
        return report(config, footprints, notes, self.budgets(), self.residents())

    def _typical(self, e: ModelEntry) -> tuple[Footprint | None, str]:
        """A catalogue model not on disk: its family's typical size at its native size."""
        known = self.catalogue.get(e.model_id)
        if known is None:
            return None, "not on disk: download it to estimate"
        arch = ArchFamily(known.family)
        weights = TYPICAL_WEIGHTS.get(arch, known.size_bytes)
        width, height, frames = NATIVE_SIZE[arch]
        est = estimate_vram(arch, weights, width, height, frames)
        return Footprint(e.key, est), "typical size, not on disk"

    # ----------------------------------------------------------------- history
    @property
    def store(self) -> JobStore:
        return self.node.store if self.running and self.node is not None else self.history

    async def recent_jobs(self, limit: int = 200) -> list[JobRecord]:
        try:
            return await self.store.recent_jobs(limit)
        except StoreError:
            return []

    async def stats(self, days: int = 30) -> dict[str, Any]:
        try:
            return await self.store.stats(days)
        except StoreError:
            return dict(EMPTY_STATS)
