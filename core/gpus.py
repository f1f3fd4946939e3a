"""GPU inventory and live telemetry through NVML, with the CPU as a device when there is none.

Everything NVML goes through one :class:`Nvml` object, which wraps a pynvml-like module (the
``pynvml`` module of the ``nvidia-ml-py`` package by default; tests pass a fake). NVML calls
block, so the asyncio side (:class:`TelemetrySampler`) runs them with ``asyncio.to_thread``.

Without an NVIDIA driver, :meth:`Nvml.probe` returns an inventory with no GPUs and
:data:`NO_GPU` as its error, and the sampler charts the CPU's RAM as device :data:`CPU_INDEX`.
All memory figures are bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The inventory's error when NVML finds no GPU (the reason goes in ``GpuInventory.reason``).
NO_GPU = "no NVIDIA GPU found: running on CPU"
#: The device index under which the CPU (and the machine's RAM) is sampled.
CPU_INDEX = -1


class NvmlError(Exception):
    """An NVML call failed; ``str()`` names the NVML error (``NVMLError_GpuIsLost: ...``)."""


@dataclass(frozen=True)
class GpuInfo:
    """What does not change while the driver runs: one GPU as NVML numbers it."""

    index: int
    name: str
    uuid: str
    memory_total: int
    cuda_capability: tuple[int, int] | None
    driver_version: str | None
    cuda_driver_version: str | None


@dataclass(frozen=True)
class GpuInventory:
    """The result of :meth:`Nvml.probe`. ``error`` is a sentence for a person, ``reason`` why."""

    gpus: tuple[GpuInfo, ...]
    driver_version: str | None
    cuda_version: str | None
    error: str | None = None
    reason: str | None = None

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus)


@dataclass(frozen=True)
class ProcessMemory:
    """A process's GPU memory. ``used_bytes`` is None where the driver cannot tell (WDDM)."""

    pid: int
    used_bytes: int | None


@dataclass(frozen=True)
class GpuSample:
    """One reading of one device. A metric the board does not report is None.

    For the CPU device (index :data:`CPU_INDEX`) the memory is the machine's RAM,
    ``utilization_gpu`` is the busy share of all cores since the previous CPU sample
    (None on the first), and the other metrics are None.
    """

    index: int
    at: float
    memory_total: int
    memory_used: int
    memory_free: int
    utilization_gpu: int | None = None
    utilization_memory: int | None = None
    temperature_c: int | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    processes: tuple[ProcessMemory, ...] = ()


@dataclass(frozen=True)
class CpuDevice:
    """The CPU described as the node's one device when there is no NVIDIA GPU."""

    index: int
    name: str
    memory_total: int
    logical_cores: int


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _cuda_version_text(version: int) -> str:
    """NVML's 12040 -> ``"12.4"``."""
    return f"{version // 1000}.{(version % 1000) // 10}"


