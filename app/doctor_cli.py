"""``orchard doctor`` and ``orchard runtime setup|status|use``.

``add_parser(subparsers)`` adds both verbs to ``orchard``'s parser and ``run(args)`` runs
whichever was chosen. Nothing heavy is imported until a verb runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from core.runtime import BACKENDS


def add_parser(subparsers: Any) -> None:
    d = subparsers.add_parser(
        "doctor", help="check the driver, CUDA, GPUs, runtime, disk, ports and Docker"
    )
    d.add_argument("--data-dir", type=Path, default=None, help="Orchard's data directory")
    d.add_argument("--models-dir", type=Path, default=None, help="the models directory")
    d.add_argument("--port", type=int, default=8935, help="the node's port (default 8935)")
    d.add_argument("--gateway-port", type=int, default=8937, help="the gateway's (default 8937)")
    d.add_argument("--no-docker", action="store_true", help="skip the Docker engine check")
    d.add_argument("--json", action="store_true", help="print the checks as JSON")

    r = subparsers.add_parser("runtime", help="the Python environment runners start from")
    rsub = r.add_subparsers(dest="runtime_command", metavar="ACTION", required=True)
    s = rsub.add_parser("setup", help="create the GPU runtime (torch, diffusers) for this machine")
    s.add_argument(
        "--backend",
        choices=["auto", *BACKENDS],
        default="auto",
        help="torch build: auto (from the driver's CUDA version), cpu, or a CUDA build",
    )
    s.add_argument("--python", default=None, help="the Python to create the venv from")
    s.add_argument(
        "--index-url", default=None, help="a package index to use instead of PyPI and PyTorch's"
    )
    s.add_argument("--keep-cache", action="store_true", help="keep downloaded wheels afterwards")
    s.add_argument("--data-dir", type=Path, default=None)
    st = rsub.add_parser("status", help="which runtime runners use, and what it holds")
    st.add_argument("--data-dir", type=Path, default=None)
    st.add_argument("--json", action="store_true")
    u = rsub.add_parser("use", help="use an existing Python environment as the runtime")
    u.add_argument("python", type=Path, help="its python executable")
    u.add_argument("--data-dir", type=Path, default=None)


def _data_dir(args: argparse.Namespace) -> Path:
    from app.cli import user_data_dir

    return Path(args.data_dir) if args.data_dir else user_data_dir()


def run(args: argparse.Namespace) -> int:
    if args.command == "doctor":
        return _doctor(args)
    if args.runtime_command == "setup":
        return _setup(args)
    if args.runtime_command == "use":
        return _use(args)
    return _status(args)


def _doctor(args: argparse.Namespace) -> int:
    from app.cli import default_models_dir
    from core import doctor

    models_dir = args.models_dir
    if models_dir is None:
        models_dir = args.data_dir / "models" if args.data_dir else default_models_dir()
    settings = doctor.DoctorSettings(
        data_dir=_data_dir(args),
        models_dir=models_dir,
        node_port=args.port,
        gateway_port=args.gateway_port,
        docker=not args.no_docker,
    )
    checks = asyncio.run(doctor.run_checks(settings))
    if args.json:
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        print(doctor.format_table(checks))
    return doctor.exit_code(checks)


def _setup(args: argparse.Namespace) -> int:
    from core import runtime

    data_dir = _data_dir(args)

    async def go() -> int:
        backend = args.backend
        if backend == "auto":
            proposal = await runtime.propose()
            backend = proposal.backend
            gpus = ", ".join(proposal.gpus) or "none"
            print(f"GPUs: {gpus}; driver {proposal.driver_version or 'none'}", flush=True)
            print(f"runtime: {backend} ({proposal.reason})", flush=True)
        installer = runtime.RuntimeInstaller(
            data_dir,
            backend,
            base_python=args.python,
            pip=runtime.PipSettings(index_url=args.index_url),
            keep_cache=args.keep_cache,
        )
        print(f"setting up {installer.venv}", flush=True)
        last = ""
        async with contextlib.aclosing(installer.run()) as progress:
            async for p in progress:
                line = runtime.format_progress(p)
                if line != last:
                    print(line, flush=True)
                    last = line
        print(f"runners will start from {installer.python}")
        return 0

    try:
        return asyncio.run(go())
    except runtime.RuntimeSetupError as exc:
        print(f"orchard runtime setup: {exc.msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "\ninterrupted: run `orchard runtime setup` again to resume where it stopped",
            file=sys.stderr,
        )
        return 130


def _use(args: argparse.Namespace) -> int:
    from core import runtime

    try:
        info = asyncio.run(runtime.use_existing(_data_dir(args), args.python))
    except runtime.RuntimeSetupError as exc:
        print(f"orchard runtime use: {exc.msg}", file=sys.stderr)
        for line in exc.output_tail[-5:]:
            print(f"  {line}", file=sys.stderr)
        return 1
    cuda = f"CUDA {info.cuda}" if info.cuda_available else "no CUDA"
    print(f"runners will start from {info.python} (torch {info.torch}, {cuda})")
    return 0


def _status(args: argparse.Namespace) -> int:
    from core import runtime

    data_dir = _data_dir(args)
    info = runtime.read_selection(data_dir)
    installed = runtime.installed_runtimes(data_dir)
    if args.json:
        print(
            json.dumps(
                {"selected": asdict(info) if info else None, "installed": installed}, indent=2
            )
        )
        return 0 if info else 1
    if info is None:
        print("no runtime is set up: run `orchard runtime setup`")
    else:
        cuda = f"CUDA {info.cuda}" if info.cuda_available else "no CUDA"
        gone = "" if Path(info.python).exists() else " (MISSING: run orchard runtime setup)"
        print(f"runners start from {info.python}{gone}")
        kind = f"{info.kind} runtime {info.backend}" if info.backend else f"{info.kind} runtime"
        print(f"  {kind}: torch {info.torch} ({cuda}), diffusers {info.diffusers}, ")
        print(f"  Orchard {info.orchard or 'from the source checkout'}")
        if info.outdated:
            print("  its Orchard differs from this one: run `orchard runtime setup` to update it")
    for name, steps in installed.items():
        state = "ready" if "verify" in steps else f"incomplete (done: {', '.join(steps)})"
        print(f"runtime {name} in {runtime.runtime_root(data_dir) / name}: {state}")
    return 0 if info else 1
