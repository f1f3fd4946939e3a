"""``orchard doctor``: each check on real probes where this machine has them (NVML without a
driver, the disk, real sockets, a real Orchard service, the runtime's Python) and a fake NVML
for GPUs this machine lacks."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from core import doctor, runtime
from core.doctor import Check, DoctorSettings, Status
from core.gpus import GpuInfo, GpuInventory
from tests.conftest import ROOT, free_port
from tests.core.test_gpus import FakeGpu, FakeNvml

GiB = 1024**3


class Cuda128(FakeNvml):
    def nvmlSystemGetDriverVersion(self) -> str:
        return "570.86.15"

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return 12080


def inventory(*gpus: GpuInfo, cuda: str | None = "12.8") -> GpuInventory:
    return GpuInventory(tuple(gpus), "570.86.15" if cuda else None, cuda)


def gpu(index: int = 0, gib: float = 24, cap: tuple[int, int] = (8, 9)) -> GpuInfo:
    return GpuInfo(index, "NVIDIA GeForce RTX 4090", "GPU-x", int(gib * GiB), cap, "570", "12.8")


def test_a_check_is_a_frozen_value() -> None:
    c = Check("disk", Status.PASS, "fine")
    with pytest.raises(FrozenInstanceError):
        c.status = Status.FAIL  # type: ignore[misc]
    assert c.action == ""


def test_gpu_checks() -> None:
    inv = inventory(gpu(0), gpu(1, gib=6, cap=(7, 5)))
    assert doctor.check_driver(inv).status is Status.PASS
    cuda = doctor.check_cuda(inv, "linux")
    assert cuda.status is Status.PASS and "runtime cu128" in cuda.detail
    g = doctor.check_gpus(inv)
    assert g.status is Status.WARN and "GPU 1 has under 8.0 GiB" in g.action
    assert "0: NVIDIA GeForce RTX 4090 (24.0 GiB VRAM, compute 8.9)" in g.detail
    old = GpuInventory((gpu(),), "535.54", "12.2")
    assert doctor.check_cuda(old).status is Status.WARN
    assert "update the NVIDIA driver" in doctor.check_cuda(old).action


async def test_every_check_runs_with_a_fake_driver(tmp_path: Path) -> None:
    lib = Cuda128([FakeGpu("NVIDIA H100", "GPU-1", 80 * GiB, capability=(9, 0))])
    s = DoctorSettings(tmp_path, tmp_path / "models", free_port(), free_port(), nvml_lib=lib)
    checks = await doctor.run_checks(s)
    by = {c.name: c for c in checks}
    assert list(by)[:5] == ["driver", "CUDA", "GPUs", "runtime", "disk"]
    assert by["driver"].detail == "NVIDIA driver 570.86.15"
    assert by["CUDA"].status is Status.PASS and "cu128" in by["CUDA"].detail
    assert "NVIDIA H100 (80.0 GiB VRAM, compute 9.0)" in by["GPUs"].detail
    # From the checkout with no runtime set up, runners use this Python (CPU torch): with a
    # GPU present, that is a warning that says which runtime to set up.
    assert by["runtime"].status is Status.WARN
    assert by["runtime"].action == "orchard runtime setup --backend cu128"
    assert by["runtime"].detail.startswith("no runtime set up; runners use this Python")


async def test_on_this_machine_without_a_driver(tmp_path: Path) -> None:
    s = DoctorSettings(tmp_path, tmp_path / "models", free_port(), free_port(), docker=False)
    checks = await doctor.run_checks(s)
    by = {c.name: c for c in checks}
    if by["driver"].status is Status.PASS:
        pytest.skip("this machine has an NVIDIA driver")
    assert by["driver"].status is Status.WARN and "nvidia" in by["driver"].action.lower()
    assert by["GPUs"].detail == "no NVIDIA GPU found: running on CPU"
    assert by["runtime"].status is Status.PASS  # this Python has the CPU torch
    assert by["disk"].status in (Status.PASS, Status.WARN)
    assert doctor.exit_code(checks) == 0


async def test_a_broken_runtime_fails(tmp_path: Path) -> None:
    info = runtime.RuntimeInfo("venv", str(tmp_path / "gone"), "cpu", "2", None, False, "1", None)
    runtime._select(tmp_path, info)
    c = await asyncio.to_thread(
        doctor.check_runtime, DoctorSettings(tmp_path, tmp_path), inventory()
    )
    assert c.status is Status.FAIL and c.action.startswith("orchard runtime setup")
    none = DoctorSettings(tmp_path / "other", tmp_path, fallback_python=None)
    c = await asyncio.to_thread(doctor.check_runtime, none, inventory())
    assert c.status is Status.FAIL and c.detail == "no GPU runtime is set up"


def test_disk_thresholds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = doctor.check_disk(tmp_path / "models" / "not-yet")
    assert "free of" in real.detail and str(tmp_path) in real.detail
    usage = type("U", (), {"total": 100 * GiB, "used": 0, "free": 0})
    for free, want in [(50 * GiB, Status.PASS), (10 * GiB, Status.WARN), (GiB, Status.FAIL)]:
        usage.free = free
        monkeypatch.setattr(doctor.shutil, "disk_usage", lambda p, u=usage: u)
        assert doctor.check_disk(tmp_path).status is want


@pytest.fixture
def orchard_service() -> Iterator[int]:
    """A real Orchard HTTP service (the gateway's app) on a loopback port."""
    import uvicorn
    from fastapi import FastAPI

    import core

    app = FastAPI(title="Orchard gateway", version=core.__version__)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.02)
    yield port
    server.should_exit = True
    thread.join(10)