class Nvml:
    """A thread-safe wrapper around a pynvml-like module: init, shutdown, probe, sample.

    ``lib`` defaults to the real ``pynvml``, imported on first use. Initialising is lazy and
    idempotent; :meth:`shutdown` (or leaving the ``with`` block) undoes it. Calls hold a lock,
    so a shutdown from one thread waits for a sample in flight on another.
    """

    def __init__(self, lib: Any | None = None) -> None:
        self._lib = lib
        self._lock = threading.RLock()
        self._initialised = False
        self._handles: dict[int, Any] = {}

    def __enter__(self) -> Nvml:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def _module(self) -> Any:
        if self._lib is None:
            try:
                import pynvml
            except ImportError as e:
                raise NvmlError(f"the nvidia-ml-py package is not installed ({e})") from e
            self._lib = pynvml
        return self._lib

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (getattr(self._module(), "NVMLError", OSError), OSError)

    def _call(self, name: str, *args: Any) -> Any:
        """Call ``lib.<name>(*args)``; an NVML failure becomes :class:`NvmlError`."""
        lib = self._module()
        fn = getattr(lib, name, None)
        if fn is None:
            raise NvmlError(f"{name} is not available in this NVML binding")
        try:
            return fn(*args)
        except self._errors() as e:
            raise NvmlError(f"{type(e).__name__}: {e}") from e

    def _optional(self, name: str, *args: Any) -> Any:
        """Like :meth:`_call`, but a failing or unsupported call gives None."""
        try:
            return self._call(name, *args)
        except NvmlError as e:
            log.debug("NVML %s unavailable: %s", name, e)
            return None

    def init(self) -> None:
        """Initialise NVML once. Raises :class:`NvmlError` when the library or driver is missing."""
        with self._lock:
            if not self._initialised:
                self._call("nvmlInit")
                self._initialised = True

    def shutdown(self) -> None:
        """Release NVML if this object initialised it; safe to call more than once."""
        with self._lock:
            if self._initialised:
                self._initialised = False
                self._handles.clear()
                with contextlib.suppress(NvmlError):
                    self._call("nvmlShutdown")

    def _handle(self, index: int) -> Any:
        self.init()
        if index not in self._handles:
            self._handles[index] = self._call("nvmlDeviceGetHandleByIndex", index)
        return self._handles[index]

    def device_count(self) -> int:
        with self._lock:
            self.init()
            return int(self._call("nvmlDeviceGetCount"))

    def driver_version(self) -> str | None:
        with self._lock:
            self.init()
            version = self._optional("nvmlSystemGetDriverVersion")
            return None if version is None else _text(version)

    def cuda_version(self) -> str | None:
        """The newest CUDA version the driver supports (``"12.4"``), not the toolkit's."""
        with self._lock:
            self.init()
            version = self._optional("nvmlSystemGetCudaDriverVersion_v2")
            if version is None:
                version = self._optional("nvmlSystemGetCudaDriverVersion")
            return None if version is None else _cuda_version_text(int(version))

    def info(self, index: int) -> GpuInfo:
        """The fixed facts of GPU ``index``. Raises :class:`NvmlError` if it cannot be opened."""
        with self._lock:
            return self._info(index, self.driver_version(), self.cuda_version())

    def _info(self, index: int, driver: str | None, cuda: str | None) -> GpuInfo:
        handle = self._handle(index)
        memory = self._call("nvmlDeviceGetMemoryInfo", handle)
        capability = self._optional("nvmlDeviceGetCudaComputeCapability", handle)
        return GpuInfo(
            index=index,
            name=_text(self._call("nvmlDeviceGetName", handle)),
            uuid=_text(self._call("nvmlDeviceGetUUID", handle)),
            memory_total=int(memory.total),
            cuda_capability=None
            if capability is None
            else (int(capability[0]), int(capability[1])),
            driver_version=driver,
            cuda_driver_version=cuda,
        )

    def probe(self) -> GpuInventory:
        """Every GPU NVML sees. Never raises: without a driver, no GPUs and :data:`NO_GPU`."""
        with self._lock:
            try:
                count = self.device_count()
            except NvmlError as e:
                log.info("%s (%s)", NO_GPU, e)
                return GpuInventory((), None, None, error=NO_GPU, reason=str(e))
            driver, cuda = self.driver_version(), self.cuda_version()
            gpus = []
            for index in range(count):
                try:
                    gpus.append(self._info(index, driver, cuda))
                except NvmlError as e:
                    log.warning("GPU %d cannot be read, leaving it out: %s", index, e)
            if not gpus:
                reason = f"NVML reports {count} device(s), none readable"
                return GpuInventory((), driver, cuda, error=NO_GPU, reason=reason)
            return GpuInventory(tuple(gpus), driver, cuda)

    def sample(self, index: int) -> GpuSample:
        """Read GPU ``index`` now. Metrics the board lacks are None; only memory is required.

        Raises :class:`NvmlError` when the GPU cannot be reached at all (fell off the bus).
        """
        with self._lock:
            handle = self._handle(index)
            memory = self._call("nvmlDeviceGetMemoryInfo", handle)
            rates = self._optional("nvmlDeviceGetUtilizationRates", handle)
            sensor = getattr(self._module(), "NVML_TEMPERATURE_GPU", 0)
            temperature = self._optional("nvmlDeviceGetTemperature", handle, sensor)
            power_mw = self._optional("nvmlDeviceGetPowerUsage", handle)
            limit_mw = self._optional("nvmlDeviceGetEnforcedPowerLimit", handle)
            running = self._optional("nvmlDeviceGetComputeRunningProcesses", handle) or ()
            return GpuSample(
                index=index,
                at=time.time(),
                memory_total=int(memory.total),
                memory_used=int(memory.used),
                memory_free=int(memory.free),
                utilization_gpu=None if rates is None else int(rates.gpu),
                utilization_memory=None if rates is None else int(rates.memory),
                temperature_c=None if temperature is None else int(temperature),
                power_w=None if power_mw is None else power_mw / 1000.0,
                power_limit_w=None if limit_mw is None else limit_mw / 1000.0,
                processes=tuple(
                    ProcessMemory(
                        int(p.pid), None if p.usedGpuMemory is None else int(p.usedGpuMemory)
                    )
                    for p in running
                ),
            )


def probe(lib: Any | None = None) -> GpuInventory:
    """Probe once with a fresh :class:`Nvml` and release it again. Blocking."""
    with Nvml(lib) as nvml:
        return nvml.probe()


def _meminfo(path: Path = Path("/proc/meminfo")) -> dict[str, int]:
    """``/proc/meminfo`` as bytes per key; empty where it does not exist."""
    values: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                values[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def _ram_total() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows)
        return _meminfo().get("MemTotal", 0)


def cpu_device() -> CpuDevice:
    """The CPU as the node's device: model name (``/proc/cpuinfo``), total RAM, cores."""
    name = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                name = value.strip()
                break
    name = name or platform.processor() or platform.machine() or "CPU"
    return CpuDevice(CPU_INDEX, name, _ram_total(), os.cpu_count() or 1)


