"""``orchard``: the command line. Heavy imports happen inside each verb, never at start-up,
so ``orchard --help`` answers at once and never imports torch."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import core


def user_data_dir() -> Path:
    """Where Orchard keeps models, outputs and history (``ORCHARD_HOME`` overrides)."""
    env = os.environ.get("ORCHARD_HOME")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "orchard"


def default_models_dir() -> Path:
    return user_data_dir() / "models"


def _flags_spec(text: str) -> tuple[str, dict[str, Any]]:
    """``MODEL_ID:CHANNELS_LAST,COMPILE=unet`` (the node passes its config's flags this way)."""
    from core.errors import BadRequest
    from core.optimizations import parse, parse_cli

    model_id, sep, flags = text.partition(":")
    if not sep or not model_id:
        raise argparse.ArgumentTypeError(f"expected MODEL_ID:FLAG[=VALUE],..., got {text!r}")
    try:
        if flags.lstrip().startswith("{"):  # the node passes its config's flags as JSON
            parsed = json.loads(flags)
            parse(parsed)
            return model_id, parsed
        return model_id, parse_cli(flags)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"flags of {model_id}: invalid JSON: {exc}") from None
    except BadRequest as exc:
        raise argparse.ArgumentTypeError(exc.msg) from None


def _warm_spec(text: str) -> tuple[str, str]:
    from core.pipelines import parse_capability

    pipeline, sep, model_id = text.partition(":")
    if not sep or not model_id:
        raise argparse.ArgumentTypeError(f"expected PIPELINE:MODEL_ID, got {text!r}")
    try:
        parse_capability(pipeline)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return pipeline, model_id


