"""The Linux installers, built for real with packaging/linux/build.sh and then used: the frozen
app starts, opens and closes its window, runs the node in front of a real external runner, and
the .deb and .tar.gz hold what they should and install. Opt-in: ``pytest -m packaging``.

``ORCHARD_REUSE_BUILD=1`` tests the installers already in dist/ instead of building anew.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import core
from tests.conftest import ROOT, free_port, start_runner

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(1200)]

VERSION = core.__version__
NAME = f"orchard-{VERSION}-linux-x86_64"
TARBALL = ROOT / "dist" / f"{NAME}.tar.gz"
DEB = ROOT / "dist" / f"orchard_{VERSION}_amd64.deb"
BUNDLE = ROOT / "build" / "packaging" / "linux" / "dist" / "orchard"


@dataclass
class Build:
    bundle: Path
    exe: Path
    seconds: float | None


@pytest.fixture(scope="module", autouse=True)
def _opt_in(request: pytest.FixtureRequest) -> None:
    """Only when asked for: `pytest -m packaging` (the build takes minutes)."""
    if "packaging" not in (request.config.getoption("markexpr") or "").replace("not packaging", ""):
        pytest.skip("builds the installers: run with `pytest -m packaging`")


@pytest.fixture(scope="module")
def build() -> Build:
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        pytest.skip("the Linux build needs Linux x86_64")
    seconds = None
    reuse = os.environ.get("ORCHARD_REUSE_BUILD") == "1"
    if not (reuse and TARBALL.exists() and DEB.exists() and BUNDLE.exists()):
        env = {**os.environ, "PY": sys.executable}
        t0 = time.monotonic()
        out = subprocess.run(
            ["bash", str(ROOT / "packaging" / "linux" / "build.sh")],
            capture_output=True,
            text=True,
            env=env,
            timeout=1800,
        )
        seconds = time.monotonic() - t0
        assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
        print(f"\nbuild.sh took {seconds:.0f} s")
    for path in (TARBALL, DEB):
        print(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB")
    return Build(BUNDLE, BUNDLE / "orchard", seconds)


def frozen_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: nothing of the dev venv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["QT_QPA_PLATFORM"] = "offscreen"
    env.update(extra)
    return env


def test_the_bundle_holds_no_torch(build: Build) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "packaging" / "check_bundle.py"), str(build.bundle)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout
    assert out.stdout.startswith("ok: no torch in")


def test_the_bundle_check_finds_torch(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "packaging"))
    try:
        from check_bundle import forbidden_files
    finally:
        sys.path.remove(str(ROOT / "packaging"))
    (tmp_path / "_internal" / "torch" / "lib").mkdir(parents=True)
    (tmp_path / "_internal" / "nvidia_ml_py-13.dist-info").mkdir()
    (tmp_path / "_internal" / "libcudnn.so.9").touch()
    assert forbidden_files(tmp_path) == sorted(
        ["_internal/torch", "_internal/torch/lib", "_internal/libcudnn.so.9"]
    ) or set(forbidden_files(tmp_path)) == {
        "_internal/torch",
        "_internal/torch/lib",
        "_internal/libcudnn.so.9",
    }


def test_version_and_help(build: Build, tmp_path: Path) -> None:
    out = subprocess.run(
        [str(build.exe), "--version"],
        capture_output=True,
        text=True,
        env=frozen_env(),
        cwd=tmp_path,
    )
    assert out.returncode == 0 and out.stdout.strip() == f"orchard {VERSION}"
    helped = subprocess.run(
        [str(build.exe), "--help"], capture_output=True, text=True, env=frozen_env(), cwd=tmp_path
    )
    assert helped.returncode == 0 and "node" in helped.stdout


def test_the_window_opens_and_closes(build: Build, tmp_path: Path) -> None:
    shot = tmp_path / "window.png"
    env = frozen_env(ORCHARD_SMOKE="window", ORCHARD_SMOKE_SHOT=str(shot), HOME=str(tmp_path))
    args = ["--data-dir", str(tmp_path / "data"), "--models-dir", str(tmp_path / "models")]
    args += ["--settings", str(tmp_path / "settings.ini")]
    out = subprocess.run(
        [str(build.exe), *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    if out.returncode == 3:
        pytest.skip(f"this build has no GUI yet: {out.stderr.strip()}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "window 'Orchard' opened" in out.stdout
    assert shot.stat().st_size > 10_000


@pytest.fixture
def external_runner(tiny_models: Path, tmp_path: Path) -> Iterator[str]:
    """A real ``orchard runner`` from the development venv (torch lives there)."""
    runner = start_runner(tiny_models, tmp_path, "--warm", "text-to-image:orchard-tiny/sdxl")
    yield runner.url
    runner.stop()


def test_the_frozen_node_serves_through_an_external_runner(
    build: Build, external_runner: str, tmp_path: Path
) -> None:
    helped = subprocess.run([str(build.exe), "--help"], capture_output=True, text=True)
    if " runtime " not in helped.stdout:
        pytest.skip("app/cli.py does not wire `orchard runtime` and the runner Python yet")
    # The node starts one local runner per device as well: from the runtime, here this
    # test's own Python (it has torch), chosen the way an operator would.
    data = tmp_path / "data"
    use = subprocess.run(
        [str(build.exe), "runtime", "use", sys.executable, "--data-dir", str(data)],
        capture_output=True,
        text=True,
        env=frozen_env(HOME=str(tmp_path)),
    )
    assert use.returncode == 0, use.stdout + use.stderr
    models = tmp_path / "aiModels.json"
    entry = {"pipeline": "text-to-image", "model_id": "orchard-tiny/sdxl", "warm": True}
    models.write_text(json.dumps([{**entry, "url": external_runner}]))
    port = free_port()
    cmd = [str(build.exe), "node", "--models", str(models), "--free", "--port", str(port)]
    cmd += ["--data-dir", str(data), "--models-dir", str(tmp_path / "models")]
    log = tmp_path / "node.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=frozen_env(HOME=str(tmp_path))
        )
    url = f"http://127.0.0.1:{port}"
    try:
        info = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                info = httpx.get(f"{url}/info", timeout=2).json()
                break
            except httpx.TransportError:
                time.sleep(0.3)
        assert info is not None, log.read_text()
        assert "orchard-tiny/sdxl" in json.dumps(info)
        job = httpx.post(
            f"{url}/text-to-image",
            json={
                "model_id": "orchard-tiny/sdxl",
                "prompt": "a cat",
                "width": 64,
                "height": 64,
                "num_inference_steps": 2,
            },
            timeout=120,
        )
        assert job.status_code == 200, job.text
        assert job.json()["images"]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, log.read_text()
    assert "stopping the node" in log.read_text()


def test_the_tarball(build: Build, tmp_path: Path) -> None:
    with tarfile.open(TARBALL) as tar:
        names = set(tar.getnames())
        for member in ("orchard", "README.txt", "orchard.desktop", "orchard.png", "_internal"):
            assert f"{NAME}/{member}" in names
        assert not any("/torch/" in n or n.endswith("/torch") for n in names)
        tar.extractall(tmp_path, filter="tar")
    out = subprocess.run(
        [str(tmp_path / NAME / "orchard"), "--version"],
        capture_output=True,
        text=True,
        env=frozen_env(),
    )
    assert out.stdout.strip() == f"orchard {VERSION}"


def _dpkg_field(field: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "--field", str(DEB), field], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_the_deb_holds_the_app_menu_entry_and_icon(build: Build, tmp_path: Path) -> None:
    if not shutil.which("dpkg-deb"):
        pytest.skip("dpkg-deb is not installed (apt-get install dpkg)")
    assert _dpkg_field("Package") == "orchard"
    assert _dpkg_field("Version") == VERSION
    assert _dpkg_field("Architecture") == "amd64"
    depends = _dpkg_field("Depends")
    assert "python3-venv" in depends and "libxcb-cursor0" in depends
    contents = subprocess.run(
        ["dpkg-deb", "--contents", str(DEB)], capture_output=True, text=True, check=True
    ).stdout
    for path in (
        "./opt/orchard/orchard",
        "./usr/share/applications/orchard.desktop",
        "./usr/share/icons/hicolor/256x256/apps/orchard.png",
        "./usr/bin/orchard -> ../../opt/orchard/orchard",
    ):
        assert path in contents
    assert all(" root/root " in line for line in contents.splitlines())
    subprocess.run(["dpkg-deb", "--extract", str(DEB), str(tmp_path)], check=True)
    if not shutil.which("desktop-file-validate"):
        pytest.skip("desktop-file-validate is not installed (apt-get install desktop-file-utils)")
    desktop = tmp_path / "usr/share/applications/orchard.desktop"
    check = subprocess.run(["desktop-file-validate", str(desktop)], capture_output=True, text=True)
    assert check.returncode == 0 and "error" not in check.stdout, check.stdout


def test_the_deb_installs_and_removes(build: Build, tmp_path: Path) -> None:
    """dpkg itself installs the package into a folder (--instdir, with its own database):
    the files land, the binary runs from /usr/bin's link, and removal takes them away."""
    if not shutil.which("dpkg"):
        pytest.skip("dpkg is not installed")
    root, admin = tmp_path / "root", tmp_path / "admin"
    root.mkdir()
    for sub in ("info", "updates", "triggers"):
        (admin / sub).mkdir(parents=True)
    (admin / "status").touch()
    (admin / "available").touch()
    dpkg = ["dpkg", f"--instdir={root}", f"--admindir={admin}", "--force-not-root"]
    dpkg += ["--force-depends", "--force-script-chrootless", f"--log={tmp_path / 'dpkg.log'}"]
    out = subprocess.run([*dpkg, "-i", str(DEB)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    status = (admin / "status").read_text()
    assert "Package: orchard" in status and "Status: install ok installed" in status
    link = root / "usr" / "bin" / "orchard"
    assert link.is_symlink() and link.resolve() == (root / "opt/orchard/orchard").resolve()
    ran = subprocess.run([str(link), "--version"], capture_output=True, text=True, env=frozen_env())
    assert ran.stdout.strip() == f"orchard {VERSION}"
    removed = subprocess.run([*dpkg, "-r", "orchard"], capture_output=True, text=True)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert not (root / "opt" / "orchard" / "orchard").exists()
    assert not link.exists()


@pytest.mark.slow
def test_first_run_sets_up_the_runtime_from_the_bundle_and_the_node_uses_it(
    build: Build, tiny_models: Path, tmp_path: Path
) -> None:
    """The frozen app sets up the CPU runtime (a venv from python3 on PATH, the bundle's
    requirement files and Orchard wheel), then its node starts a local runner from it."""
    helped = subprocess.run([str(build.exe), "--help"], capture_output=True, text=True)
    if " runtime " not in helped.stdout:
        pytest.skip("app/cli.py does not wire `orchard runtime` and the runner Python yet")
    data = tmp_path / "data"
    env = frozen_env(HOME=str(tmp_path))
    setup = subprocess.run(
        [str(build.exe), "runtime", "setup", "--backend", "cpu", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
    assert "[7/7] verify: the CPU (no GPU) runtime is ready" in setup.stdout
    venv_python = data / "runtime" / "cpu" / "bin" / "python"
    where = subprocess.run(
        [str(venv_python), "-c", "import app; print(app.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert str(data / "runtime" / "cpu") in where.stdout  # the bundle's wheel, not a checkout

    models = tmp_path / "aiModels.json"
    entry = {"pipeline": "text-to-image", "model_id": "orchard-tiny/sdxl", "warm": True}
    models.write_text(json.dumps([entry]))
    port = free_port()
    cmd = [str(build.exe), "node", "--models", str(models), "--free", "--port", str(port)]
    cmd += ["--gpus", "cpu", "--data-dir", str(data), "--models-dir", str(tiny_models)]
    log = tmp_path / "node.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"{url}/health", timeout=2).json()["status"]
                if health == "OK":
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        assert health == "OK", log.read_text()
        body: dict[str, object] = {"model_id": "orchard-tiny/sdxl", "prompt": "a cat"}
        body.update(width=64, height=64)
        job = httpx.post(
            f"{url}/text-to-image", json={**body, "num_inference_steps": 2}, timeout=120
        )
        assert job.status_code == 200, job.text
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, log.read_text()
    runner_log = (data / "logs" / "runner--1.log").read_text()
    assert f"{venv_python} -m app runner" in runner_log


def test_the_deb_installs_with_apt_on_a_clean_debian(build: Build, tmp_path: Path) -> None:
    """debootstrap a minimal Debian 12, `apt-get install ./orchard.deb` there (apt fetches
    what Depends names from Debian), then, as a normal user: --version, the window, doctor."""
    if os.geteuid() != 0 or not shutil.which("debootstrap") or not shutil.which("chroot"):
        pytest.skip("needs root and debootstrap (apt-get install debootstrap)")
    root = tmp_path / "debian"
    boot = subprocess.run(
        ["debootstrap", "--variant=minbase", "bookworm", str(root), "http://deb.debian.org/debian"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if boot.returncode != 0:
        pytest.skip(f"debootstrap could not reach Debian's archive: {boot.stdout[-500:]}")
    shutil.copy(DEB, root / "tmp" / DEB.name)
    shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
    proc_dir = root / "proc"
    subprocess.run(["mount", "-t", "proc", "proc", str(proc_dir)], check=True)

    def chroot(script: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
        return subprocess.run(
            ["chroot", str(root), "bash", "-c", script],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )

    try:
        apt = chroot(
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
            f"apt-get install -y -qq /tmp/{DEB.name}"
        )
        assert apt.returncode == 0, apt.stdout[-3000:] + apt.stderr[-3000:]
        assert chroot("orchard --version").stdout.strip() == f"orchard {VERSION}"
        assert chroot("useradd -m hobbyist").returncode == 0
        smoke = chroot(
            "su hobbyist -c 'cd && QT_QPA_PLATFORM=offscreen ORCHARD_SMOKE=window orchard'"
        )
        if smoke.returncode != 3:  # 3: no GUI in this build yet
            assert smoke.returncode == 0, smoke.stdout + smoke.stderr
            assert "window 'Orchard' opened" in smoke.stdout
        doctor = chroot("su hobbyist -c 'cd && orchard doctor --no-docker'")
        if "invalid choice: 'doctor'" not in doctor.stderr:
            # No runtime yet on a fresh install: that one check fails, and says what to do.
            assert doctor.returncode == 1, doctor.stdout + doctor.stderr
            assert "FAIL  runtime    no GPU runtime is set up" in doctor.stdout
            assert "orchard runtime setup" in doctor.stdout
        venv = chroot("python3 -c 'import venv, ensurepip; print(1)'")
        assert venv.stdout.strip() == "1"  # Depends brought python3-venv for the runtime
        removed = chroot("DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq orchard")
        assert removed.returncode == 0 and not (root / "opt" / "orchard" / "orchard").exists()
    finally:
        subprocess.run(["umount", "-l", str(proc_dir)], check=False)