class _CpuMeter:
    """Samples RAM from ``/proc/meminfo`` and core busy share from ``/proc/stat`` deltas."""

    def __init__(self) -> None:
        self._last: tuple[int, int] | None = None

    def _busy(self) -> int | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        total, idle = sum(fields[:8]), sum(fields[3:5])  # idle + iowait; guest is in user
        last, self._last = self._last, (total, idle)
        if last is None or total <= last[0]:
            return None
        return round(100 * (1 - (idle - last[1]) / (total - last[0])))

    def sample(self) -> GpuSample:
        info = _meminfo()
        total = info.get("MemTotal") or _ram_total()
        free = info.get("MemAvailable", info.get("MemFree", 0))
        used = max(total - free, 0)
        return GpuSample(CPU_INDEX, time.time(), total, used, free, utilization_gpu=self._busy())


Subscriber = Callable[[tuple[GpuSample, ...]], None]


class TelemetrySampler:
    """Samples the chosen GPUs about every ``interval`` seconds and keeps a bounded history.

    NVML runs in a worker thread (``asyncio.to_thread``); history is updated and subscribers
    are called on the event-loop thread, once per round, with that round's samples. With no
    NVIDIA GPU (or none of the chosen ones present) it samples the CPU's RAM as device
    :data:`CPU_INDEX` (-1), so the GUI always has something to chart. ``indices`` may name
    :data:`CPU_INDEX` to chart the RAM beside GPUs. An ``nvml`` passed in is left
    initialised on :meth:`stop`; one the sampler made itself is shut down.
    """

    def __init__(
        self,
        nvml: Nvml | None = None,
        indices: Iterable[int] | None = None,
        *,
        interval: float = 1.0,
        history: int = 300,
    ) -> None:
        self._owns_nvml = nvml is None
        self._nvml = nvml if nvml is not None else Nvml()
        self._chosen = None if indices is None else tuple(indices)
        self._interval = interval
        self._maxlen = history
        self._history: dict[int, deque[GpuSample]] = {}
        self._failing: set[int] = set()
        self._subscribers: list[Subscriber] = []
        self._cpu = _CpuMeter()
        self._task: asyncio.Task[None] | None = None
        self.inventory: GpuInventory | None = None

    @property
    def indices(self) -> tuple[int, ...]:
        """The devices being sampled; empty until the first round has probed NVML."""
        return tuple(self._history)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def history(self, index: int) -> tuple[GpuSample, ...]:
        """Device ``index``'s samples, oldest first (at most ``history`` of them)."""
        return tuple(self._history.get(index, ()))

    def latest(self, index: int) -> GpuSample | None:
        history = self._history.get(index)
        return history[-1] if history else None

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(samples)`` on the loop thread after every round; returns unsubscribe."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    def start(self) -> None:
        """Start sampling on the running loop (call from a coroutine or loop callback)."""
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="telemetry")

    async def stop(self) -> None:
        """Stop sampling; waits for the task, then releases NVML if the sampler created it."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._owns_nvml:
            await asyncio.to_thread(self._nvml.shutdown)

    def _resolve(self, inventory: GpuInventory) -> list[int]:
        """Which devices to sample, given what NVML found."""
        present = [gpu.index for gpu in inventory.gpus]
        if self._chosen is None:
            return present or [CPU_INDEX]
        wanted = [i for i in self._chosen if i in present or i == CPU_INDEX]
        if missing := sorted(set(self._chosen) - set(wanted)):
            log.warning("chosen GPUs %s not present; sampling %s", missing, wanted or "the CPU")
        return wanted or [CPU_INDEX]

    def _sample_all(self, indices: list[int]) -> list[GpuSample | Exception]:
        """Blocking: one round. A device that fails gives its error, not a sample."""
        results: list[GpuSample | Exception] = []
        for index in indices:
            try:
                sample = self._cpu.sample() if index == CPU_INDEX else self._nvml.sample(index)
            except Exception as e:  # one bad board must not stop the others' charts
                results.append(e)
            else:
                results.append(sample)
        return results

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self.inventory = await asyncio.to_thread(self._nvml.probe)
        indices = self._resolve(self.inventory)
        self._history = {i: deque(maxlen=self._maxlen) for i in indices}
        self._failing.clear()
        while True:
            started = loop.time()
            results = await asyncio.to_thread(self._sample_all, indices)
            samples = []
            for index, result in zip(indices, results, strict=True):
                if isinstance(result, GpuSample):
                    self._failing.discard(index)
                    self._history[index].append(result)
                    samples.append(result)
                elif index not in self._failing:
                    self._failing.add(index)
                    log.warning("device %d cannot be sampled: %s", index, result)
            if samples:
                self._publish(tuple(samples))
            await asyncio.sleep(max(0.0, self._interval - (loop.time() - started)))

    def _publish(self, samples: tuple[GpuSample, ...]) -> None:
        for callback in list(self._subscribers):
            try:
                callback(samples)
            except Exception:
                log.exception("telemetry subscriber %r failed", callback)
