"""``orchard doctor``: is this machine ready to serve? Each check says pass, warn or fail, what
it found, and what to do about it.

:func:`run_checks` runs every check at once on the event loop; the probes that block (NVML,
starting the runtime's Python, the Docker engine, disk, sockets) run in worker threads, so the
GUI's loop never stalls. :func:`format_table` renders the result for a terminal and
:func:`exit_code` is 1 when any check failed (warnings are fine).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import sys
import textwrap
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import core
from core import runtime
from core.gpus import GpuInventory

log = logging.getLogger(__name__)

GiB = 1024**3
#: Below this much free space for models the disk check warns (an SDXL model is ~7 GiB).
DISK_WARN = 20 * GiB
#: Below this much it fails: not even one model fits.
DISK_FAIL = 2 * GiB
#: GPUs with less memory than this get a warning (SDXL at 1024² needs about 8 GiB).
VRAM_WARN = 8 * GiB


class Status(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    """One finding: ``action`` is what the operator should do ("" when nothing)."""

    name: str
    status: Status
    detail: str
    action: str = ""


@dataclass(frozen=True)
class DoctorSettings:
    data_dir: Path
    models_dir: Path
    node_port: int = 8935
    gateway_port: int = 8937
    host: str = "127.0.0.1"
    nvml_lib: Any = None  # a pynvml-like module (tests); None is the real one
    docker: bool = True
    #: the Python runners use when no runtime is set up (from source: this one)
    fallback_python: str | None = None if runtime.frozen() else sys.executable


def _gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB"


# --------------------------------------------------------------------------- GPU checks


def _no_driver_action() -> str:
    return (
        "Orchard runs on the CPU (slowly). With an NVIDIA GPU, install NVIDIA's driver "
        "(Ubuntu: sudo ubuntu-drivers install; others: nvidia.com/drivers) and restart"
    )


def check_driver(inv: GpuInventory) -> Check:
    if inv.driver_version:
        return Check("driver", Status.PASS, f"NVIDIA driver {inv.driver_version}")
    why = f" ({inv.reason})" if inv.reason else ""
    return Check("driver", Status.WARN, f"no NVIDIA driver found{why}", _no_driver_action())


def check_cuda(inv: GpuInventory, platform: str = sys.platform) -> Check:
    if not inv.cuda_version:
        return Check("CUDA", Status.WARN, "no CUDA: no NVIDIA driver", "see the driver check")
    backend, reason = runtime.choose_backend(
        inv.cuda_version, [g.cuda_capability for g in inv.gpus], platform
    )
    detail = f"the driver supports CUDA {inv.cuda_version}; runtime {backend}: {reason}"
    if backend == "cpu":
        return Check("CUDA", Status.WARN, detail, "update the NVIDIA driver to use the GPU")
    return Check("CUDA", Status.PASS, detail)


def check_gpus(inv: GpuInventory) -> Check:
    if not inv.gpus:
        return Check(
            "GPUs",
            Status.WARN,
            inv.error or "no NVIDIA GPU found",
            "jobs run on the CPU; add a GPU, or serve through external runners",
        )
    parts, small = [], []
    for g in inv.gpus:
        cap = (
            f", compute {g.cuda_capability[0]}.{g.cuda_capability[1]}" if g.cuda_capability else ""
        )
        parts.append(f"{g.index}: {g.name} ({_gib(g.memory_total)} VRAM{cap})")
        if g.memory_total < VRAM_WARN:
            small.append(str(g.index))
    detail = "; ".join(parts)
    if small:
        return Check(
            "GPUs",
            Status.WARN,
            detail,
            f"GPU {', '.join(small)} has under {_gib(VRAM_WARN)}: serve small models there "
            "(SD-Turbo at 512²), or leave it out",
        )
    return Check("GPUs", Status.PASS, detail)


# --------------------------------------------------------------------------- runtime


def check_runtime(s: DoctorSettings, inv: GpuInventory) -> Check:
    """Blocking: starts the runtime's Python to import torch and diffusers."""
    info = runtime.read_selection(s.data_dir)
    setup = "orchard runtime setup (or: orchard runtime use /path/to/python)"
    if info is None:
        if s.fallback_python is None:
            return Check("runtime", Status.FAIL, "no GPU runtime is set up", setup)
        python, kind = s.fallback_python, "no runtime set up; runners use this Python"
    else:
        python, kind = info.python, f"{info.kind} runtime {info.backend or ''}".replace("  ", " ")
    try:
        found = runtime.verify(python)
    except runtime.RuntimeSetupError as exc:
        return Check("runtime", Status.FAIL, f"{kind} ({python}): {exc.msg}", setup)
    detail = (
        f"{kind.strip()}: torch {found['torch']}, diffusers {found['diffusers']}, "
        f"CUDA {'yes' if found['cuda_available'] else 'no'} ({python})"
    )
    if inv.gpus and not found["cuda_available"]:
        backend, _ = runtime.choose_backend(inv.cuda_version, [g.cuda_capability for g in inv.gpus])
        action = (
            f"orchard runtime setup --backend {backend}"
            if backend != "cpu"
            else "update the NVIDIA driver, then orchard runtime setup"
        )
        return Check("runtime", Status.WARN, f"{detail}; torch cannot use the GPUs", action)
    if found.get("orchard") and found["orchard"] != core.__version__ and info is not None:
        return Check(
            "runtime",
            Status.WARN,
            f"{detail}; it holds Orchard {found['orchard']}, this is {core.__version__}",
            "orchard runtime setup (updates Orchard in the runtime)",
        )
    return Check("runtime", Status.PASS, detail)


