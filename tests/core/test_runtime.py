"""The GPU runtime: choosing a torch build, the pinned requirement files, progress, and the
setup for real (a venv, pip, the local CPU torch) with its failure paths: no index, no disk,
cancel and resume."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import re
import subprocess
import sys
import threading
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import core
from core import runtime
from core.runtime import (
    BACKENDS,
    MB,
    NoBasePython,
    NotEnoughDisk,
    Offline,
    PipSettings,
    RuntimeInstaller,
    SetupProgress,
    Step,
)
from tests.conftest import ROOT, free_port

REQS = ROOT / "requirements"
UNREACHABLE = "http://127.0.0.1:9/simple"


# --------------------------------------------------------------------------- choosing a build


@pytest.mark.parametrize(
    ("cuda", "caps", "platform", "want"),
    [
        (None, [], "linux", "cpu"),
        ("12.4", [(8, 9)], "linux", "cpu"),  # older than every CUDA build
        ("12.6", [(8, 9)], "linux", "cu126"),
        ("12.7", [(8, 6)], "linux", "cu126"),  # no cu127: the newest not newer than 12.7
        ("12.8", [(8, 9)], "linux", "cu128"),
        ("12.9", [(9, 0)], "win32", "cu128"),
        ("13.0", [(8, 9)], "linux", "cu130"),
        ("13.1", [(8, 9), (9, 0)], "linux", "cu130"),
        ("13.0", [(6, 1)], "linux", "cu126"),  # Pascal: only the 12.6 build has its kernels
        ("12.8", [(12, 0)], "linux", "cu128"),  # Blackwell needs 12.8 or newer
        ("12.6", [(12, 0)], "linux", "cpu"),
        ("13.0", [(8, 9)], "darwin", "cpu"),
        ("13.0", [None], "linux", "cu130"),  # capability unknown: the driver decides
    ],
)
def test_choose_backend(
    cuda: str | None, caps: list[tuple[int, int] | None], platform: str, want: str
) -> None:
    backend, reason = runtime.choose_backend(cuda, caps, platform)
    assert backend == want, reason
    assert reason


def test_an_old_driver_is_told_which_driver_to_install() -> None:
    _, reason = runtime.choose_backend("12.2", [(8, 6)], "linux")
    assert "560.28.03" in reason and "update the NVIDIA driver" in reason


async def test_propose_on_this_machine_reads_nvml_off_the_loop() -> None:
    proposal = await runtime.propose()  # the real NVML: no driver here, so the CPU build
    assert proposal.backend in BACKENDS
    if proposal.driver_version is None:
        assert proposal.backend == "cpu" and "no NVIDIA driver" in proposal.reason


# --------------------------------------------------------------------------- requirement files


def _pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        req = line.split(";")[0].strip()
        if req and not req.startswith("#"):
            name, _, version = req.partition("==")
            out[name.lower().replace("_", "-")] = version
    return out


def test_every_runtime_file_pins_pyproject_versions() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    direct = [*project["dependencies"], *project["optional-dependencies"]["runner"]]
    torch = next(r.split("==")[1] for r in direct if r.startswith("torch=="))
    for name in BACKENDS:
        pins = _pins(REQS / f"runtime-{name}.txt")
        for req in direct:
            pkg, _, version = req.partition("==")
            key = pkg.lower().replace("_", "-")
            if key == "torch":
                suffix = "" if name == "cpu" else f"+{name}"
                assert pins["torch"] in (f"{version}{suffix}", f"{version}+cpu"), name
            else:
                assert pins.get(key) == version, f"{name}: {pkg} pinned {pins.get(key)}"
        assert all(v for v in pins.values()), f"{name}: every line pins a version"
        assert torch in pins["torch"]
    assert re.fullmatch(r"pip==[\d.]+", (REQS / "pip.txt").read_text().split()[-1])


def test_the_cpu_file_takes_pypis_torch_on_macos() -> None:
    inst = RuntimeInstaller(Path("/nonexistent"), "cpu", platform="darwin")
    assert inst._torch_requirement() == "torch==2.13.0"
    assert BACKENDS["cpu"].torch_index("darwin") is None
    linux = RuntimeInstaller(Path("/nonexistent"), "cpu", platform="linux")
    assert linux._torch_requirement() == "torch==2.13.0+cpu"
    assert BACKENDS["cu128"].torch_index("linux") == "https://download.pytorch.org/whl/cu128"


# --------------------------------------------------------------------------- progress and errors


PIP_LINES = [
    "Collecting torch==2.13.0+cu128",
    "  Downloading https://download.pytorch.org/whl/cu128/torch-2.13.0%2Bcu128-cp311-cp311-"
    "manylinux_2_28_x86_64.whl (1012.5 MB)",
    "Progress 0 of 1012500000",
    "Progress 100000000 of 1012500000",
    "Progress 300000000 of 1012500000",
]


def test_pip_download_lines_become_bytes_and_time_left() -> None:
    d = runtime._Download()
    assert d.feed(PIP_LINES[0], 0.0) is False
    assert d.feed(PIP_LINES[1], 0.0)
    assert d.file == "torch-2.13.0%2Bcu128-cp311-cp311-manylinux_2_28_x86_64.whl"
    assert d.total == 1_012_500_000 and d.done == 0
    for t, line in enumerate(PIP_LINES[2:]):
        assert d.feed(line, float(t * 10))
    assert d.done == 300_000_000
    # 300 MB in 20 s: 15 MB/s, 712.5 MB left
    assert d.eta() == pytest.approx(712.5 / 15, rel=1e-3)
    p = SetupProgress(Step.TORCH, 4, 7, "downloading", d.file, d.done, d.total, d.eta())
    assert p.fraction == pytest.approx(0.296, abs=1e-3)
    assert runtime.format_progress(p) == ("[4/7] torch: downloading 300 MB of 1.0 GB, 48 s left")


def test_skipped_steps_say_so() -> None:
    p = SetupProgress(Step.VENV, 2, 7, runtime.STEP_TEXT[Step.VENV], skipped=True)
    assert runtime.format_progress(p).endswith("(done before)")


def test_failures_are_told_apart_from_pips_output() -> None:
    offline = runtime._failure(
        Step.PIP,
        ["python"],
        1,
        [
            "WARNING: Retrying (Retry(total=0)) after connection broken by 'NewConnectionError("
            "\"HTTPConnection(host='10.1.2.3', port=3128): Failed to establish a new connection: "
            "[Errno 111] Connection refused\")': /simple/pip/",
            "ERROR: No matching distribution found for pip==26.3",
        ],
        "https://pypi.org/simple",
    )
    assert isinstance(offline, Offline)
    assert "cannot reach the package index (https://pypi.org/simple, 10.1.2.3:3128)" in offline.msg
    assert "orchard runtime use" in offline.msg
    tls = runtime._failure(
        Step.PIP,
        ["python"],
        1,
        [
            "Could not fetch URL https://pypi.org/simple/pip/: There was a problem confirming "
            "the ssl certificate: ... [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
            "failed: self-signed certificate in certificate chain (_ssl.c:992)'))) - skipping",
            "ERROR: No matching distribution found for pip==26.3",
        ],
        PYPI,
    )
    assert isinstance(tls, Offline) and "PIP_CERT=" in tls.msg
    venv = runtime._failure(Step.VENV, ["python3"], 1, ["Error: ensurepip is not available"], None)
    assert "apt install python3-venv" in venv.msg
    other = runtime._failure(Step.PACKAGES, ["python"], 2, ["x"] * 30 + ["ERROR: boom"], PYPI)
    assert type(other) is runtime.PipFailed
    assert "ERROR: boom" in other.msg and other.output_tail[-1] == "ERROR: boom"


PYPI = runtime.PYPI


# --------------------------------------------------------------------------- the selection


def test_runtime_python_follows_the_selection(tmp_path: Path) -> None:
    assert runtime.runtime_python(tmp_path) is None
    info = runtime.RuntimeInfo(
        "external", sys.executable, None, "2.13.0+cpu", None, False, "0.42.1", None
    )
    runtime._select(tmp_path, info)
    assert runtime.runtime_python(tmp_path) == sys.executable
    assert runtime.read_selection(tmp_path) == info
    gone = runtime.RuntimeInfo(
        "venv", str(tmp_path / "nope" / "python"), "cpu", "x", None, False, "y", "0.0.1"
    )
    runtime._select(tmp_path, gone)
    assert runtime.runtime_python(tmp_path) is None
    assert gone.outdated
    (runtime.runtime_root(tmp_path) / runtime.SELECTION).write_text("{not json")
    assert runtime.runtime_python(tmp_path) is None


def test_a_python_outside_the_bundle_gets_a_clean_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        "LD_LIBRARY_PATH": "/opt/orchard/_internal",
        "LD_LIBRARY_PATH_ORIG": "/usr/local/lib",
        "_PYI_APPLICATION_HOME_DIR": "/opt/orchard/_internal",
        "_MEIPASS2": "/tmp/x",
        "QT_PLUGIN_PATH": "/opt/orchard/_internal/PySide6/Qt/plugins",
        "PYTHONPATH": "/somewhere",
        "HOME": "/home/me",
    }
    assert runtime.clean_env(env) == {"LD_LIBRARY_PATH": "/usr/local/lib", "HOME": "/home/me"}
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert runtime.clean_env({"LD_LIBRARY_PATH": "/opt/orchard/_internal"}) == {}


async def test_use_an_existing_environment(tmp_path: Path) -> None:
    # This test's own Python has torch and diffusers, and runs the runner from the checkout.
    info = await runtime.use_existing(tmp_path, sys.executable)
    assert info.kind == "external" and info.torch.startswith("2.13.0")
    assert runtime.runtime_python(tmp_path) == sys.executable
    with pytest.raises(runtime.VerifyFailed, match="does not exist"):
        await runtime.use_existing(tmp_path, tmp_path / "no-python")


async def test_an_environment_without_torch_is_refused(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    with pytest.raises(runtime.VerifyFailed, match="lacks torch") as err:
        await runtime.use_existing(tmp_path, runtime.venv_python(bare))
    assert "No module named 'torch'" in "\n".join(err.value.output_tail)
    assert runtime.runtime_python(tmp_path) is None


# --------------------------------------------------------------------------- the child process


async def test_cancelling_the_task_kills_pip_and_what_it_started(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    code = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "print('Progress 1 of 10', flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = runtime._Process([sys.executable, "-c", code], os.environ)
    seen: list[str] = []

    async def consume() -> None:
        async for line in proc.lines():
            seen.append(line)

    task = asyncio.create_task(consume())
    deadline = time.monotonic() + 30
    while not seen and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert seen == ["Progress 1 of 10"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert proc.pid is not None
    for pid in (proc.pid, int(pidfile.read_text())):
        with pytest.raises(ProcessLookupError):
            for _ in range(100):  # the grandchild is reaped by init: give it a moment
                os.kill(pid, 0)
                await asyncio.sleep(0.05)


def _wheel(dest: Path, size: int) -> Path:
    """A real installable wheel of ``size`` bytes (stored, so its size stays)."""
    path = dest / "orchard_probe-1.0-py3-none-any.whl"
    dist = "orchard_probe-1.0.dist-info"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("orchard_probe/__init__.py", "")
        z.writestr("orchard_probe/blob.bin", os.urandom(size))
        z.writestr(f"{dist}/METADATA", "Metadata-Version: 2.1\nName: orchard-probe\nVersion: 1.0\n")
        z.writestr(
            f"{dist}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        z.writestr(f"{dist}/RECORD", "")
    return path


@pytest.fixture
def wheel_server(tmp_path: Path) -> Iterator[str]:
    """A loopback HTTP server listing one 3 MB wheel (pip reads it as --find-links)."""
    files = tmp_path / "files"
    files.mkdir()
    _wheel(files, 3 * MB)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(files), **kwargs)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


async def test_a_real_pip_download_reports_bytes(tmp_path: Path, wheel_server: str) -> None:
    inst = RuntimeInstaller(tmp_path, "cpu", pip=PipSettings(isolated=True, cache=False))
    cmd = [sys.executable, "-m", "pip", "download", "--isolated", "--no-cache-dir"]
    cmd += ["--progress-bar", "raw", "--no-index", "--find-links", wheel_server]
    cmd += ["-d", str(tmp_path / "out"), "orchard-probe==1.0"]
    seen = [p async for p in inst._run(Step.PACKAGES, 5, 7, cmd)]
    downloads = [p for p in seen if p.file == "orchard_probe-1.0-py3-none-any.whl"]
    assert downloads, seen
    assert downloads[-1].bytes_done == downloads[-1].bytes_total
    assert downloads[-1].bytes_total and downloads[-1].bytes_total > 3 * MB
    assert (tmp_path / "out" / "orchard_probe-1.0-py3-none-any.whl").is_file()


# --------------------------------------------------------------------------- setup, for real


async def _collect(inst: RuntimeInstaller) -> list[SetupProgress]:
    out = []
    async with contextlib.aclosing(inst.run()) as progress:
        async for p in progress:
            out.append(p)
    return out


async def test_not_enough_disk_fails_fast_with_numbers(tmp_path: Path) -> None:
    inst = RuntimeInstaller(tmp_path, "cu128", free_bytes=500 * MB)
    t0 = time.monotonic()
    with pytest.raises(NotEnoughDisk) as err:
        await _collect(inst)
    assert time.monotonic() - t0 < 30
    assert err.value.needed == BACKENDS["cu128"].disk_bytes and err.value.free == 500 * MB
    assert "needs about 11.0 GB" in err.value.msg and "500 MB is free" in err.value.msg
    assert not inst.venv.exists()


async def test_no_base_python_says_what_to_install(tmp_path: Path) -> None:
    inst = RuntimeInstaller(tmp_path, "cpu", base_python=str(tmp_path / "python3"))
    with pytest.raises(NoBasePython, match=r"python3-venv|python\.org"):
        await _collect(inst)


async def test_offline_is_detected_and_the_venv_is_kept_for_the_retry(tmp_path: Path) -> None:
    # The index is a closed port, and pip's configuration (which points at this machine's
    # local wheels) is ignored: pip really has no way to get a package.
    pip = PipSettings(index_url=UNREACHABLE, isolated=True, cache=False, retries=1)
    inst = RuntimeInstaller(tmp_path, "cpu", pip=pip)
    with pytest.raises(Offline) as err:
        await _collect(inst)
    assert err.value.msg.startswith(f"cannot reach the package index ({UNREACHABLE}")
    assert "): check the network or point Orchard at an existing Python environment" in (
        err.value.msg
    )
    assert err.value.output_tail
    assert runtime.installed_runtimes(tmp_path) == {"cpu": ["venv"]}
    # A retry reuses the venv and fails at the same step. Without retries pip only says that
    # it found no versions: Orchard then tries the index itself.
    pip = PipSettings(index_url=UNREACHABLE, isolated=True, cache=False, retries=0)
    inst = RuntimeInstaller(tmp_path, "cpu", pip=pip)
    seen: list[SetupProgress] = []
    with pytest.raises(Offline, match=r"\(http://127\.0\.0\.1:9/simple, 127\.0\.0\.1:9: "):
        async with contextlib.aclosing(inst.run()) as progress:
            async for p in progress:
                seen.append(p)
    assert [(p.step, p.skipped) for p in seen[:3]] == [
        (Step.CHECK, False),
        (Step.VENV, True),
        (Step.PIP, False),
    ]
    assert runtime.runtime_python(tmp_path) is None


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_cpu_runtime_for_real_cancelled_then_resumed(
    tmp_path: Path, tiny_models: Path
) -> None:
    """pip installs the CPU torch (from this machine's local disk), diffusers and the rest
    (PyPI) and Orchard (this checkout) into a new venv; cancelled in the torch step, then run
    again, it resumes after the steps that were done; a runner then starts from it."""
    inst = RuntimeInstaller(tmp_path, "cpu")
    first: list[SetupProgress] = []

    async def consume() -> None:
        async with contextlib.aclosing(inst.run()) as progress:
            async for p in progress:
                first.append(p)

    task = asyncio.create_task(consume())
    deadline = time.monotonic() + 300
    while not any(p.step is Step.TORCH for p in first):
        assert time.monotonic() < deadline and not task.done(), first
        await asyncio.sleep(0.1)
    await asyncio.sleep(3.0)  # pip is unpacking torch now
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert runtime.installed_runtimes(tmp_path) == {"cpu": ["venv", "pip"]}

    t0 = time.monotonic()
    second = await _collect(inst)
    resumed_s = time.monotonic() - t0
    starts = {p.step: p.skipped for p in second if not p.bytes_done and not p.finished}
    assert starts[Step.VENV] and starts[Step.PIP], second
    assert not starts[Step.TORCH] and not starts[Step.PACKAGES]
    assert second[-1].finished
    python = runtime.runtime_python(tmp_path)
    assert python == str(inst.python)
    info = runtime.read_selection(tmp_path)
    assert info is not None and info.torch == "2.13.0+cpu" and info.orchard == core.__version__
    print(f"resumed setup took {resumed_s:.0f} s")

    # The runner starts from the runtime alone: no PYTHONPATH, not from the checkout's folder.
    port = free_port()
    env = runtime.clean_env()
    env["ORCHARD_RUNNER_TOKEN"] = ""
    cmd = [python, "-m", "app", "runner", "--port", str(port), "--models-dir", str(tiny_models)]
    cmd += ["--warm", "text-to-image:orchard-tiny/sdxl"]
    log = (tmp_path / "runner.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(httpx.TransportError):
                status = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()["status"]
                if status == "OK":
                    break
            await asyncio.sleep(0.3)
        assert status == "OK", (tmp_path / "runner.log").read_text()
        where = subprocess.run(
            [python, "-c", "import app; print(app.__file__)"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            check=True,
        ).stdout
        assert str(inst.venv) in where
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()

    # A third run has nothing to install: only the check and the verification run.
    third = await _collect(inst)
    assert all(p.skipped for p in third if p.step not in (Step.CHECK, Step.VERIFY))
