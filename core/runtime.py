"""The GPU runtime: the separate Python environment that runners start from.

The app (the GUI and the orchestrator core, frozen by PyInstaller or run from source) never
holds torch. Runners run ``python -m app runner`` with the runtime's Python: a virtual
environment that Orchard creates in ``<data>/runtime/<backend>`` on first run, or an existing
environment the operator points at (:func:`use_existing`). :func:`runtime_python` says which
Python that is, for ``NodeSettings.runner_python``.

Setting one up (:class:`RuntimeInstaller`, an async generator of :class:`SetupProgress`):

1. ``check``: a base Python (3.10 to 3.14, with ``venv``) and enough free disk (per backend
   estimates in :data:`BACKENDS`; fails fast with both numbers).
2. ``venv``: ``python -m venv``.
3. ``pip``: the pinned pip of ``requirements/pip.txt`` (raw progress lines, resumable downloads).
4. ``torch``: the backend's torch build, alone, from PyTorch's index for that build.
5. ``packages``: ``requirements/runtime-<backend>.txt`` from PyPI (every package pinned).
6. ``orchard``: Orchard itself, ``--no-deps``: the wheel shipped in the frozen bundle, or the
   source checkout when Orchard runs from one.
7. ``verify``: ``import torch, diffusers`` and ``python -m app runner --help``.

A marker file in the venv records each finished step, so a run that was cancelled
(``task.cancel()`` kills pip's process group), failed, or died resumes where it stopped;
downloads sit in pip's cache in ``<data>/runtime/pip-cache`` until the runtime is ready.
Failures are typed errors with the action to take: :class:`Offline`, :class:`NotEnoughDisk`,
:class:`PipFailed` (with pip's last lines), :class:`NoBasePython`, :class:`VerifyFailed`.

Which CUDA build (see docs/packaging.md for the sources of this table): the newest build
whose CUDA version the driver supports (NVML's CUDA driver version, the ``CUDA Version`` of
``nvidia-smi``) and whose compiled architectures cover every GPU; CPU otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import core
from core.errors import OrchardError
from core.procstream import StreamedProcess

log = logging.getLogger(__name__)

GB = 1000**3
MB = 1000**2
#: Base Pythons a runtime can be made from (torch 2.13 publishes wheels for these).
PYTHON_RANGE = ((3, 10), (3, 14))
PYPI = "https://pypi.org/simple"
TORCH_INDEX = "https://download.pytorch.org/whl/{backend}"
MARKER = "orchard-runtime.json"
SELECTION = "current.json"


@dataclass(frozen=True)
class Backend:
    """One torch build. Sizes are estimates measured on Linux x86_64 (docs/packaging.md)."""

    name: str
    label: str
    cuda: tuple[int, int] | None  # the CUDA version the build targets; None for the CPU
    min_driver_linux: str | None = None
    min_driver_windows: str | None = None
    #: compute capabilities the build has kernels for, inclusive (major, minor)
    capability: tuple[tuple[int, int], tuple[int, int]] | None = None
    installed_bytes: int = 0  # the venv once ready
    download_bytes: int = 0  # wheels in pip's cache while installing

    @property
    def disk_bytes(self) -> int:
        return self.installed_bytes + self.download_bytes

    def torch_index(self, platform: str = sys.platform) -> str | None:
        """PyTorch's index for this build; None where PyPI's torch is the build (macOS)."""
        return None if platform == "darwin" else TORCH_INDEX.format(backend=self.name)


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        # CPU: measured here (Linux x86_64, Python 3.11): 1.4 GB venv, 0.27 GB of wheels.
        Backend("cpu", "CPU (no GPU)", None, installed_bytes=int(1.5 * GB), download_bytes=GB // 2),
        # CUDA builds: torch + NVIDIA's libraries, 5.6 GB installed, about 3 GB of wheels.
        Backend(
            "cu126", "CUDA 12.6", (12, 6), "560.28.03", "560.76", ((5, 0), (9, 0)), 7 * GB, 4 * GB
        ),
        Backend(
            "cu128", "CUDA 12.8", (12, 8), "570.26", "570.65", ((7, 5), (12, 0)), 7 * GB, 4 * GB
        ),
        Backend(
            "cu130", "CUDA 13.0", (13, 0), "580.65.06", "580.88", ((7, 5), (12, 1)), 7 * GB, 4 * GB
        ),
    )
}


class RuntimeSetupError(OrchardError):
    """Setting up or using the runtime failed; ``msg`` says what to do."""

    def __init__(self, msg: str, output_tail: Sequence[str] = ()) -> None:
        super().__init__(msg)
        self.output_tail = list(output_tail)


class Offline(RuntimeSetupError):
    """pip cannot reach the package index."""


class NotEnoughDisk(RuntimeSetupError):
    """Less free disk than the runtime needs; ``needed`` and ``free`` in bytes."""

    def __init__(self, msg: str, needed: int, free: int) -> None:
        super().__init__(msg)
        self.needed = needed
        self.free = free


class PipFailed(RuntimeSetupError):
    """pip (or venv) exited with an error; ``output_tail`` holds its last lines."""


class NoBasePython(RuntimeSetupError):
    """No Python to create the venv from."""


class VerifyFailed(RuntimeSetupError):
    """The environment cannot import torch and diffusers, or cannot run the runner."""


# --------------------------------------------------------------------------- choosing


@dataclass(frozen=True)
class Proposal:
    """The runtime Orchard proposes for this machine, and why."""

    backend: str
    reason: str
    driver_version: str | None = None
    cuda_version: str | None = None
    gpus: tuple[str, ...] = ()


def _version(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(p) for p in text.split("."))
    except ValueError:
        return None


def choose_backend(
    cuda_version: str | None,
    capabilities: Iterable[tuple[int, int] | None] = (),
    platform: str = sys.platform,
) -> tuple[str, str]:
    """``(backend, reason)`` for a driver that supports CUDA ``cuda_version`` (NVML's
    ``"12.8"``; None without an NVIDIA driver) and GPUs of these compute capabilities."""
    caps = [c for c in capabilities if c is not None]
    if platform == "darwin":
        return "cpu", "macOS has no CUDA: PyTorch's build for macOS (CPU and Apple MPS)"
    driver = _version(cuda_version)
    if driver is None:
        return "cpu", "no NVIDIA driver found: the CPU build"
    fitting = []
    for b in BACKENDS.values():
        if b.cuda is None or b.cuda > driver[:2]:
            continue
        if caps and b.capability and not all(b.capability[0] <= c <= b.capability[1] for c in caps):
            continue
        fitting.append(b)
    if fitting:
        best = max(fitting, key=lambda b: b.cuda or (0, 0))
        return best.name, f"the driver supports CUDA {cuda_version}: torch built for {best.label}"
    oldest = min((b for b in BACKENDS.values() if b.cuda), key=lambda b: b.cuda or (0, 0))
    if driver[:2] < (oldest.cuda or (0, 0)):
        driver_min = oldest.min_driver_windows if platform == "win32" else oldest.min_driver_linux
        return "cpu", (
            f"the driver supports CUDA {cuda_version}, older than any torch build for GPUs "
            f"({oldest.label}): the CPU build; update the NVIDIA driver to {driver_min} or "
            "newer to use the GPU"
        )
    shown = ", ".join(f"{c[0]}.{c[1]}" for c in sorted(set(caps)))
    return "cpu", f"no torch build supports GPUs of compute capability {shown}: the CPU build"


async def propose(lib: Any | None = None, platform: str = sys.platform) -> Proposal:
    """Probe the driver through NVML (off the loop) and choose a backend for it."""
    from core import gpus

    inventory = await asyncio.to_thread(gpus.probe, lib)
    backend, reason = choose_backend(
        inventory.cuda_version, [g.cuda_capability for g in inventory.gpus], platform
    )
    return Proposal(
        backend,
        reason,
        inventory.driver_version,
        inventory.cuda_version,
        tuple(f"{g.name} ({g.memory_total / 1024**3:.0f} GiB)" for g in inventory.gpus),
    )


# --------------------------------------------------------------------------- where things are


def runtime_root(data_dir: Path) -> Path:
    return Path(data_dir) / "runtime"


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def frozen() -> bool:
    return bool(getattr(sys, "frozen", False))


def bundle_dir() -> Path:
    """Where the frozen bundle's data files are, or the source checkout's root."""
    return Path(getattr(sys, "_MEIPASS", Path(core.__file__).resolve().parent.parent))


def requirements_dir() -> Path:
    return bundle_dir() / "requirements"


def orchard_source() -> Path:
    """What pip installs Orchard from: ``ORCHARD_WHEEL``, the bundle's wheel, or the source
    checkout (pyproject.toml) when Orchard runs from one."""
    env = os.environ.get("ORCHARD_WHEEL")
    if env:
        return Path(env)
    wheels = sorted((bundle_dir() / "wheels").glob(f"orchard-{core.__version__}-*.whl"))
    if wheels:
        return wheels[-1]
    root = bundle_dir()
    if (root / "pyproject.toml").is_file():
        return root
    raise RuntimeSetupError(
        f"this Orchard has neither its wheel (in {root / 'wheels'}) nor its source: reinstall "
        "Orchard, or set ORCHARD_WHEEL to an orchard-*.whl"
    )


def clean_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` for a Python that is not part of the frozen app: without the library path and
    the variables PyInstaller's bootloader and hooks set, and without PYTHONPATH/PYTHONHOME."""
    env = dict(os.environ if env is None else env)
    if "LD_LIBRARY_PATH_ORIG" in env:
        env["LD_LIBRARY_PATH"] = env.pop("LD_LIBRARY_PATH_ORIG")
    elif frozen():
        env.pop("LD_LIBRARY_PATH", None)
    for key in list(env):
        if key.startswith(("_PYI", "_MEI", "QT_PLUGIN_PATH", "QML2_IMPORT_PATH")):
            del env[key]
    for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__"):
        env.pop(key, None)
    return env


