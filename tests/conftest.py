"""Shared fixtures: tiny models built once per session, real runner processes on loopback."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any QApplication exists

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Tiny models are cached here between runs (git-ignored); delete it to rebuild.
TINY_CACHE = ROOT / ".tiny-models"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def tiny_models() -> Path:
    """A models directory holding the tiny SDXL-style and SVD-style models."""
    from core.runner.tiny import TINY_MODELS, make_tiny_models

    if not all((TINY_CACHE / m / "model_index.json").exists() for m in TINY_MODELS):
        shutil.rmtree(TINY_CACHE, ignore_errors=True)
        make_tiny_models(TINY_CACHE)
    return TINY_CACHE


@dataclass
class RunnerProcess:
    """A real ``orchard runner`` subprocess."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def client(self, token: str | None = None, timeout: float = 120.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_runner(
    models_dir: Path,
    log_dir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    wait_ok: bool = True,
    timeout: float = 90.0,
) -> RunnerProcess:
    """Start ``orchard runner`` on a free loopback port and wait until /health says OK."""
    port = free_port()
    log = log_dir / f"runner-{port}.log"
    cmd = [
        sys.executable,
        "-m",
        "app",
        "runner",
        "--device",
        "cpu",
        "--port",
        str(port),
        "--models-dir",
        str(models_dir),
        *args,
    ]
    with log.open("wb") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=ROOT
        )
    runner = RunnerProcess(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"runner exited with {proc.returncode}:\n{runner.log_text()}")
        try:
            status = httpx.get(f"{runner.url}/health", timeout=2).json()["status"]
            if status == "OK" or (not wait_ok and status != "LOADING"):
                return runner
            if status == "ERROR":
                raise RuntimeError(f"runner failed to warm:\n{runner.log_text()}")
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    runner.stop()
    raise RuntimeError(f"runner did not become ready:\n{runner.log_text()}")


TINY_WARM = (
    "--warm",
    "text-to-image:orchard-tiny/sdxl",
    "--warm",
    "image-to-image:orchard-tiny/sdxl",
    "--warm",
    "image-to-video:orchard-tiny/svd",
)


@pytest.fixture(scope="module")
def runner(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunnerProcess]:
    """A runner with the three tiny pipelines warm, no token, default limits."""
    r = start_runner(tiny_models, tmp_path_factory.mktemp("runner"), *TINY_WARM)
    yield r
    assert r.stop() in (0, -15), r.log_text()