# --------------------------------------------------------------------------- disk, ports, docker


def check_disk(models_dir: Path) -> Check:
    p = Path(models_dir)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        usage = shutil.disk_usage(p)
    except OSError as exc:
        return Check("disk", Status.FAIL, f"cannot read {models_dir}: {exc}", "check the path")
    detail = f"{_gib(usage.free)} free of {_gib(usage.total)} for models in {models_dir}"
    if usage.free < DISK_FAIL:
        return Check(
            "disk",
            Status.FAIL,
            detail,
            "free some space or move the models directory (--models-dir) to a larger disk",
        )
    if usage.free < DISK_WARN:
        return Check(
            "disk",
            Status.WARN,
            detail,
            f"one SDXL model takes about 7 GiB: keep {_gib(DISK_WARN)} free for models",
        )
    return Check("disk", Status.PASS, detail)


def _orchard_service(host: str, port: int) -> str | None:
    """The title of the Orchard service on ``port`` ("Orchard orchestrator"), or None."""
    import httpx

    try:
        resp = httpx.get(f"http://{host}:{port}/openapi.json", timeout=2.0)
        title = resp.json().get("info", {}).get("title", "")
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return title if isinstance(title, str) and title.startswith("Orchard") else None


def check_port(name: str, port: int, host: str = "127.0.0.1") -> Check:
    from core.runners.local import port_is_free

    label = f"port {port}"
    if port_is_free(port, host):
        return Check(label, Status.PASS, f"free for the {name}")
    service = _orchard_service(host, port)
    if service:
        return Check(label, Status.PASS, f"in use by Orchard ({service}, {host}:{port})")
    return Check(
        label,
        Status.FAIL,
        f"in use by another program: the {name} cannot listen on {host}:{port}",
        f"stop that program (Linux: ss -ltnp 'sport = :{port}'), or give the {name} another "
        "port (--port)",
    )


