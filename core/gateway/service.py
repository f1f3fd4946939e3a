"""The gateway's application-facing HTTP API (``resources/contracts/ai-gateway-openapi.yaml``).

``POST /text-to-image`` (JSON), ``POST /image-to-image`` and ``POST /image-to-video``
(multipart): the same request models and validation as the orchestrator
(:mod:`core.pipelines`), so a bad request is refused here with the same message and never
costs a payment. Answers come from the O that ran the job; errors are
``{"detail": {"msg": ...}}`` (422: the validation list). Every answer from an O carries
``X-Orchestrator`` (its URL), ``X-Request-Id`` (its job id) and ``X-Gateway-Attempts``
(each try and its outcome).

The contract's ``VideoResponse`` is ``{"images": [Media, ...]}``, while orchestrators and
runners answer image-to-video with the runner contract's ``{"frames": [[Media, ...]]}``:
the gateway flattens the frames, in order, into ``images``.

Also ``GET /orchestrators`` (discovery state: offers, prices, scores, suspension, errors,
stats) and ``GET /health``. :class:`GatewayServer` serves the app in-process (uvicorn on the
running loop, no signal handlers of its own) for ``orchard gateway`` and the desktop app.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field

import core
from core.errors import ServiceUnavailable
from core.gateway.gateway import Gateway, GatewayResult
from core.http import install_error_handlers
from core.pipelines import Capability, image_to_image, image_to_video
from core.pipelines import text_to_image as t2i
from core.pipelines.common import DEFAULT_LIMITS, Limits
from core.pipelines.image_to_image import ImageToImageParams
from core.pipelines.image_to_video import ImageToVideoParams
from core.pipelines.text_to_image import TextToImageParams
from core.runner import media

log = logging.getLogger(__name__)

#: Where ``orchard gateway`` listens by default (the node is on 8935).
DEFAULT_PORT = 8937
ORCHESTRATOR_HEADER = "X-Orchestrator"
ATTEMPTS_HEADER = "X-Gateway-Attempts"


# ---------------------------------------------------------------- contract models (docs)
class Media(BaseModel):
    url: str = Field(..., description="The URL where the media can be accessed.")
    seed: int = Field(..., description="The seed used to generate the media.")
    nsfw: bool = Field(..., description="Whether the media was flagged as NSFW.")


class ImageResponse(BaseModel):
    images: list[Media] = Field(..., description="The generated images.")


class VideoResponse(BaseModel):
    images: list[Media] = Field(..., description="The generated video's frames, in order.")


class APIError(BaseModel):
    msg: str = Field(..., description="The error message.")


class HTTPError(BaseModel):
    detail: APIError = Field(..., description="Detailed error information.")


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": HTTPError, "description": "Bad Request"},
    401: {"model": HTTPError, "description": "Unauthorized"},
    500: {"model": HTTPError, "description": "Internal Server Error"},
    503: {"model": HTTPError, "description": "No orchestrator available"},
}


def form_fields(params: BaseModel) -> dict[str, str]:
    """Multipart fields the client set, as strings (the O parses them again)."""
    out = {}
    for key, value in params.model_dump(exclude_unset=True).items():
        if value is None:
            continue
        out[key] = json.dumps(value) if isinstance(value, bool) else str(value)
    return out


def frames_to_images(body: bytes) -> bytes:
    """The runner's ``{"frames": [[m, ...]]}`` as the gateway contract's ``{"images": [...]}``."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body
    if not isinstance(parsed, dict) or "frames" not in parsed or "images" in parsed:
        return body
    images = [m for frame in parsed["frames"] for m in frame]
    return json.dumps({"images": images}, separators=(",", ":")).encode()


def _header_text(text: str) -> str:
    return text.encode("latin-1", "replace").decode("latin-1")[:2000]


def _answer(result: GatewayResult, video: bool = False) -> Response:
    body = result.body
    if video and result.status == 200:
        body = frames_to_images(body)
    headers = {
        ORCHESTRATOR_HEADER: result.orchestrator_url,
        ATTEMPTS_HEADER: _header_text("; ".join(a.describe() for a in result.attempts)),
        **result.headers,
    }
    return Response(
        body, status_code=result.status, media_type=result.content_type, headers=headers
    )


