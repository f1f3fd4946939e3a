"""``orchard gateway``: the gateway (B) headless, in front of one or more orchestrators.

``add_parser(subparsers)`` adds the verb to ``orchard``'s parser and ``run(args)`` runs it;
``main(argv)`` parses the verb's options alone (``python -m app.gateway_cli ...``). Heavy
imports (FastAPI, uvicorn) happen in ``run`` so that ``orchard --help`` stays light.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.gateway.gateway import Gateway, Payer

DEFAULT_PORT = 8937


def _urls(text: str) -> list[str]:
    from core.gateway.discovery import normalize_url

    try:
        urls = [normalize_url(u) for u in text.split(",") if u.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not urls:
        raise argparse.ArgumentTypeError("expected URL[,URL...]")
    return urls


def _price_spec(text: str) -> str:
    from core.gateway.selection import PriceCaps

    try:
        PriceCaps.parse([text])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--orchestrators",
        type=_urls,
        action="append",
        required=True,
        metavar="URL[,URL...]",
        help="orchestrators to send jobs to (comma-separated; repeatable)",
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    p.add_argument(
        "--max-price",
        type=_price_spec,
        action="append",
        default=[],
        metavar="[PIPELINE:MODEL_ID=]WEI_PER_PIXEL",
        help="most to pay per pixel: a default (5000) or for one model "
        "(text-to-image:stabilityai/sdxl-turbo=8000); repeatable; default no cap",
    )
    p.add_argument(
        "--key",
        type=Path,
        default=None,
        metavar="FILE",
        help="the gateway's payment key (created if missing; default in the user data dir)",
    )
    p.add_argument(
        "--poll-interval",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds between polls of each orchestrator's /info (default 5)",
    )
    p.add_argument(
        "--retry-budget",
        type=float,
        default=60.0,
        metavar="S",
        help="no new attempt on another orchestrator after this long (default 60)",
    )


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``gateway`` to ``orchard``'s subcommands."""
    g = subparsers.add_parser(
        "gateway", help="run the gateway: take jobs from applications, send them to orchestrators"
    )
    add_arguments(g)
    return g


def build_gateway(args: argparse.Namespace, payer: Payer | None = None) -> Gateway:
    """The gateway ``args`` describe (the payment key is the payer's business)."""
    from core.gateway.discovery import Discovery
    from core.gateway.gateway import Gateway
    from core.gateway.selection import PriceCaps

    urls = [u for group in args.orchestrators for u in group]
    return Gateway(
        Discovery(urls, interval_s=args.poll_interval, sender=getattr(payer, "address", None)),
        PriceCaps.parse(args.max_price),
        payer=payer,
        retry_budget_s=args.retry_budget,
    )


def _default_key() -> Path:
    from app.cli import user_data_dir

    return user_data_dir() / "keys" / "gateway.json"


def run(args: argparse.Namespace, payer: Payer | None = None) -> int:
    """Serve until SIGINT or SIGTERM. 0 after a clean stop, 1 if it cannot start, 2 for a
    wrong option."""
    import asyncio
    import signal

    from core.errors import OrchardError
    from core.gateway.service import GatewayServer

    if logging.getLogger("httpx").level == logging.NOTSET:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise

    async def serve() -> int:
        nonlocal payer
        ticket_payer = None
        if payer is None:
            from core.gateway.payer import TicketPayer
            from core.payments.sender import TicketSender, load_or_create_key

            key = args.key or _default_key()
            try:
                account = await asyncio.to_thread(load_or_create_key, key)
            except (OSError, ValueError) as exc:
                print(
                    f"orchard gateway: cannot read or create the key file {key}: {exc}",
                    file=sys.stderr,
                )
                return 2
            ticket_payer = TicketPayer(TicketSender(account))
            payer = ticket_payer
            print(f"orchard gateway: paying as {account.address} (key {key})", flush=True)
        server = GatewayServer(build_gateway(args, payer), args.host, args.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await server.start()
        except OrchardError as exc:
            print(f"orchard gateway: {exc.msg}", file=sys.stderr)
            if ticket_payer is not None:
                await ticket_payer.aclose()
            return 1
        snap = server.gateway.snapshot()
        reachable = sum(1 for o in snap if o["reachable"])
        print(
            f"orchard gateway on {server.url} for {len(snap)} orchestrators "
            f"({reachable} reachable), price caps: {server.gateway.caps.describe()}; "
            "Ctrl-C to stop",
            flush=True,
        )
        await stop.wait()
        print("stopping the gateway", flush=True)
        await server.stop()
        if ticket_payer is not None:
            await ticket_payer.aclose()
        return 0

    return asyncio.run(serve())


def main(argv: list[str] | None = None) -> int:
    """``orchard gateway`` on its own (until app/cli.py wires it in)."""
    parser = argparse.ArgumentParser(
        prog="orchard gateway",
        description="Take jobs from applications and send them to orchestrators.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
