"""Benchmark: ``orchard bench`` on a chosen device, its output live, and the report.

The benchmark imports torch, so it never runs in the app's process: it is
``<runner python> -m app bench ...`` in a subprocess (the GPU runtime's Python on an installed
app), in its own process group so that Stop ends it and whatever it started. Threads read its
pipes and hand the lines to the loop; nothing here blocks the Qt thread. The last report is
kept in ``<data dir>/bench/last.json`` (its chart in ``last.png``) and shown when the app
opens again. When a run's optimised output matched the plain one, faster, the page can write
its flags into the model's entries of aiModels.json (through the session, as the Models page
saves).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import re
import shlex
import subprocess
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtGui import QShowEvent

from app.gui import catalogue as cat
from app.gui.bridge import CoreBridge
from app.gui.pages.base import Page
from app.gui.session import NodeSession
from app.gui.tasks import spawn
from core import events as ev
from core import runtime
from core.config import Backend, ConfigError, ModelsConfig
from core.gpus import CPU_INDEX
from core.procstream import StreamedProcess
from core.runners.local import SOURCE_ROOT, describe_exit, die_with_parent_fn
from widgets.bench_view import PIPELINES, BenchRequest, BenchView
from widgets.flags_dialog import summary, with_flags
from widgets.model_catalogue import CatalogueRow

log = logging.getLogger(__name__)

#: ``orchard bench`` options that not every Orchard has (the runtime's may be older).
OPTIONAL = frozenset({"frames", "flags", "compare", "data-dir"})
#: How long Stop waits after SIGTERM before it kills the benchmark's process group.
STOP_GRACE_S = 10.0
TAIL_LINES = 15


def bench_command(
    python: str,
    req: BenchRequest,
    *,
    models_dir: Path,
    json_path: Path,
    chart_path: Path,
    data_dir: Path | None = None,
    options: Collection[str] = OPTIONAL,
) -> list[str]:
    """The ``orchard bench`` command line for ``req``; an optional option is given only when
    ``options`` (what this Orchard's ``bench --help`` lists) has it."""
    cmd = [python, "-m", "app", "bench", "--pipeline", req.pipeline, "--model", req.model]
    cmd += ["--models-dir", str(models_dir), "--device", req.device]
    cmd += ["--runs", str(req.runs), "--steps", str(req.steps)]
    cmd += ["--width", str(req.width), "--height", str(req.height)]
    cmd += ["--concurrency", ",".join(map(str, req.concurrency))]
    cmd += ["--through", ",".join(req.through)]
    if req.frames is not None and "frames" in options:
        cmd += ["--frames", str(req.frames)]
    if req.flags and "flags" in options:
        cmd += ["--flags", req.flags]
    if req.compare and "compare" in options:
        cmd.append("--compare")
    if data_dir is not None and "data-dir" in options:
        cmd += ["--data-dir", str(data_dir)]
    return [*cmd, "--json", str(json_path), "--chart", str(chart_path)]


def bench_env() -> dict[str, str]:
    """The benchmark's environment, as a runner's: a frozen app's library path left out,
    the source checkout on ``PYTHONPATH``, and CUDA numbering the GPUs as NVML does."""
    base = runtime.clean_env() if runtime.frozen() else dict(os.environ)
    env = {**base, "PYTHONUNBUFFERED": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    if (SOURCE_ROOT / "pyproject.toml").is_file():
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = f"{SOURCE_ROOT}{os.pathsep}{path}" if path else str(SOURCE_ROOT)
    return env


def bench_options(python: str, env: Mapping[str, str]) -> frozenset[str]:
    """The optional options ``python -m app bench --help`` lists. Blocking."""
    try:
        out = subprocess.run(
            [python, "-m", "app", "bench", "--help"],
            capture_output=True,
            text=True,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("cannot ask %s which bench options it has: %s", python, exc)
        return frozenset()
    return OPTIONAL & set(re.findall(r"--([a-z][a-z0-9-]*)", out.stdout))


def bench_process(cmd: Sequence[str], env: Mapping[str, str]) -> StreamedProcess:
    """``orchard bench`` in its own process group, ending with the app if the app dies."""
    posix = os.name == "posix"
    return StreamedProcess(
        cmd, env, preexec_fn=die_with_parent_fn() if posix else None, name="bench"
    )


class BenchPage(Page):
    title = "Benchmark"
    subtitle = (
        "How fast a model runs on one device: load time, latency, throughput and memory, "
        "called directly or through a runner or a whole node. The benchmark runs in its own "
        "process; its measurements also calibrate the placement planner."
    )

    def __init__(self, session: NodeSession, bridge: CoreBridge) -> None:
        super().__init__()
        self.session = session
        self.view = BenchView()
        self.body.addWidget(self.view, 1)
        self.dir = session.data_dir / "bench"
        self.task: asyncio.Task[None] | None = None
        self.process: StreamedProcess | None = None
        self.options: frozenset[str] | None = None
        self.last_command: list[str] = []
        self._stopping = False
        self._disk: list[CatalogueRow] = []
        self._shown_once = False
        self.view.run_requested.connect(self._on_run_requested)
        self.view.stop_requested.connect(self.stop)
        self.view.device_changed.connect(self._on_device_changed)
        self.view.use_flags_requested.connect(self._on_use_flags_requested)
        session.config_changed.connect(self._on_config_changed)
        session.demo_status.connect(self._on_demo_status)
        bridge.node_changed.connect(self._on_node_changed)
        self.view.set_devices(self.devices(), self._default_device())
        self._on_config_changed(session.config)
        self.loaded = spawn(self._load_last(), "show the last benchmark")

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not self._shown_once:
            self._shown_once = True
            self.refresh_disk()
            spawn(self._probe(), "ask which bench options the runtime has")

    # ----------------------------------------------------------------- choices
    def devices(self) -> list[tuple[str, str]]:
        """The GPUs the session knows, then the CPU, as ``(device id, label)``."""
        gpus = self.session.inventory.gpus
        out = [(f"cuda:{g.index}", f"GPU {g.index} · {g.name}") for g in gpus]
        out.append(("cpu", f"CPU · {self.session.cpu.name}"))
        return out

    def _default_device(self) -> str:
        """A GPU the node does not use if there is one; else the first GPU; else the CPU."""
        gpus = [g.index for g in self.session.inventory.gpus]
        used = self._node_devices()
        pick = [i for i in gpus if i not in used] or gpus
        return f"cuda:{pick[0]}" if pick else "cpu"

    def _node_devices(self) -> set[int]:
        node = self.session.node
        if node is None or self.session.state not in ("starting", "running"):
            return set()
        return set(node.devices)

    def warning_for(self, device: str) -> str:
        """Why benchmarking on ``device`` now may mislead (the node uses it), or ""."""
        index = CPU_INDEX if device == "cpu" else int(device.partition(":")[2] or 0)
        if index not in self._node_devices():
            return ""
        what = "the CPU" if index == CPU_INDEX else f"GPU {index}"
        return (
            f"The running node uses {what}: the benchmark shares it with the node's models "
            "and jobs, so its numbers come out lower and either may run short of memory. "
            "Stop the node, or choose another device, for clean numbers."
        )

    def models(self) -> dict[str, list[str]]:
        """Per pipeline: the node's local models, then the catalogue's models on disk."""
        out: dict[str, list[str]] = {p: [] for p in PIPELINES}
        for e in self.session.config.entries:
            if e.supported and e.effective_backend is not Backend.EXTERNAL and e.pipeline in out:
                out[e.pipeline].append(e.model_id)
        for row in self._disk:
            if row.on_disk is not None:
                for p in row.pipelines:
                    if p in out:
                        out[p].append(row.repo_id)
        return {p: list(dict.fromkeys(ids)) for p, ids in out.items()}

    def refresh_disk(self) -> None:
        spawn(self._scan(), "scan models for the benchmark")

    async def _scan(self) -> None:
        s = self.session
        self._disk = await asyncio.to_thread(cat.scan, s.models_dir, s.catalogue)
        self.view.set_models(self.models())

    # ----------------------------------------------------------------- slots
    def _on_config_changed(self, config: ModelsConfig) -> None:
        self.view.set_models(self.models())
        flags: dict[tuple[str, str], dict[str, Any]] = {}
        for e in config.entries:  # the default entry's flags, rather than a gateway's
            if e.supported and (e.key not in flags or e.gateway_key is None):
                flags[e.key] = e.optimization_flags or {}
        self.view.set_configured(flags)

    def _on_use_flags_requested(self, pipeline: str, model: str, flags: object) -> None:
        if isinstance(flags, dict):
            spawn(self.use_flags(pipeline, model, flags), "save the benchmark's flags")

    async def use_flags(self, pipeline: str, model: str, flags: dict[str, Any]) -> bool:
        """Write ``flags`` into every entry of ``model`` for ``pipeline`` (the flags Orchard
        applies replaced, the others kept) and save the file; says how it went."""
        config = self.session.config
        if not any(e.key == (pipeline, model) for e in config.entries):
            self.view.show_flags_saved(f"{model} is not configured for {pipeline}.", True)
            return False
        try:
            entries = [
                dataclasses.replace(e, optimization_flags=with_flags(e.optimization_flags, flags))
                if e.key == (pipeline, model)
                else e
                for e in config.entries
            ]
            await self.session.set_config(ModelsConfig(tuple(entries), source=config.source))
        except ConfigError as exc:
            self.view.show_flags_saved(f"The flags cannot be used: {exc.msg}", True)
            return False
        except OSError as exc:
            self.view.show_flags_saved(f"aiModels.json cannot be saved: {exc}", True)
            return False
        when = (
            "Restart the node to use them."
            if self.session.running
            else "They apply when the node starts."
        )
        self.view.show_flags_saved(
            f"✔ Saved in aiModels.json: {model} ({pipeline}) now runs with {summary(flags)}. "
            + when
        )
        return True

    def _on_demo_status(self, _message: str, busy: bool) -> None:
        if not busy:
            self.refresh_disk()

    def _on_node_changed(self, _event: ev.NodeChanged) -> None:
        self._on_device_changed(self.view.device_id())

    def _on_device_changed(self, device: str) -> None:
        self.view.set_warning(self.warning_for(device) if device else "")

    def _on_run_requested(self, req: BenchRequest) -> None:
        if self.running:
            return
        self.view.set_running(True)
        self.task = spawn(self._run(req), "run a benchmark")

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    # ----------------------------------------------------------------- a run
    def _python(self) -> str:
        """The Python with torch: the GPU runtime's, else the session's (from source).
        Blocking (reads the runtime's selection)."""
        python = runtime.runtime_python(self.session.data_dir)
        if python:
            return python
        if runtime.frozen():
            return runtime.runner_python(self.session.data_dir)  # NoRuntime says what to do
        return self.session.runner_python

    async def _probe(self) -> frozenset[str]:
        """Which optional options the runtime's ``orchard bench`` has (asked once)."""
        if self.options is None:
            try:
                python = await asyncio.to_thread(self._python)
            except runtime.NoRuntime:
                return OPTIONAL
            self.options = await asyncio.to_thread(bench_options, python, bench_env())
            self.view.set_supported(self.options)
        return self.options

    async def _run(self, req: BenchRequest) -> None:
        self._stopping = False
        try:
            outcome = await self._bench(req)
        except asyncio.CancelledError:
            self.view.finish("stopped")
            raise
        except runtime.NoRuntime as exc:
            self.view.show_error(f"The benchmark cannot start: {exc.msg}")
            outcome = "failed"
        except Exception as exc:  # a bug here must not leave the page "running"
            log.exception("the benchmark failed")
            self.view.show_error(f"The benchmark failed unexpectedly: {exc}")
            outcome = "failed"
        finally:
            self.process = None
        self.view.finish(outcome)

    async def _bench(self, req: BenchRequest) -> str:
        """Run ``req``; the outcome: ``finished``, ``stopped`` or ``failed``."""
        view = self.view
        python = await asyncio.to_thread(self._python)
        options = await self._probe()
        json_path, chart_path = self.dir / "run.json", self.dir / "run.png"
        await asyncio.to_thread(_prepare, self.dir, json_path, chart_path)
        cmd = bench_command(
            python,
            req,
            models_dir=self.session.models_dir,
            json_path=json_path,
            chart_path=chart_path,
            data_dir=self.session.data_dir,
            options=options,
        )
        self.last_command = cmd
        view.append_output("$ orchard " + shlex.join(cmd[3:]))
        log.info("benchmark: %s", shlex.join(cmd))
        proc = self.process = bench_process(cmd, bench_env())
        try:
            async for text, transient, _stream in proc.lines():
                view.append_output(text, transient)
        except OSError as exc:
            view.show_error(f"The benchmark could not start: {exc}")
            return "failed"
        if self._stopping:
            return "stopped"
        if proc.returncode != 0:
            view.show_error(
                f"The benchmark failed ({describe_exit(proc.returncode or 0)}). Its last lines:",
                proc.tail()[-TAIL_LINES:],
            )
            return "failed"
        try:
            report, chart = await asyncio.to_thread(_keep, self.dir, json_path, chart_path)
        except (OSError, ValueError) as exc:
            view.show_error(f"The benchmark ran, but its report cannot be read: {exc}")
            return "failed"
        view.set_report(report, chart)
        return "finished"

    def stop(self) -> None:
        """Stop the benchmark: SIGTERM to its process group, SIGKILL if it lingers."""
        if self.process is not None:
            self._stopping = True
            self.view.set_status("Stopping…")
            self.process.stop(STOP_GRACE_S)
        elif self.task is not None and not self.task.done():
            self.task.cancel()  # still preparing: nothing started yet

    async def shutdown(self) -> None:
        """End a run in progress (the app is quitting): leaving the output kills the group."""
        task = self.task
        if task is None or task.done():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    # ----------------------------------------------------------------- the last result
    async def _load_last(self) -> None:
        try:
            last = await asyncio.to_thread(_read_last, self.dir)
        except (OSError, ValueError) as exc:
            log.warning("the last benchmark cannot be read: %s", exc)
            return
        if last is not None and self.view.report is None and not self.running:
            self.view.set_report(*last)


def _prepare(folder: Path, *stale: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for path in stale:
        path.unlink(missing_ok=True)


def _keep(folder: Path, json_path: Path, chart_path: Path) -> tuple[dict[str, Any], str | None]:
    """Read the run's report and keep it, and its chart, as the last one. Blocking."""
    report = json.loads(json_path.read_text(encoding="utf-8"))
    if not isinstance(report, dict):
        raise ValueError("the report is not a JSON object")
    os.replace(json_path, folder / "last.json")
    chart = folder / "last.png"
    if chart_path.is_file():
        os.replace(chart_path, chart)
    else:
        chart.unlink(missing_ok=True)
    return report, str(chart) if chart.is_file() else None


def _read_last(folder: Path) -> tuple[dict[str, Any], str | None] | None:
    """The last report and its chart, or None. Blocking."""
    path = folder / "last.json"
    if not path.is_file():
        return None
    report = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(report, dict):
        raise ValueError(f"{path} is not a JSON object")
    chart = folder / "last.png"
    return report, str(chart) if chart.is_file() else None