# --------------------------------------------------------------------------- the selection


@dataclass(frozen=True)
class RuntimeInfo:
    """The runtime runners start from (``<data>/runtime/current.json``)."""

    kind: str  # "venv" (set up by Orchard) or "external" (orchard runtime use)
    python: str
    backend: str | None
    torch: str
    cuda: str | None
    cuda_available: bool
    diffusers: str
    orchard: str | None

    @property
    def outdated(self) -> bool:
        """Orchard in the runtime is another version than this app."""
        return self.orchard is not None and self.orchard != core.__version__


def read_selection(data_dir: Path) -> RuntimeInfo | None:
    path = runtime_root(data_dir) / SELECTION
    try:
        data = json.loads(path.read_text())
        return RuntimeInfo(**data)
    except (OSError, ValueError, TypeError):
        return None


def runtime_python(data_dir: Path) -> str | None:
    """The Python runners start from (for ``NodeSettings.runner_python``), or None when no
    runtime is set up or its Python is gone."""
    info = read_selection(data_dir)
    if info is None or not Path(info.python).exists():
        return None
    return info.python


class NoRuntime(RuntimeSetupError):
    """A frozen Orchard has no runtime to start runners from."""


def runner_python(data_dir: Path) -> str:
    """The Python runners start from: the runtime's; without one, this Python when Orchard
    runs from source (it has torch there). A frozen app without a runtime raises
    :class:`NoRuntime`, whose message says how to set one up."""
    python = runtime_python(data_dir)
    if python:
        return python
    if not frozen():
        return sys.executable
    raise NoRuntime(
        "no GPU runtime is set up, so no runner can start: run `orchard runtime setup` "
        "(or `orchard runtime use /path/to/python`), or set it up from the app's first-run page"
    )


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _select(data_dir: Path, info: RuntimeInfo) -> None:
    _write_json(runtime_root(data_dir) / SELECTION, asdict(info))


