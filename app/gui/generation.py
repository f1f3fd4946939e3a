"""Test generations: the adapter the Test generation page sends requests through.

:class:`GatewayGenerator` (the app's default) sends them through the in-process gateway
(``core.gateway``) to the local node, so a test generation takes the path a paying
application takes: discovery, selection, price cap, payment with tickets signed by the app's
own gateway key. :class:`NodeHttpGenerator` POSTs straight to the node (kept for tests of the
page itself).
"""

from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from core.errors import OrchardError
from core.pipelines import Capability
from widgets.generate_form import GenerationRequest

JOB_ID_HEADER = "X-Request-Id"


class GenerationError(OrchardError):
    """A test generation was refused or failed; the message is the node's."""


@dataclass(frozen=True)
class GenerationResult:
    """The job the node ran (its outputs arrive as events); ``size``: the answer's bytes,
    left unparsed: a video's frames are megabytes of base64 the Qt thread need not read."""

    job_id: str
    size: int


class Generator(Protocol):
    async def generate(self, request: GenerationRequest) -> GenerationResult: ...

    async def aclose(self) -> None: ...


def error_text(resp: httpx.Response) -> str:
    """The runner API's error shape (``{"detail": {"msg"}}`` or 422's list) as a sentence."""
    try:
        detail = resp.json().get("detail")
    except ValueError:
        return f"HTTP {resp.status_code}: {resp.text[:200]}"
    if isinstance(detail, dict) and "msg" in detail:
        return str(detail["msg"])
    if isinstance(detail, list) and detail:
        first = detail[0]
        where = ".".join(str(x) for x in first.get("loc", [])[1:])
        return f"{where}: {first.get('msg', '')}".strip(": ")
    return f"HTTP {resp.status_code}"


class NodeHttpGenerator:
    """POSTs to the node at ``url_of()`` (None while the node is not running)."""

    def __init__(self, url_of: Callable[[], str | None], timeout_s: float = 900.0) -> None:
        self.url_of = url_of
        self.timeout_s = timeout_s
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        """One client for every request: making one loads the CA bundle (tens of ms on the
        Qt thread), which a test generation should not pay each time."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        url = self.url_of()
        if url is None:
            raise GenerationError("the node is not running; start it on the Node page")
        route = f"{url}/{request.capability}"
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            if request.capability == Capability.TEXT_TO_IMAGE.value:
                resp = await client.post(route, json=request.params)
            else:
                path = Path(request.image_path or "")
                data = await asyncio.to_thread(path.read_bytes)
                mime = mimetypes.guess_type(path.name)[0] or "image/png"
                form = {k: str(v) for k, v in request.params.items()}
                resp = await client.post(route, data=form, files={"image": (path.name, data, mime)})
        if resp.status_code != 200:
            raise GenerationError(error_text(resp))
        return GenerationResult(resp.headers.get(JOB_ID_HEADER, ""), len(resp.content))


#: What the app's own gateway key is credited with at its own paid node (off-chain ledger),
#: so that test generations can pay: 1 ETH in wei. Off-chain: no ETH moves.
SELF_DEPOSIT = 10**18


class GatewayGenerator:
    """Through ``core.gateway.Gateway`` (in-process) to the node ``node_of()`` returns."""

    def __init__(self, node_of: Callable[[], Any], key_path: Path) -> None:
        self.node_of = node_of
        self.key_path = key_path
        self._gateway: Any = None
        self._payer: Any = None
        self._url: str | None = None

    async def _gateway_for(self, node: Any) -> Any:
        from core.gateway.discovery import Discovery
        from core.gateway.gateway import Gateway
        from core.gateway.payer import TicketPayer
        from core.payments.sender import TicketSender, load_or_create_key

        if self._gateway is not None and self._url == node.url:
            return self._gateway
        await self.aclose()
        account = await asyncio.to_thread(load_or_create_key, self.key_path)
        chain = getattr(node.payments, "chain", None)
        if chain is not None:  # a paid node: credit the app's own gateway there (off-chain)
            await chain.set_deposit(account.address, SELF_DEPOSIT)
        self._payer = TicketPayer(TicketSender(account))
        discovery = Discovery([node.url], interval_s=2.0, sender=account.address)
        self._gateway = Gateway(discovery, payer=self._payer)
        await self._gateway.start()
        self._url = node.url
        return self._gateway

    async def aclose(self) -> None:
        if self._gateway is not None:
            await self._gateway.stop()
            self._gateway = None
        if self._payer is not None:
            await self._payer.aclose()
            self._payer = None

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        from core.gateway.gateway import REQUEST_ID_HEADER
        from core.pipelines import module

        node = self.node_of()
        if node is None or getattr(node, "state", "") != "running":
            raise GenerationError("the node is not running; start it on the Node page")
        gateway = await self._gateway_for(node)
        cap = Capability(request.capability)
        params = dict(request.params)
        steps = int(params.get("num_inference_steps") or 1)
        try:
            if cap == Capability.TEXT_TO_IMAGE:
                pixels = module(cap).billing_pixels(params)
                result = await gateway.submit(cap, json=params, pixels=pixels, steps=steps)
            else:
                path = Path(request.image_path or "")
                data = await asyncio.to_thread(path.read_bytes)
                mime = mimetypes.guess_type(path.name)[0] or "image/png"
                form = {k: str(v) for k, v in params.items()}
                if cap == Capability.IMAGE_TO_IMAGE:
                    size = await asyncio.to_thread(_image_size, data)
                    pixels = module(cap).billing_pixels(
                        size[0], size[1], int(params.get("num_images_per_prompt") or 1)
                    )
                else:
                    pixels = module(cap).billing_pixels(params)
                result = await gateway.submit(
                    cap,
                    data=form,
                    files={"image": (path.name, data, mime)},
                    pixels=pixels,
                    steps=steps,
                )
        except OrchardError as exc:
            raise GenerationError(exc.msg) from None
        if result.status != 200:
            raise GenerationError(_body_error(result.status, result.body))
        return GenerationResult(result.headers.get(REQUEST_ID_HEADER, ""), len(result.body))


def _image_size(data: bytes) -> tuple[int, int]:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return img.size


def _body_error(status: int, body: bytes) -> str:
    import json

    try:
        detail = json.loads(body).get("detail")
    except ValueError:
        return f"HTTP {status}"
    if isinstance(detail, dict) and "msg" in detail:
        return str(detail["msg"])
    return f"HTTP {status}: {str(detail)[:200]}"