def test_ports(orchard_service: int) -> None:
    port = free_port()
    assert doctor.check_port("node", port).status is Status.PASS
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))
        other.listen()
        c = doctor.check_port("node", port)
    assert c.status is Status.FAIL and f"ss -ltnp 'sport = :{port}'" in c.action
    ours = doctor.check_port("gateway", orchard_service)
    assert ours.status is Status.PASS and "in use by Orchard (Orchard gateway" in ours.detail


def test_docker_is_optional() -> None:
    c = doctor.check_docker()
    assert c.name == "Docker" and c.status in (Status.PASS, Status.WARN)
    if c.status is Status.WARN:
        assert "only the docker runner backend needs it" in c.action


def test_table_and_exit_code() -> None:
    checks = [
        Check("driver", Status.PASS, "NVIDIA driver 570.86.15"),
        Check("port 8935", Status.FAIL, "in use by another program", "stop it"),
        Check("Docker", Status.WARN, "no engine " * 20, "install it"),
    ]
    table = doctor.format_table(checks, width=80)
    lines = table.splitlines()
    assert lines[2].startswith("ok    driver     NVIDIA driver 570.86.15")
    assert lines[3].startswith("FAIL  port 8935  in use")
    assert "-> stop it" in lines[4]
    assert all(len(line) <= 80 for line in lines)
    assert lines[-1] == "3 checks: 1 ok, 1 warning(s), 1 failed"
    assert doctor.exit_code(checks) == 1
    assert doctor.exit_code(checks[::2]) == 0


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    code = (
        "import argparse, sys\n"
        "from app import doctor_cli\n"
        "p = argparse.ArgumentParser(prog='orchard')\n"
        "doctor_cli.add_parser(p.add_subparsers(dest='command'))\n"
        "sys.exit(doctor_cli.run(p.parse_args(sys.argv[1:])))\n"
    )
    env = {**os.environ, "ORCHARD_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, env=env
    )


def test_the_cli(tmp_path: Path) -> None:
    ports = ["--port", str(free_port()), "--gateway-port", str(free_port())]
    out = _cli("doctor", "--json", "--no-docker", *ports, home=tmp_path)
    assert out.returncode == 0, out.stderr
    names = [c["name"] for c in json.loads(out.stdout)]
    assert names[:5] == ["driver", "CUDA", "GPUs", "runtime", "disk"]
    status = _cli("runtime", "status", home=tmp_path)
    assert status.returncode == 1 and "orchard runtime setup" in status.stdout
    bad = _cli("runtime", "use", str(tmp_path / "nope"), home=tmp_path)
    assert bad.returncode == 1 and "does not exist" in bad.stderr
    setup = _cli("runtime", "setup", "--backend", "cpu", "--python", "/no/python", home=tmp_path)
    assert setup.returncode == 1
    assert setup.stderr.startswith("orchard runtime setup: no Python 3.10 to 3.14")