def _pipeline(text: str) -> str:
    from core.pipelines import parse_capability

    try:
        return parse_capability(text).value
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _device(text: str) -> str:
    if text == "cpu" or (text.startswith("cuda:") and text[5:].isdigit()) or text == "cuda":
        return "cuda:0" if text == "cuda" else text
    raise argparse.ArgumentTypeError(f"device must be cpu or cuda:N, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchard",
        description="Orchard: run a Livepeer-style AI node on your GPUs. With no command, "
        "opens the desktop app (with no display: runs the node headless).",
    )
    parser.add_argument("--version", action="version", version=f"orchard {core.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("runner", help="run one runner process (one device, several models)")
    r.add_argument("--device", type=_device, default="cpu", help="cpu or cuda:N (default cpu)")
    r.add_argument("--port", type=int, default=8000)
    r.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    r.add_argument(
        "--token",
        default=os.environ.get("ORCHARD_RUNNER_TOKEN"),
        help="bearer token required on requests (or ORCHARD_RUNNER_TOKEN)",
    )
    r.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="models directory (diffusers folders or Hugging Face cache layout)",
    )
    r.add_argument(
        "--warm",
        type=_warm_spec,
        action="append",
        default=[],
        metavar="PIPELINE:MODEL_ID",
        help="load this model at start (repeatable)",
    )
    r.add_argument(
        "--flags",
        type=_flags_spec,
        action="append",
        default=[],
        metavar="MODEL_ID:FLAG[=VALUE],...",
        help="optimization flags of a --warm model, e.g. org/model:CHANNELS_LAST,COMPILE "
        "(repeatable; see docs/runner.md)",
    )
    r.add_argument(
        "--max-upload-mb",
        type=float,
        default=50.0,
        help="largest accepted request body in MiB (default 50)",
    )
    r.add_argument(
        "--max-side", type=int, default=2048, help="largest width or height accepted (default 2048)"
    )
    r.add_argument(
        "--max-steps", type=int, default=500, help="most inference steps accepted (default 500)"
    )
    r.add_argument("--max-images", type=int, default=8, help="most images per request (default 8)")

    n = sub.add_parser("node", help="run the orchestrator node with its runners (headless)")
    n.add_argument(
        "--models",
        type=Path,
        required=True,
        metavar="aiModels.json",
        help="Livepeer's aiModels.json (Orchard reads its extras: gpus, backend)",
    )
    n.add_argument(
        "--gpus",
        default="all",
        help="all, cpu, or GPU indices such as 0,1 (default all; cpu:N for N CPU runners)",
    )
    n.add_argument("--port", type=int, default=8935)
    n.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    n.add_argument("--models-dir", type=Path, default=None)
    n.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="job history, outputs and logs (default the user data directory)",
    )
    n.add_argument(
        "--reserve",
        action="append",
        default=[],
        metavar="GPU=GIB",
        help="VRAM to keep free on a GPU, e.g. 0=1.5 (repeatable; cpu for the CPU)",
    )

    n.add_argument(
        "--free",
        action="store_true",
        help="free mode for local testing: price 0, no payment required",
    )

    from app import doctor_cli, gateway_cli

    gateway_cli.add_parser(sub)
    doctor_cli.add_parser(sub)

    b = sub.add_parser("bench", help="benchmark a model: load, latency, throughput, memory")
    b.add_argument("--pipeline", required=True, type=_pipeline)
    b.add_argument("--model", default=None, help="model id (default: the --arch's random model)")
    b.add_argument("--device", type=_device, default="cpu")
    b.add_argument("--runs", type=int, default=5)
    b.add_argument("--steps", type=int, default=None)
    b.add_argument("--width", type=int, default=None)
    b.add_argument("--height", type=int, default=None)
    b.add_argument("--concurrency", default="1", help="e.g. 1,2,4")
    b.add_argument("--through", default="direct", help="direct,runner,node (any of them)")
    b.add_argument("--models-dir", type=Path, default=None)
    b.add_argument(
        "--arch",
        choices=["sdxl-turbo", "sd-turbo", "svd-xt"],
        default=None,
        help="a full-size architecture with random weights (with --random-weights)",
    )
    b.add_argument("--random-weights", action="store_true")
    b.add_argument(
        "--frames", type=int, default=None, help="video frames (image-to-video, direct path)"
    )
    b.add_argument(
        "--flags",
        default="",
        metavar="FLAG[=VALUE],...",
        help="optimization flags of the optimised variant, e.g. CHANNELS_LAST,COMPILE "
        "(all: every speed flag; see docs/runner.md)",
    )
    b.add_argument(
        "--compare",
        action="store_true",
        help="also run the plain path in the same run: speed-up and output equivalence",
    )
    b.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="record the measurements here for the placement planner (default the user data "
        "directory)",
    )
    b.add_argument(
        "--no-record", action="store_true", help="do not record measurements for placement"
    )
    b.add_argument("--json", type=Path, default=None, help="write the report as JSON")
    b.add_argument("--chart", type=Path, default=None, help="write a PNG chart")

    p = sub.add_parser("payments", help="the node's off-chain payment ledger and earnings")
    psub = p.add_subparsers(dest="payments_command", metavar="ACTION", required=True)
    d = psub.add_parser("deposit", help="record a gateway's deposit (off-chain ledger)")
    d.add_argument("sender", help="the gateway's Ethereum address")
    d.add_argument("deposit", type=int, help="deposit in wei")
    d.add_argument("--reserve", type=int, default=0, help="reserve in wei")
    d.add_argument("--data-dir", type=Path, default=None)
    e = psub.add_parser("earnings", help="fees, tickets and expected value received")
    e.add_argument("--data-dir", type=Path, default=None)
    e.add_argument("--days", type=int, default=7)
    e.add_argument(
        "--node",
        default=None,
        metavar="URL",
        help="ask a running node (its ledger is in use while it runs)",
    )

    m = sub.add_parser("models", help="manage models on disk")
    msub = m.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    t = msub.add_parser("make-tiny", help="write tiny random-weight models (noise output)")
    t.add_argument(
        "dir",
        type=Path,
        nargs="?",
        default=None,
        help="models directory (default: the user's models directory)",
    )
    t.add_argument("--overwrite", action="store_true")
    return parser


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.DEBUG if verbose else logging.WARNING)