VERIFY = """\
import json, sys
import torch, diffusers
try:
    import core
    orchard = core.__version__
except ImportError:
    orchard = None
print("ORCHARD-VERIFY " + json.dumps({
    "torch": torch.__version__, "cuda": torch.version.cuda,
    "cuda_available": bool(torch.cuda.is_available()), "diffusers": diffusers.__version__,
    "orchard": orchard}))
"""


def _probe_env(python: str) -> dict[str, str]:
    env = clean_env()
    if not frozen() and (bundle_dir() / "pyproject.toml").is_file():
        env["PYTHONPATH"] = str(bundle_dir())  # as LocalRunner does for a source checkout
    return env


def verify(python: str, timeout: float = 300.0) -> dict[str, Any]:
    """Check that ``python`` imports torch and diffusers and runs ``-m app runner --help``;
    what it reports. Blocking: call it through ``asyncio.to_thread``."""
    env = _probe_env(python)
    try:
        out = subprocess.run(
            [python, "-c", VERIFY], capture_output=True, text=True, env=env, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VerifyFailed(f"cannot run {python}: {exc}") from exc
    lines = (out.stdout + out.stderr).splitlines()
    report = next((ln for ln in out.stdout.splitlines() if ln.startswith("ORCHARD-VERIFY ")), "")
    if out.returncode != 0 or not report:
        missing = re.search(r"No module named '([\w.]+)'", out.stderr)
        what = f"it lacks {missing.group(1)}" if missing else "importing them failed"
        raise VerifyFailed(
            f"{python} cannot import torch and diffusers ({what}): install them there "
            "(see requirements/runtime-*.txt), or let Orchard set up its own runtime "
            "(orchard runtime setup)",
            lines[-15:],
        )
    data: dict[str, Any] = json.loads(report.split(" ", 1)[1])
    try:
        run = subprocess.run(
            [python, "-m", "app", "runner", "--help"],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VerifyFailed(f"cannot run {python} -m app runner: {exc}") from exc
    if run.returncode != 0:
        try:
            source = str(orchard_source())
        except RuntimeSetupError:
            source = "orchard-<version>-py3-none-any.whl"
        raise VerifyFailed(
            f"{python} has torch and diffusers but cannot run Orchard's runner "
            f"(`python -m app runner --help` failed): install Orchard there with "
            f"`{python} -m pip install --no-deps {source}`",
            (run.stdout + run.stderr).splitlines()[-15:],
        )
    return data


async def use_existing(data_dir: Path, python: str | Path) -> RuntimeInfo:
    """Validate an existing environment's Python and make it the runtime."""
    path = Path(python).expanduser()
    if not path.exists():
        raise VerifyFailed(f"{path} does not exist: give the path of a python executable")
    data = await asyncio.to_thread(verify, str(path))
    info = RuntimeInfo(kind="external", python=str(path), backend=None, **data)
    await asyncio.to_thread(_select, data_dir, info)
    return info


def installed_runtimes(data_dir: Path) -> dict[str, list[str]]:
    """{backend: finished steps} of every runtime venv under ``<data>/runtime``."""
    out = {}
    root = runtime_root(data_dir)
    for marker in sorted(root.glob(f"*/{MARKER}")):
        with contextlib.suppress(OSError, ValueError):
            out[marker.parent.name] = list(json.loads(marker.read_text()).get("steps", {}))
    return out


# --------------------------------------------------------------------------- base Python


def _python_version(python: str) -> tuple[int, int] | None:
    """The version of ``python`` if it can make a venv with pip (venv and ensurepip)."""
    code = "import sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2])"
    try:
        out = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=30, env=clean_env()
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    major, _, minor = out.stdout.strip().partition(".")
    return int(major), int(minor)


def _installed_pythons(platform: str = sys.platform) -> list[str]:
    """Pythons on PATH, newest first, then where python.org's and Homebrew's installers put
    them (an app started from the macOS Finder or the Windows Start menu has a short PATH)."""
    low, high = PYTHON_RANGE
    minors = range(high[1], low[1] - 1, -1)
    names = [f"python3.{m}" for m in minors] + ["python3", "python"]
    found = [p for n in names if (p := shutil.which(n))]
    places: list[Path] = []
    if platform == "darwin":
        for m in minors:
            places.append(Path(f"/Library/Frameworks/Python.framework/Versions/3.{m}/bin/python3"))
            places += [Path(f"/opt/homebrew/bin/python3.{m}"), Path(f"/usr/local/bin/python3.{m}")]
    elif platform == "win32":
        local = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
        program_files = Path(os.environ.get("PROGRAMFILES", "C:/Program Files"))
        for m in minors:
            places.append(local / "Programs" / "Python" / f"Python3{m}" / "python.exe")
            places.append(program_files / f"Python3{m}" / "python.exe")
    found += [str(p) for p in places if p.is_file()]
    return found


def find_base_python(explicit: str | None = None) -> str:
    """A Python to create the venv from: ``explicit``, ``ORCHARD_BASE_PYTHON``, the Python
    running Orchard (from source), then ``python3.14`` ... ``python3`` on PATH. Blocking."""
    candidates: list[str] = []
    for c in (explicit, os.environ.get("ORCHARD_BASE_PYTHON")):
        if c:
            candidates.append(c)
    if explicit is None and not frozen():
        candidates.append(getattr(sys, "_base_executable", "") or sys.executable)
    if explicit is None:
        candidates += _installed_pythons()
    seen = []
    for cand in candidates:
        if cand in seen:
            continue
        seen.append(cand)
        version = _python_version(cand)
        if version is not None and PYTHON_RANGE[0] <= version <= PYTHON_RANGE[1]:
            return cand
    low, high = PYTHON_RANGE
    tried = ", ".join(seen) or "none on PATH"
    hint = (
        "on Debian or Ubuntu: sudo apt install python3 python3-venv"
        if sys.platform.startswith("linux")
        else "install Python from python.org"
    )
    raise NoBasePython(
        f"no Python {low[0]}.{low[1]} to {high[0]}.{high[1]} with venv and pip was found "
        f"(tried: {tried}): {hint}; or give one with --python, or point Orchard at an "
        "existing environment (orchard runtime use /path/to/python)"
    )


# --------------------------------------------------------------------------- setting up


class Step(StrEnum):
    CHECK = "check"
    VENV = "venv"
    PIP = "pip"
    TORCH = "torch"
    PACKAGES = "packages"
    ORCHARD = "orchard"
    VERIFY = "verify"


STEP_TEXT = {
    Step.CHECK: "checking Python and disk space",
    Step.VENV: "creating the virtual environment",
    Step.PIP: "updating pip",
    Step.TORCH: "installing PyTorch",
    Step.PACKAGES: "installing diffusers and the other packages",
    Step.ORCHARD: "installing Orchard's runner",
    Step.VERIFY: "checking that torch and the runner work",
}


@dataclass(frozen=True)
class SetupProgress:
    """One status value of a setup. Byte counts are those of the file being downloaded
    (None when nothing is); ``eta_s`` is that download's time left."""

    step: Step
    index: int
    steps: int
    message: str
    file: str | None = None
    bytes_done: int | None = None
    bytes_total: int | None = None
    eta_s: float | None = None
    skipped: bool = False  # done by an earlier run: resumed past it
    finished: bool = False  # the last value: the runtime is ready

    @property
    def fraction(self) -> float | None:
        if self.bytes_done is None or not self.bytes_total:
            return None
        return min(1.0, self.bytes_done / self.bytes_total)


@dataclass(frozen=True)
class PipSettings:
    """How pip reaches packages. ``index_url`` replaces every index (PyPI and PyTorch's);
    ``isolated`` ignores pip's configuration files and PIP_* variables."""

    index_url: str | None = None
    isolated: bool = False
    cache: bool = True
    retries: int | None = None
    timeout_s: float | None = None


_SIZE = re.compile(r"\(([\d.]+)\s*(kB|MB|GB|bytes)\)")
_UNITS = {"bytes": 1, "kB": 1000, "MB": MB, "GB": GB}
_HOST = re.compile(r"host='([^']+)', port=(\d+)")
_NETWORK = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Connection refused",
    "NameResolutionError",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "No route to host",
    "ConnectTimeoutError",
    "ProxyError",
    "Could not fetch URL",
    "Read timed out",
)
_NOT_FOUND = ("No matching distribution found", "Could not find a version that satisfies")


class _Download:
    """pip's output turned into download progress (``Downloading x (12 MB)``, then
    ``Progress N of M`` lines from ``--progress-bar raw``)."""

    def __init__(self) -> None:
        self.file: str | None = None
        self.done: int | None = None
        self.total: int | None = None
        self._rate: deque[tuple[float, int]] = deque(maxlen=40)

    def feed(self, line: str, now: float) -> bool:
        """Take one line; whether the progress changed."""
        text = line.strip()
        if text.startswith("Downloading "):
            name = text[len("Downloading ") :].split(" (")[0].rsplit("/", 1)[-1]
            size = _SIZE.search(text)
            self.file = name
            self.done = 0
            self.total = int(float(size.group(1)) * _UNITS[size.group(2)]) if size else None
            self._rate.clear()
            return True
        if text.startswith("Progress ") and " of " in text:
            try:
                done, total = (int(v) for v in text[len("Progress ") :].split(" of "))
            except ValueError:
                return False
            self.done = done
            self.total = total or self.total
            self._rate.append((now, done))
            return True
        return False

    def eta(self) -> float | None:
        if self.done is None or not self.total or len(self._rate) < 2:
            return None
        (t0, b0), (t1, b1) = self._rate[0], self._rate[-1]
        if t1 <= t0 or b1 <= b0:
            return None
        return max(0.0, (self.total - self.done) / ((b1 - b0) / (t1 - t0)))


def _free_bytes(path: Path) -> int:
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def _fmt(n: int) -> str:
    if n >= GB:
        return f"{n / GB:.1f} GB"
    return f"{n / MB:.0f} MB" if n >= MB else f"{n / 1000:.0f} kB"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Process(StreamedProcess):
    """pip (or another setup command) with its output as text lines, stderr merged in."""

    def __init__(self, cmd: Sequence[str], env: Mapping[str, str]) -> None:
        super().__init__(cmd, env, merge_stderr=True, name="runtime-pip")

    @property
    def tail(self) -> deque[str]:  # type: ignore[override]
        return self.stdout_tail

    async def lines(self) -> AsyncIterator[str]:  # type: ignore[override]
        async for text, _transient, _stream in super().lines():
            yield text


@dataclass
class _Marker:
    path: Path
    backend: str
    steps: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, backend: str) -> _Marker:
        try:
            data = json.loads(path.read_text())
            if data.get("backend") == backend:
                return cls(path, backend, dict(data.get("steps", {})))
        except (OSError, ValueError, AttributeError):
            pass
        return cls(path, backend)

    def save(self) -> None:
        _write_json(self.path, {"backend": self.backend, "steps": self.steps})


