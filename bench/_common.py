"""Helpers shared by the benchmark scripts (not tests: they print figures)."""

from __future__ import annotations

import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / ".tiny-models"


def tiny_models() -> Path:
    from core.runner.tiny import make_tiny_models

    make_tiny_models(TINY)
    return TINY


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def p95_ms(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] * 1000


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    py = sys.version.split()[0]
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, Python {py}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Runner:
    """``orchard runner`` as a subprocess for the length of a ``with`` block."""

    def __init__(self, models: Path, *warm: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [a for w in warm for a in ("--warm", w)]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app",
                "runner",
                "--port",
                str(self.port),
                "--models-dir",
                str(models),
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )

    def __enter__(self) -> Runner:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).json()["status"] == "OK":
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("runner did not start")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(15)
