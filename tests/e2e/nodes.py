"""Real ``orchard node`` and ``orchard gateway`` processes for end-to-end tests.

``start_nodes`` starts several nodes at once (they warm in parallel) and waits for each;
``stop_node`` ends one with SIGTERM and checks its runners went with it; ``kill_node``
ends one and its runners with SIGKILL, as a crash would. ``start_gateway`` runs the gateway
through ``app.gateway_cli.main``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from tests.conftest import ROOT, free_port

SDXL = "orchard-tiny/sdxl"
SVD = "orchard-tiny/svd"


@dataclass
class Proc:
    """A server process on a loopback port, its log in a file."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def client(self, timeout: float = 120) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)


@dataclass
class NodeProcess(Proc):
    data_dir: Path

    def runner_pids(self) -> list[int]:
        return [h["pid"] for h in httpx.get(f"{self.url}/info").json()["hardware"] if h["pid"]]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:  # a zombie is as good as gone
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def _wait(p: Proc, ready: Callable[[httpx.Response], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {p.proc.returncode}:\n{p.log_text()}")
        try:
            if ready(httpx.get(f"{p.url}/health", timeout=2)):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    p.proc.kill()
    p.proc.wait(10)
    raise RuntimeError(f"{what} did not start:\n{p.log_text()}")


def spawn_node(
    models_dir: Path, tmp: Path, config: list[dict[str, Any]], *args: str, gpus: str = "cpu:1"
) -> NodeProcess:
    """Start ``orchard node`` without waiting for it (see :func:`wait_node`)."""
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tmp / "aiModels.json"
    cfg.write_text(json.dumps(config))
    port = free_port()
    log = tmp / "node.log"
    cmd = [sys.executable, "-m", "app", "node", "--models", str(cfg), "--gpus", gpus]
    cmd += ["--port", str(port), "--models-dir", str(models_dir), "--data-dir", str(tmp / "data")]
    proc = _spawn([*cmd, *args], log)
    return NodeProcess(f"http://127.0.0.1:{port}", proc, log, tmp / "data")


def wait_node(node: NodeProcess, timeout: float = 180) -> NodeProcess:
    _wait(node, lambda r: r.json().get("status") == "OK", timeout, "node")
    return node


def record_deposit(data_dir: Path, sender: str, wei: int) -> None:
    """Record ``sender``'s deposit in a node's off-chain ledger (before the node starts)."""
    import asyncio

    from core.payments.chain import OffChainLedger
    from core.payments.ledger import PaymentLedger

    async def run() -> None:
        async with PaymentLedger(data_dir) as ledger:
            await OffChainLedger(ledger).set_deposit(sender, wei)

    data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(run())


def start_nodes(
    models_dir: Path,
    tmp: Path,
    configs: list[list[dict[str, Any]]],
    deposits: dict[str, int] | None = None,
) -> list[NodeProcess]:
    """Several nodes, one CPU runner each, started together (their runners warm in parallel).
    ``deposits``: gateway address -> wei, recorded in each node's off-chain ledger first."""
    for i in range(len(configs)):
        for sender, wei in (deposits or {}).items():
            record_deposit(tmp / f"node{i}" / "data", sender, wei)
    nodes = [spawn_node(models_dir, tmp / f"node{i}", cfg) for i, cfg in enumerate(configs)]
    try:
        for n in nodes:
            wait_node(n)
    except BaseException:
        for n in nodes:
            if n.proc.poll() is None:
                kill_node(n)
        raise
    return nodes


def stop_node(node: NodeProcess) -> None:
    if node.proc.poll() is not None:
        return
    pids = node.runner_pids()
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(30) == 0, node.log_text()
    for pid in pids:
        assert not pid_alive(pid), f"runner {pid} outlived the node"


def kill_node(node: NodeProcess) -> None:
    """SIGKILL the node and its runners, as a crash of the machine's processes would."""
    try:
        pids = node.runner_pids()
    except httpx.HTTPError:
        pids = []
    node.proc.kill()
    node.proc.wait(10)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def start_gateway(tmp: Path, orchestrators: list[str], *args: str) -> Proc:
    """``orchard gateway`` (through ``app.gateway_cli.main``) in front of ``orchestrators``."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [
        sys.executable,
        "-c",
        "import sys; from app.gateway_cli import main; sys.exit(main(sys.argv[1:]))",
        "--orchestrators",
        ",".join(orchestrators),
        "--port",
        str(port),
        *args,
    ]
    gw = Proc(
        f"http://127.0.0.1:{port}",
        _spawn(cmd, tmp / f"gateway-{port}.log"),
        tmp / f"gateway-{port}.log",
    )
    _wait(gw, lambda r: r.json().get("status") == "OK", 60, "gateway")
    return gw


def stop_gateway(gw: Proc) -> None:
    if gw.proc.poll() is None:
        gw.proc.send_signal(signal.SIGTERM)
        try:
            code = gw.proc.wait(15)
        except subprocess.TimeoutExpired:
            gw.proc.kill()
            gw.proc.wait(5)
            raise AssertionError(f"gateway did not stop:\n{gw.log_text()}") from None
        assert code == 0, gw.log_text()


def png(size: tuple[int, int] = (64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()


def small(model_id: str = SDXL, steps: int = 2, **kw: Any) -> dict[str, Any]:
    """A cheap text-to-image body: 64x64, 2 steps."""
    return {
        "model_id": model_id,
        "prompt": "a boat",
        "width": 64,
        "height": 64,
        "num_inference_steps": steps,
        **kw,
    }