class RuntimeInstaller:
    """Sets up the ``backend`` runtime in ``<data_dir>/runtime/<backend>``.

    ``async for progress in installer.run(): ...`` yields :class:`SetupProgress` values and
    raises a :class:`RuntimeSetupError` on failure. Cancel the task running it to stop: pip is
    killed, and the next run resumes. ``free_bytes`` replaces the disk's free space (tests).
    """

    def __init__(
        self,
        data_dir: Path,
        backend: str,
        *,
        base_python: str | None = None,
        pip: PipSettings | None = None,
        requirements: Path | None = None,
        orchard: Path | None = None,
        free_bytes: int | None = None,
        keep_cache: bool = False,
        platform: str = sys.platform,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.data_dir = Path(data_dir)
        self.backend = BACKENDS[backend]
        self.base_python = base_python
        self.pip = pip or PipSettings()
        self.requirements = requirements or requirements_dir()
        self._orchard = orchard
        self.free_bytes = free_bytes
        self.keep_cache = keep_cache
        self.platform = platform
        self.venv = runtime_root(self.data_dir) / backend
        self.cache_dir = runtime_root(self.data_dir) / "pip-cache"
        self.python = venv_python(self.venv)

    # ------------------------------------------------------------------ public
    async def run(self) -> AsyncIterator[SetupProgress]:
        marker = _Marker.load(self.venv / MARKER, self.backend.name)
        if marker.steps and not self.python.exists():
            marker.steps.clear()
        steps = list(Step)
        redo = False  # once one step runs, every later step runs too
        for index, step in enumerate(steps, 1):
            key = await asyncio.to_thread(self._key, step)
            done = marker.steps.get(step)
            if not redo and step not in (Step.CHECK, Step.VERIFY) and done == key:
                yield SetupProgress(step, index, len(steps), STEP_TEXT[step], skipped=True)
                continue
            if step not in (Step.CHECK, Step.VERIFY):
                redo = True
            yield SetupProgress(step, index, len(steps), STEP_TEXT[step])
            async for progress in self._do(step, index, len(steps), marker):
                yield progress
            if step is not Step.CHECK:
                marker.steps[step] = key
                await asyncio.to_thread(marker.save)
        if not self.keep_cache:
            await asyncio.to_thread(shutil.rmtree, self.cache_dir, True)
        yield SetupProgress(
            Step.VERIFY,
            len(steps),
            len(steps),
            f"the {self.backend.label} runtime is ready",
            finished=True,
        )

    # ------------------------------------------------------------------ steps
    def _requirement_file(self) -> Path:
        return self.requirements / f"runtime-{self.backend.name}.txt"

    def _torch_requirement(self) -> str:
        """The torch line of the requirement file that applies on this platform."""
        for line in self._requirement_file().read_text().splitlines():
            req, _, marker = line.partition(";")
            if not req.strip().startswith("torch=="):
                continue
            if marker.strip():
                want = self.platform == "darwin"
                if ('== "darwin"' in marker) != want:
                    continue
            return req.strip()
        raise RuntimeSetupError(f"{self._requirement_file()} pins no torch")

    def _key(self, step: Step) -> Any:
        """What a finished step depends on; a change reruns it. Blocking (reads files)."""
        if step is Step.VENV:
            return {"base": self.base_python or "auto"}
        if step is Step.PIP:
            return (self.requirements / "pip.txt").read_text().split()[-1]
        if step is Step.TORCH:
            return self._torch_requirement()
        if step is Step.PACKAGES:
            return _sha256(self._requirement_file())
        if step is Step.ORCHARD:
            source = self._orchard or orchard_source()
            return f"{core.__version__} {source.name}"
        return None

    async def _do(
        self, step: Step, index: int, steps: int, marker: _Marker
    ) -> AsyncIterator[SetupProgress]:
        if step is Step.CHECK:
            await self._check(marker)
        elif step is Step.VENV:
            await asyncio.to_thread(shutil.rmtree, self.venv, True)
            base = await asyncio.to_thread(find_base_python, self.base_python)
            self.venv.parent.mkdir(parents=True, exist_ok=True)
            async for p in self._run(step, index, steps, [base, "-m", "venv", str(self.venv)]):
                yield p
        elif step is Step.PIP:
            pin = (self.requirements / "pip.txt").read_text().split()[-1]
            async for p in self._pip(step, index, steps, [pin], raw=False):
                yield p
        elif step is Step.TORCH:
            index_url = self.backend.torch_index(self.platform)
            args = ["--no-deps", self._torch_requirement()]
            async for p in self._pip(step, index, steps, args, index_url=index_url):
                yield p
        elif step is Step.PACKAGES:
            args = ["-r", str(self._requirement_file())]
            async for p in self._pip(step, index, steps, args):
                yield p
        elif step is Step.ORCHARD:
            source = self._orchard or orchard_source()
            args = ["--no-deps", "--force-reinstall", str(source)]
            async for p in self._pip(step, index, steps, args):
                yield p
        elif step is Step.VERIFY:
            data = await asyncio.to_thread(verify, str(self.python))
            if self.backend.cuda and not data["cuda_available"]:
                raise VerifyFailed(
                    f"torch {data['torch']} is installed but cannot use the GPU: check the "
                    f"NVIDIA driver ({self.backend.label} needs {self.backend.min_driver_linux}"
                    " or newer on Linux) with `orchard doctor`, or set up the CPU runtime"
                )
            info = RuntimeInfo("venv", str(self.python), self.backend.name, **data)
            await asyncio.to_thread(_select, self.data_dir, info)

    async def _check(self, marker: _Marker) -> None:
        await asyncio.to_thread(find_base_python, self.base_python)
        if self.free_bytes is not None:
            free = self.free_bytes
        else:
            free = await asyncio.to_thread(_free_bytes, self.venv)
        b = self.backend
        needed = b.disk_bytes if Step.PACKAGES not in marker.steps else 200 * MB
        if free < needed:
            raise NotEnoughDisk(
                f"not enough disk space for the {b.label} runtime in {self.venv}: it needs "
                f"about {_fmt(needed)} ({_fmt(b.installed_bytes)} installed plus "
                f"{_fmt(b.download_bytes)} of downloads while installing) and "
                f"{_fmt(free)} is free: free some space, or move Orchard's data directory "
                "(ORCHARD_HOME) to a larger disk",
                needed,
                free,
            )

    def _pip_env(self) -> dict[str, str]:
        env = clean_env()
        env["PYTHONUNBUFFERED"] = "1"
        env["PIP_NO_INPUT"] = "1"
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        if self.pip.isolated:
            for key in [k for k in env if k.startswith("PIP_")]:
                del env[key]
            env["PIP_CONFIG_FILE"] = os.devnull
        return env

    def _pip(
        self,
        step: Step,
        index: int,
        steps: int,
        args: list[str],
        *,
        index_url: str | None = None,
        raw: bool = True,
    ) -> AsyncIterator[SetupProgress]:
        cmd = [str(self.python), "-m", "pip", "install", "--no-input"]
        if self.pip.isolated:
            cmd.append("--isolated")
        cmd += ["--progress-bar", "raw"] if raw else []
        if self.pip.cache:
            cmd += ["--cache-dir", str(self.cache_dir)]
        else:
            cmd.append("--no-cache-dir")
        if self.pip.retries is not None:
            cmd += ["--retries", str(self.pip.retries)]
        if self.pip.timeout_s is not None:
            cmd += ["--timeout", str(self.pip.timeout_s)]
        index_url = self.pip.index_url or index_url
        if index_url:
            cmd += ["--index-url", index_url]
        return self._run(step, index, steps, cmd + args, pip_index=index_url or PYPI)

    async def _run(
        self, step: Step, index: int, steps: int, cmd: list[str], pip_index: str | None = None
    ) -> AsyncIterator[SetupProgress]:
        log.debug("runtime %s: %s", step, " ".join(cmd))
        proc = _Process(cmd, self._pip_env())
        download = _Download()
        last = 0.0
        async for line in proc.lines():
            log.debug("%s: %s", step, line)
            now = time.monotonic()
            if line.startswith("Installing collected packages"):
                count = len(line.split(":", 1)[1].split(","))
                yield SetupProgress(step, index, steps, f"installing {count} package(s)")
            elif download.feed(line, now) and (
                now - last > 0.25 or line.startswith("Downl") or download.done == download.total
            ):
                last = now
                yield SetupProgress(
                    step,
                    index,
                    steps,
                    f"downloading {download.file}" if download.file else STEP_TEXT[step],
                    download.file,
                    download.done,
                    download.total,
                    download.eta(),
                )
        if proc.returncode != 0:
            tail = list(proc.tail)
            raise await asyncio.to_thread(_failure, step, cmd, proc.returncode, tail, pip_index)


def _unreachable(url: str, timeout: float = 5.0) -> str | None:
    """Why ``url``'s host cannot be reached (a TCP connection), or None if it can. Blocking.
    Behind a proxy (``HTTPS_PROXY``...) this says nothing: only pip knows the way there."""
    from urllib.parse import urlsplit

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as exc:
        return f"{parts.hostname}:{port}: {exc.strerror or exc}"
    return None


def _failure(
    step: Step, cmd: list[str], code: int | None, tail: list[str], index: str | None
) -> RuntimeSetupError:
    """The error for a failed step, from pip's last lines (blocking: may probe the index)."""
    text = "\n".join(tail)
    network = any(p in text for p in _NETWORK)
    why = None
    if index and not network and any(p in text for p in _NOT_FOUND):
        why = _unreachable(index)  # pip says no more than "no versions" without retries
    if index and "CERTIFICATE_VERIFY_FAILED" in text:
        return Offline(
            f"cannot reach the package index ({index}) securely: its certificate is not "
            "trusted (a proxy that intercepts HTTPS?): give pip that proxy's CA certificate "
            "(PIP_CERT=/path/to/ca.pem), or point Orchard at an existing Python environment "
            "(orchard runtime use /path/to/python)",
            tail[-15:],
        )
    if index and (network or why):
        host = _HOST.search(text)
        where = f"{index}, {host.group(1)}:{host.group(2)}" if host else index
        if why and not host:
            where = f"{index}, {why}"
        return Offline(
            f"cannot reach the package index ({where}): check the network or point Orchard "
            "at an existing Python environment (orchard runtime use /path/to/python)",
            tail[-15:],
        )
    if "ensurepip" in text:
        return PipFailed(
            "the base Python cannot create a virtual environment with pip (no ensurepip): "
            "on Debian or Ubuntu, sudo apt install python3-venv",
            tail[-15:],
        )
    if any(p in text for p in _NOT_FOUND):
        what = "a package this runtime pins is not available for this Python and platform"
        return PipFailed(f"{step} failed: {what}; pip said:\n{text_tail(tail)}", tail[-15:])
    if "No space left on device" in text:
        return PipFailed(f"{step} failed: the disk is full; pip said:\n{text_tail(tail)}", tail)
    return PipFailed(
        f"{step} failed ({cmd[0]} ... exited with {code}); pip said:\n{text_tail(tail)}",
        tail[-15:],
    )


def text_tail(lines: Sequence[str], n: int = 10) -> str:
    return "\n".join(f"  {ln}" for ln in list(lines)[-n:])


def format_progress(p: SetupProgress) -> str:
    """One line for a terminal: ``[4/7] torch: downloading torch-...whl 120 MB of 800 MB,
    1 min left``."""
    text = f"[{p.index}/{p.steps}] {p.step}: {p.message}"
    if p.skipped:
        return text + " (done before)"
    if p.bytes_done is not None and p.bytes_total:
        text += f" {_fmt(p.bytes_done)} of {_fmt(p.bytes_total)}"
    if p.eta_s is not None:
        text += f", {p.eta_s:.0f} s left" if p.eta_s < 120 else f", {p.eta_s / 60:.0f} min left"
    return text