def cmd_runner(args: argparse.Namespace) -> int:
    import uvicorn

    from core.pipelines.common import Limits
    from core.runner.server import RunnerSettings, create_app

    settings = RunnerSettings(
        device=args.device,
        models_dir=args.models_dir or default_models_dir(),
        token=args.token or None,
        warm=list(args.warm),
        flags=dict(args.flags),
        limits=Limits(
            max_side=args.max_side,
            max_pixels=args.max_side * args.max_side,
            max_steps=args.max_steps,
            max_images=args.max_images,
            max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        ),
    )
    app = create_app(settings)
    logging.getLogger(__name__).info(
        "runner on http://%s:%d, device %s, models from %s",
        args.host,
        args.port,
        settings.device,
        settings.models_dir,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def _reserve(items: list[str]) -> dict[int, int]:
    out = {}
    for item in items:
        gpu, sep, gib = item.partition("=")
        try:
            index = -1 if gpu.strip() == "cpu" else int(gpu)
            out[index] = int(float(gib) * 1024**3)
        except ValueError:
            raise SystemExit(f"orchard node: --reserve expects GPU=GIB, got {item!r}") from None
        if not sep:
            raise SystemExit(f"orchard node: --reserve expects GPU=GIB, got {item!r}")
    return out


def cmd_node(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from core import config
    from core.errors import OrchardError
    from core.orchestrator.node import Node, NodeSettings

    try:
        cfg = config.load(args.models)
    except OrchardError as exc:
        print(f"orchard node: {exc.msg}", file=sys.stderr)
        return 2
    except FileNotFoundError:
        print(f"orchard node: {args.models} does not exist", file=sys.stderr)
        return 2
    from core.runtime import NoRuntime, runner_python

    data_dir = args.data_dir or user_data_dir()
    try:
        python = runner_python(data_dir)
    except NoRuntime as exc:
        print(f"orchard node: {exc.msg}", file=sys.stderr)
        return 1
    settings = NodeSettings(
        config=cfg,
        runner_python=python,
        data_dir=data_dir,
        models_dir=args.models_dir or default_models_dir(),
        gpus=args.gpus,
        host=args.host,
        port=args.port,
        reserve=_reserve(args.reserve),
        free=args.free,
    )

    async def run() -> int:
        node = Node(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await node.start()
        except OrchardError as exc:
            print(f"orchard node: {exc.msg}", file=sys.stderr)
            return 1
        offered = ", ".join(f"{sl.capability.value}:{sl.model_id}" for sl in node.slots)
        print(f"orchard node on {node.url} offering {offered}; Ctrl-C to stop", flush=True)
        await stop.wait()
        print("stopping the node and its runners", flush=True)
        await node.stop()
        return 0

    return asyncio.run(run())


def cmd_bench(args: argparse.Namespace) -> int:
    from core.runner import bench

    models_dir = args.models_dir or default_models_dir()
    model = args.model
    if args.arch:
        if not args.random_weights:
            print(
                "orchard bench: --arch needs --random-weights (no weights are downloaded)",
                file=sys.stderr,
            )
            return 2
        from core.runner.archs import save_pipeline

        model = model or f"orchard-random/{args.arch}"
        if not (models_dir / model / "model_index.json").exists():
            import torch

            dtype = torch.float32 if args.device == "cpu" else torch.float16
            print(f"building {args.arch} with random weights in {models_dir / model}", flush=True)
            save_pipeline(args.arch, models_dir / model, dtype=dtype)
    if not model:
        print("orchard bench: give --model, or --arch with --random-weights", file=sys.stderr)
        return 2
    through = [t.strip() for t in args.through.split(",") if t.strip()]
    bad = [t for t in through if t not in bench.PATHS]
    if bad:
        print(f"orchard bench: --through takes {', '.join(bench.PATHS)}", file=sys.stderr)
        return 2
    from core.errors import BadRequest
    from core.optimizations import parse_cli

    try:
        flags = parse_cli(args.flags)
    except BadRequest as exc:
        print(f"orchard bench: --flags: {exc.msg}", file=sys.stderr)
        return 2
    if args.compare and not flags:
        print("orchard bench: --compare needs --flags (the optimised variant)", file=sys.stderr)
        return 2
    if args.frames is not None:
        if args.pipeline != "image-to-video" or args.frames < 1:
            print("orchard bench: --frames is for image-to-video, 1 or more", file=sys.stderr)
            return 2
        if through != ["direct"]:
            print(
                "orchard bench: --frames needs --through direct (the runner API has no frame "
                "count: runner and node use the model's own)",
                file=sys.stderr,
            )
            return 2
    if args.compare and "direct" not in through:
        through.insert(0, "direct")  # the outputs are compared on the direct path
    cfg = bench.BenchConfig(
        pipeline=args.pipeline,
        model=model,
        models_dir=models_dir,
        device=args.device,
        runs=args.runs,
        steps=args.steps,
        width=args.width,
        height=args.height,
        concurrency=[int(c) for c in args.concurrency.split(",")],
        through=through,
        frames=args.frames,
        flags=flags,
        compare=args.compare,
        data_dir=None if args.no_record else (args.data_dir or user_data_dir()),
    )
    rep = bench.run(cfg)
    print(bench.table(rep))
    if args.json:
        args.json.write_text(json.dumps(rep, indent=2))
    if args.chart:
        bench.chart(rep, args.chart)
    eq = rep.get("equivalence")
    return 1 if eq is not None and not eq["ok"] else 0


def cmd_payments(args: argparse.Namespace) -> int:
    import asyncio

    from core.errors import OrchardError
    from core.payments.chain import OffChainLedger
    from core.payments.earnings import earnings, format_earnings
    from core.payments.ledger import PaymentLedger

    data_dir = args.data_dir or user_data_dir()
    if args.payments_command == "earnings" and args.node:
        import httpx

        body = httpx.get(f"{args.node.rstrip('/')}/earnings", timeout=10).json()
        print(json.dumps(body, indent=2))
        return 0

    async def run() -> int:
        async with PaymentLedger(data_dir) as ledger:
            if args.payments_command == "deposit":
                await OffChainLedger(ledger).set_deposit(args.sender, args.deposit, args.reserve)
                print(
                    f"off-chain deposit of {args.sender}: {args.deposit} wei, reserve "
                    f"{args.reserve} wei (recorded in {data_dir}; no blockchain involved)"
                )
            else:
                print(format_earnings(await earnings(ledger), show_days=args.days))
        return 0

    try:
        return asyncio.run(run())
    except (OrchardError, ValueError) as exc:
        msg = getattr(exc, "msg", str(exc))
        if "another Orchard process" in msg:
            msg += "; while the node runs, use: orchard payments earnings --node http://HOST:PORT"
        print(f"orchard payments: {msg}", file=sys.stderr)
        return 1


def cmd_make_tiny(args: argparse.Namespace) -> int:
    from core.runner.tiny import make_tiny_models

    out = args.dir or default_models_dir()
    for path in make_tiny_models(out, overwrite=args.overwrite):
        print(path)
    return 0


def has_display() -> bool:
    """Whether a window can open: any platform but Linux, a display, or Qt told where to draw."""
    if sys.platform != "linux" or os.environ.get("QT_QPA_PLATFORM"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def cmd_default(args: argparse.Namespace) -> int:
    """No command: the desktop app; with no display, the node headless: the user's
    aiModels.json if there is one, else the demo on tiny local models (noise output)."""
    if has_display():
        try:
            from app.gui.main import main as gui_main
        except ImportError as exc:
            print(
                f"orchard: the desktop app is not installed ({exc}); install the 'gui' extra "
                "(pip install -e '.[gui]') or run the node headless: orchard node --models "
                "aiModels.json",
                file=sys.stderr,
            )
            return 2
        return gui_main([])
    from core.runner.tiny import make_tiny_models

    config = user_data_dir() / "aiModels.json"
    free = []
    if not config.exists():
        make_tiny_models(default_models_dir())
        from core import config as config_mod
        from core.demo import demo_config

        config = user_data_dir() / "demo-aiModels.json"
        config.parent.mkdir(parents=True, exist_ok=True)
        config_mod.save(demo_config(str(config)), config)
        free = ["--free"]
        print(
            "No display: running the node headless on the demo configuration (tiny local "
            "models: they produce noise, not pictures), in free mode.",
            flush=True,
        )
    else:
        print(f"No display: running the node headless on {config}.", flush=True)
    print(
        "Try: curl -s localhost:8935/text-to-image -H 'Content-Type: application/json' "
        '-d \'{"prompt": "a cat", "width": 256, "height": 256, '
        '"num_inference_steps": 4}\' | head -c 200',
        flush=True,
    )
    ns = build_parser().parse_args(["node", "--models", str(config), *free])
    return cmd_node(ns)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if args.command == "runner":
        return cmd_runner(args)
    if args.command == "node":
        return cmd_node(args)
    if args.command == "gateway":
        from app import gateway_cli

        return gateway_cli.run(args)
    if args.command in ("doctor", "runtime"):
        from app import doctor_cli

        return doctor_cli.run(args)
    if args.command == "bench":
        return cmd_bench(args)
    if args.command == "payments":
        return cmd_payments(args)
    if args.command == "models" and args.models_command == "make-tiny":
        return cmd_make_tiny(args)
    return cmd_default(args)


if __name__ == "__main__":
    sys.exit(main())
