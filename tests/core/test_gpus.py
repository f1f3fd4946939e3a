"""GPU inventory and telemetry (core/gpus.py).

The real ``pynvml`` runs first: on a machine without an NVIDIA driver it must give the
no-GPU inventory, and the sampler must chart the CPU's RAM. The other tests use
:class:`FakeNvml`, a stand-in for the ``pynvml`` module. A fake is used ONLY because no
NVIDIA GPU exists where these tests are written and run; it implements just the pynvml
functions core/gpus.py calls, with pynvml's names, units (bytes, milliwatts, CUDA version
as 12040) and error classes, and tests on a real GPU are marked ``gpu``.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from core.gpus import (
    CPU_INDEX,
    NO_GPU,
    GpuSample,
    Nvml,
    NvmlError,
    ProcessMemory,
    TelemetrySampler,
    cpu_device,
    probe,
)

GiB = 1024**3


class NVMLError(Exception):
    """pynvml's base error; ``str()`` is NVML's message."""


class NVMLError_NotSupported(NVMLError):
    pass


class NVMLError_LibraryNotFound(NVMLError):
    pass


class NVMLError_GpuIsLost(NVMLError):
    pass


@dataclass
class FakeGpu:
    """One board as the fake driver reports it. ``power_mw=None`` means not supported."""

    name: str
    uuid: str
    total: int
    used: int = 0
    capability: tuple[int, int] = (8, 9)
    util: tuple[int, int] = (0, 0)
    temperature: int = 40
    power_mw: int | None = 100_000
    limit_mw: int = 450_000
    processes: list[tuple[int, int | None]] = field(default_factory=list)
    lost: bool = False


class FakeNvml:
    """The pynvml functions core/gpus.py calls, over a list of :class:`FakeGpu`.

    Stands in for the real library only because this machine has no NVIDIA GPU.
    """

    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, gpus: list[FakeGpu], *, library: bool = True) -> None:
        self.gpus = gpus
        self.library = library
        self.initialised = 0
        self.sample_threads: set[int] = set()

    def nvmlInit(self) -> None:
        if not self.library:
            raise NVMLError_LibraryNotFound("NVML Shared Library Not Found")
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.initialised -= 1

    def _ready(self) -> None:
        if self.initialised <= 0:
            raise NVMLError("Uninitialized")

    def nvmlDeviceGetCount(self) -> int:
        self._ready()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self._ready()
        if not 0 <= index < len(self.gpus):
            raise NVMLError("Invalid Argument")
        return self.gpus[index]

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.14"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12040

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return 12040

    def nvmlDeviceGetName(self, h: FakeGpu) -> str:
        return h.name

    def nvmlDeviceGetUUID(self, h: FakeGpu) -> str:
        return h.uuid

    def nvmlDeviceGetCudaComputeCapability(self, h: FakeGpu) -> tuple[int, int]:
        return h.capability

    def nvmlDeviceGetMemoryInfo(self, h: FakeGpu) -> Any:
        self.sample_threads.add(threading.get_ident())
        if h.lost:
            raise NVMLError_GpuIsLost("GPU is lost")
        return SimpleNamespace(total=h.total, used=h.used, free=h.total - h.used)

    def nvmlDeviceGetUtilizationRates(self, h: FakeGpu) -> Any:
        return SimpleNamespace(gpu=h.util[0], memory=h.util[1])

    def nvmlDeviceGetTemperature(self, h: FakeGpu, sensor: int) -> int:
        assert sensor == self.NVML_TEMPERATURE_GPU
        return h.temperature

    def nvmlDeviceGetPowerUsage(self, h: FakeGpu) -> int:
        if h.power_mw is None:
            raise NVMLError_NotSupported("Not Supported")
        return h.power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, h: FakeGpu) -> int:
        if h.power_mw is None:
            raise NVMLError_NotSupported("Not Supported")
        return h.limit_mw

    def nvmlDeviceGetComputeRunningProcesses(self, h: FakeGpu) -> list[Any]:
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in h.processes]


def two_gpus() -> FakeNvml:
    """A 4090 with a job running and a board that does not report power."""
    busy = FakeGpu(
        "NVIDIA GeForce RTX 4090",
        "GPU-aaaa-0000",
        24 * GiB,
        used=6 * GiB,
        util=(87, 41),
        processes=[(4242, 5 * GiB), (4343, None)],
    )
    quiet = FakeGpu("NVIDIA A10", "GPU-bbbb-1111", 23 * GiB, capability=(8, 6), power_mw=None)
    return FakeNvml([busy, quiet])


# -- the real library on this machine -------------------------------------------------------


def test_real_nvml_without_a_gpu_reports_running_on_cpu() -> None:
    inventory = probe()
    if inventory.gpus:
        pytest.skip("an NVIDIA GPU is present; the no-GPU path is covered with FakeNvml")
    assert inventory.error == "no NVIDIA GPU found: running on CPU"
    assert inventory.reason  # why, e.g. "NVMLError_LibraryNotFound: NVML Shared Library ..."
    assert not inventory.has_gpu


@pytest.mark.gpu
def test_real_nvml_sees_the_gpus() -> None:
    inventory = probe()
    if not inventory.gpus:
        pytest.skip(f"no NVIDIA GPU: {inventory.reason}")
    with Nvml() as nvml:
        sample = nvml.sample(0)
    assert inventory.error is None
    assert inventory.gpus[0].uuid.startswith(("GPU-", "MIG-"))
    assert 0 < sample.memory_used + sample.memory_free <= sample.memory_total + 1


def test_cpu_device_describes_the_machine() -> None:
    cpu = cpu_device()
    assert cpu.index == CPU_INDEX
    assert cpu.name
    assert cpu.memory_total > 256 * 1024**2
    assert cpu.logical_cores >= 1


async def test_sampler_charts_cpu_ram_without_a_gpu() -> None:
    if probe().gpus:
        pytest.skip("an NVIDIA GPU is present")
    sampler = TelemetrySampler(interval=0.01, history=3)
    got: list[tuple[GpuSample, ...]] = []
    sampler.subscribe(got.append)
    sampler.start()
    try:
        for _ in range(500):
            if len(got) >= 4:
                break
            await asyncio.sleep(0.01)
    finally:
        await sampler.stop()
    assert sampler.indices == (CPU_INDEX,)
    assert sampler.inventory is not None and sampler.inventory.error == NO_GPU
    ram = got[-1][0]
    assert ram.index == CPU_INDEX
    assert 0 < ram.memory_used < ram.memory_total
    assert ram.memory_used + ram.memory_free == ram.memory_total
    assert ram.power_w is None and ram.processes == ()
    assert ram.utilization_gpu is None or 0 <= ram.utilization_gpu <= 100
    assert len(sampler.history(CPU_INDEX)) == 3


# -- the fake library ------------------------------------------------------------------------


def test_missing_library_gives_the_no_gpu_inventory_and_the_reason() -> None:
    inventory = probe(FakeNvml([], library=False))
    assert inventory.gpus == ()
    assert inventory.error == NO_GPU
    assert inventory.reason == "NVMLError_LibraryNotFound: NVML Shared Library Not Found"


def test_a_driver_with_no_devices_is_no_gpu() -> None:
    inventory = probe(FakeNvml([]))
    assert inventory.error == NO_GPU
    assert inventory.driver_version == "550.54.14"


def test_inventory_of_two_gpus() -> None:
    fake = two_gpus()
    inventory = probe(fake)
    assert fake.initialised == 0  # probe() released NVML
    assert inventory.error is None and inventory.reason is None
    assert (inventory.driver_version, inventory.cuda_version) == ("550.54.14", "12.4")
    first, second = inventory.gpus
    assert (first.index, first.name, first.uuid) == (0, "NVIDIA GeForce RTX 4090", "GPU-aaaa-0000")
    assert first.memory_total == 24 * GiB
    assert first.cuda_capability == (8, 9)
    assert (first.driver_version, first.cuda_driver_version) == ("550.54.14", "12.4")
    assert (second.index, second.cuda_capability) == (1, (8, 6))


def test_sample_reads_every_metric_in_bytes_and_watts() -> None:
    with Nvml(two_gpus()) as nvml:
        sample = nvml.sample(0)
    assert sample.index == 0
    assert (sample.memory_total, sample.memory_used, sample.memory_free) == (
        24 * GiB,
        6 * GiB,
        18 * GiB,
    )
    assert (sample.utilization_gpu, sample.utilization_memory) == (87, 41)
    assert sample.temperature_c == 40
    assert (sample.power_w, sample.power_limit_w) == (100.0, 450.0)
    assert sample.processes == (ProcessMemory(4242, 5 * GiB), ProcessMemory(4343, None))


def test_unsupported_power_is_none_not_an_error() -> None:
    with Nvml(two_gpus()) as nvml:
        sample = nvml.sample(1)
    assert sample.power_w is None and sample.power_limit_w is None
    assert sample.temperature_c == 40 and sample.processes == ()


def test_a_lost_gpu_raises_nvml_error() -> None:
    fake = two_gpus()
    fake.gpus[1].lost = True
    with Nvml(fake) as nvml, pytest.raises(NvmlError, match="GpuIsLost"):
        nvml.sample(1)
    assert probe(fake).gpus == (probe(two_gpus()).gpus[0],)  # the lost board is left out


async def test_sampler_calls_subscribers_on_the_loop_thread_with_bounded_history() -> None:
    fake = two_gpus()
    loop_thread = threading.get_ident()
    rounds: list[tuple[GpuSample, ...]] = []
    threads: set[int] = set()
    enough = asyncio.Event()

    def on_samples(samples: tuple[GpuSample, ...]) -> None:
        threads.add(threading.get_ident())
        rounds.append(samples)
        if len(rounds) >= 8:
            enough.set()

    with Nvml(fake) as nvml:
        sampler = TelemetrySampler(nvml, interval=0.005, history=5)
        unsubscribe = sampler.subscribe(on_samples)
        sampler.start()
        try:
            await asyncio.wait_for(enough.wait(), timeout=10)
            unsubscribe()
            seen = len(rounds)
            await asyncio.sleep(0.05)
        finally:
            await sampler.stop()
        assert not sampler.running
        assert fake.initialised == 1  # an Nvml passed in stays open for its owner

    assert threads == {loop_thread}
    assert loop_thread not in fake.sample_threads  # NVML ran off the loop
    assert len(rounds) == seen  # nothing after unsubscribe
    assert sampler.indices == (0, 1)
    assert all([s.index for s in r] == [0, 1] for r in rounds)
    for index in (0, 1):
        history = sampler.history(index)
        assert len(history) == 5
        assert [s.at for s in history] == sorted(s.at for s in history)
        assert sampler.latest(index) == history[-1]
    assert sampler.history(0)[-1].processes[0] == ProcessMemory(4242, 5 * GiB)
    assert sampler.history(1)[-1].power_w is None


async def test_sampler_samples_chosen_gpus_and_survives_a_lost_one() -> None:
    fake = two_gpus()
    rounds: list[tuple[GpuSample, ...]] = []
    with Nvml(fake) as nvml:
        sampler = TelemetrySampler(nvml, indices=[1, 5], interval=0.005)
        sampler.subscribe(rounds.append)
        failing = sampler.subscribe(lambda _: 1 / 0)  # a broken subscriber is logged
        sampler.start()
        try:
            for _ in range(1000):
                if len(rounds) >= 2:
                    break
                await asyncio.sleep(0.005)
            assert sampler.indices == (1,)  # GPU 5 does not exist
            fake.gpus[1].lost = True
            lost_at = len(rounds)
            await asyncio.sleep(0.05)
            assert len(rounds) == lost_at  # no samples while lost, but still running
            assert sampler.running
            fake.gpus[1].lost = False
            for _ in range(1000):
                if len(rounds) > lost_at:
                    break
                await asyncio.sleep(0.005)
        finally:
            failing()
            await sampler.stop()
    assert len(rounds) > lost_at
    assert {s.index for r in rounds for s in r} == {1}


async def test_sampler_owns_and_releases_its_own_nvml() -> None:
    sampler = TelemetrySampler(interval=0.005)
    sampler.start()
    sampler.start()  # idempotent
    await asyncio.sleep(0.02)
    await sampler.stop()
    await sampler.stop()  # idempotent
    assert not sampler.running