def check_docker() -> Check:
    action = "only the docker runner backend needs it: install Docker Engine or set DOCKER_HOST"
    refused = _unix_socket_refuses()
    if refused:
        return Check("Docker", Status.WARN, f"no Docker engine reachable ({refused})", action)
    try:
        import docker

        client = docker.from_env(timeout=3)
    except Exception as exc:  # the SDK raises DockerException, or OSError, ImportError
        return Check("Docker", Status.WARN, f"no Docker engine reachable ({_short(exc)})", action)
    try:
        version = client.version()
    except Exception as exc:
        return Check("Docker", Status.WARN, f"no Docker engine reachable ({_short(exc)})", action)
    finally:
        with contextlib.suppress(Exception):
            client.close()
    where = client.api.base_url
    return Check("Docker", Status.PASS, f"Docker Engine {version.get('Version', '?')} ({where})")


def _unix_socket_refuses() -> str | None:
    """Why the local engine's socket does not answer, asked with a plain socket: the Docker
    SDK leaks the socket of a connection the engine refused."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://") or not hasattr(socket, "AF_UNIX"):
        return None
    path = host.removeprefix("unix://")
    if not os.path.exists(path):
        return f"no socket at {path}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        try:
            sock.connect(path)
        except OSError as exc:
            return f"{path}: {exc.strerror or exc}"
    return None


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) < 120 else text[:117] + "..."


# --------------------------------------------------------------------------- all of them


async def run_checks(s: DoctorSettings) -> list[Check]:
    """Every check, in a fixed order; the blocking ones in worker threads, all at once."""
    from core import gpus

    inv = await asyncio.to_thread(gpus.probe, s.nvml_lib)
    jobs: list[tuple[str, Callable[[], Check]]] = [
        ("driver", lambda: check_driver(inv)),
        ("CUDA", lambda: check_cuda(inv)),
        ("GPUs", lambda: check_gpus(inv)),
        ("runtime", lambda: check_runtime(s, inv)),
        ("disk", lambda: check_disk(s.models_dir)),
        (f"port {s.node_port}", lambda: check_port("node", s.node_port, s.host)),
        (f"port {s.gateway_port}", lambda: check_port("gateway", s.gateway_port, s.host)),
    ]
    if s.docker:
        jobs.append(("Docker", check_docker))
    waits: list[Awaitable[Check]] = [asyncio.to_thread(job) for _, job in jobs]
    results = await asyncio.gather(*waits, return_exceptions=True)
    out = []
    for (name, _), result in zip(jobs, results, strict=True):
        if isinstance(result, Check):
            out.append(result)
        else:  # a bug in one check must not hide the others
            log.error("doctor check %s failed", name, exc_info=result)
            out.append(Check(name, Status.FAIL, f"the check itself failed: {result!r}"))
    return out


def exit_code(checks: Sequence[Check]) -> int:
    return 1 if any(c.status is Status.FAIL for c in checks) else 0


def format_table(checks: Sequence[Check], width: int = 100) -> str:
    """A table for a terminal: status, check, what was found; the action on the next line."""
    name_w = max([len(c.name) for c in checks] + [5])
    lead = 6 + name_w + 2
    lines = [f"{'':6}{'check':<{name_w}}  found", f"{'':6}{'-' * name_w}  {'-' * 20}"]
    for c in checks:
        mark = {Status.PASS: "ok", Status.WARN: "WARN", Status.FAIL: "FAIL"}[c.status]
        body = textwrap.wrap(c.detail, max(30, width - lead)) or [""]
        lines.append(f"{mark:<6}{c.name:<{name_w}}  {body[0]}")
        lines += [" " * lead + more for more in body[1:]]
        if c.action:
            for i, part in enumerate(textwrap.wrap(f"-> {c.action}", max(30, width - lead))):
                lines.append(" " * lead + ("   " if i else "") + part)
    fails = sum(c.status is Status.FAIL for c in checks)
    warns = sum(c.status is Status.WARN for c in checks)
    lines.append("")
    lines.append(
        f"{len(checks)} checks: {len(checks) - fails - warns} ok, {warns} warning(s), "
        f"{fails} failed"
    )
    return "\n".join(lines)