def create_app(gateway: Gateway, limits: Limits = DEFAULT_LIMITS) -> FastAPI:
    app = FastAPI(
        title="Orchard gateway",
        description="Livepeer AI gateway API, served by Orchard",
        version=core.__version__,
    )

    install_error_handlers(app)

    @app.post(
        "/text-to-image",
        tags=["generate"],
        operation_id="genTextToImage",
        summary="Text To Image",
        description="Generate images from text prompts.",
        response_model=ImageResponse,
        responses=ERRORS,
    )
    async def text_to_image(params: TextToImageParams) -> Response:
        t2i.validate(params, limits)
        body = params.model_dump(exclude_unset=True)
        result = await gateway.submit(
            Capability.TEXT_TO_IMAGE,
            json=body,
            pixels=t2i.billing_pixels(body),
            steps=params.num_inference_steps,
        )
        return _answer(result)

    @app.post(
        "/image-to-image",
        tags=["generate"],
        operation_id="genImageToImage",
        summary="Image To Image",
        description="Apply image transformations to a provided image.",
        response_model=ImageResponse,
        responses=ERRORS,
    )
    async def image_to_image_route(
        params: Annotated[ImageToImageParams, Form()],
        image: Annotated[UploadFile, File(description="Uploaded image to modify.")],
    ) -> Response:
        data = await image.read()
        img = await asyncio.to_thread(media.decode_image, data, limits.max_pixels, "image")
        w, h = img.width - img.width % 8, img.height - img.height % 8
        image_to_image.validate(params, w, h, limits)
        result = await gateway.submit(
            Capability.IMAGE_TO_IMAGE,
            data=form_fields(params),
            files={"image": (image.filename or "image", data, image.content_type or "image/png")},
            pixels=image_to_image.billing_pixels(
                img.width, img.height, params.num_images_per_prompt
            ),
            # diffusers runs strength x steps of an image-to-image job
            steps=max(1, int(params.num_inference_steps * params.strength)),
        )
        return _answer(result)

    @app.post(
        "/image-to-video",
        tags=["generate"],
        operation_id="genImageToVideo",
        summary="Image To Video",
        description="Generate a video from a provided image.",
        response_model=VideoResponse,
        responses=ERRORS,
    )
    async def image_to_video_route(
        params: Annotated[ImageToVideoParams, Form()],
        image: Annotated[UploadFile, File(description="Uploaded image to animate.")],
    ) -> Response:
        image_to_video.validate(params, limits)
        data = await image.read()
        await asyncio.to_thread(media.decode_image, data, limits.max_pixels, "image")
        result = await gateway.submit(
            Capability.IMAGE_TO_VIDEO,
            data=form_fields(params),
            files={"image": (image.filename or "image", data, image.content_type or "image/png")},
            pixels=image_to_video.billing_pixels(params.model_dump()),
            steps=params.num_inference_steps,
        )
        return _answer(result, video=True)

    @app.get("/orchestrators", tags=["gateway"], summary="Discovered orchestrators")
    async def orchestrators() -> dict[str, Any]:
        return {"caps": gateway.caps.describe(), "orchestrators": gateway.snapshot()}

    @app.get("/health", tags=["gateway"], summary="Health")
    async def health() -> dict[str, Any]:
        snap = gateway.snapshot()
        return {
            "status": "OK",
            "orchestrators": len(snap),
            "reachable": sum(1 for o in snap if o["reachable"]),
        }

    return app


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the owner handles signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class GatewayServer:
    """The gateway and its HTTP API on the running loop. ``await start()``, ``await stop()``."""

    def __init__(
        self,
        gateway: Gateway,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.gateway = gateway
        self.host = host
        self.port = port
        self.limits = limits
        self.url = f"http://{host}:{port}"
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self.gateway.started:
            await self.gateway.start()
        config = uvicorn.Config(
            create_app(self.gateway, self.limits),
            host=self.host,
            port=self.port,
            log_level="warning",
            lifespan="off",
            access_log=False,
        )
        server = _Server(config)
        self._server = server
        self._task = asyncio.create_task(self._serve(server))
        while not server.started:
            if self._task.done():
                exc = self._task.exception()
                self._server = None
                await self.gateway.stop()
                raise ServiceUnavailable(f"could not serve on {self.url}: {exc}")
            await asyncio.sleep(0.05)
        sock = server.servers[0].sockets[0].getsockname() if server.servers else None
        if sock:
            self.url = f"http://{self.host}:{sock[1]}"

    @staticmethod
    async def _serve(server: _Server) -> None:
        try:
            await server.serve()
        except SystemExit as exc:  # uvicorn exits when it cannot bind; never end the loop
            raise RuntimeError(
                f"the address is in use or not available (uvicorn exit {exc.code})"
            ) from None

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            if self._task is not None:
                with contextlib.suppress(Exception):
                    await self._task
            self._server = None
        await self.gateway.stop()
