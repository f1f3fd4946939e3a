"""The runner's HTTP API: Livepeer's AI runner routes, exactly, plus documented extensions.

Contract routes (``resources/contracts/ai-runner-openapi.yaml``): ``POST /text-to-image``
(JSON), ``POST /image-to-image`` and ``POST /image-to-video`` (multipart), ``GET /health``,
``GET /hardware/info``, ``GET /hardware/stats``, ``GET /version``.

Extensions (see docs/runner.md): ``GET /models``, ``POST /models/load``,
``POST /models/unload``, ``GET /progress/{request_id}`` (Server-Sent Events) and
``GET /outputs/{request_id}.mp4`` (the H.264 encoding of a generated video).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Request, Response, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import core
from core.errors import BadRequest, ModelNotLoaded, OrchardError
from core.http import detail, install_error_handlers
from core.pipelines import Capability, image_to_image, image_to_video, parse_capability
from core.pipelines import text_to_image as t2i
from core.pipelines.common import Limits, resolve_seed
from core.pipelines.image_to_image import ImageToImageParams
from core.pipelines.image_to_video import ImageToVideoParams
from core.pipelines.text_to_image import TextToImageParams
from core.runner import hardware, media
from core.runner.engine import Engine, LoadedModel
from core.runner.preview import PreviewMaker
from core.runner.progress import REQUEST_ID_HEADER, ProgressHub, sse

log = logging.getLogger(__name__)

#: Paths that answer without a bearer token, as in Livepeer's runner.
PUBLIC_PATHS = frozenset({"/health", "/hardware/info", "/hardware/stats", "/version"})
#: Generated videos kept for download, newest last.
MAX_OUTPUTS = 32


# ---------------------------------------------------------------- response models
class Media(BaseModel):
    url: str = Field(..., description="The URL where the media can be accessed.")
    seed: int = Field(..., description="The seed used to generate the media.")
    nsfw: bool = Field(..., description="Whether the media was flagged as NSFW.")


class ImageResponse(BaseModel):
    images: list[Media] = Field(..., description="The generated images.")


class VideoResponse(BaseModel):
    frames: list[list[Media]] = Field(..., description="The generated video frames.")


class APIError(BaseModel):
    msg: str = Field(..., description="The error message.")


class HTTPError(BaseModel):
    detail: APIError = Field(..., description="Detailed error information.")


class LoadRequest(BaseModel):
    pipeline: str = Field(..., description="text-to-image, image-to-image or image-to-video")
    model_id: str = Field(..., description="Hugging Face repo id (org/name) or a local path")
    optimization_flags: dict[str, Any] = Field(default_factory=dict)


class UnloadRequest(BaseModel):
    pipeline: str
    model_id: str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": HTTPError, "description": "Bad Request"},
    401: {"model": HTTPError, "description": "Unauthorized"},
    413: {"model": HTTPError, "description": "Upload too large"},
    500: {"model": HTTPError, "description": "Internal Server Error"},
}


@dataclass
class RunnerSettings:
    device: str = "cpu"
    models_dir: Path = Path("models")
    token: str | None = None
    warm: list[tuple[str, str]] = field(default_factory=list)
    #: model_id -> optimization flags applied when it is warmed at start
    flags: dict[str, dict[str, Any]] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)


class GuardMiddleware:
    """Bearer token check and upload size limit, before any body is parsed."""

    def __init__(self, app: ASGIApp, token: str | None, max_body: int) -> None:
        self.app = app
        self.token = token
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.token and scope["path"] not in PUBLIC_PATHS:
            auth = headers.get("authorization", "")
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), self.token):
                msg = "missing bearer token" if not auth else "invalid bearer token"
                await detail(401, f"{msg}: send 'Authorization: Bearer <token>'")(
                    scope, receive, send
                )
                return
        length = headers.get("content-length")
        too_big = detail(
            413, f"request body is larger than this runner's upload limit of {self.max_body} bytes"
        )
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await too_big(scope, receive, send)
            return
        seen = 0
        exceeded = False
        replaced = False

        async def counted_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    exceeded = True
                    raise _TooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            # Whatever the app made of the interrupted body, the answer is 413.
            nonlocal replaced
            if not exceeded:
                await send(message)
            elif not replaced:
                replaced = True
                await too_big(scope, receive, send)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _TooLarge:
            if not replaced:
                await too_big(scope, receive, send)


StepFn = Callable[[int, int, Any], None]
StartFn = Callable[[], None]


class _TooLarge(Exception):
    pass


class Runner:
    """State of one runner process: the engine, progress channels, outputs, warm-up."""

    def __init__(self, settings: RunnerSettings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engine = engine or Engine(settings.device, settings.models_dir)
        self.progress: ProgressHub | None = None
        self.outputs: OrderedDict[str, asyncio.Task[bytes]] = OrderedDict()
        self.warming = False
        self.warm_errors: list[str] = []

    @property
    def hub(self) -> ProgressHub:
        if self.progress is None:
            self.progress = ProgressHub()
        return self.progress

    async def warm(self) -> None:
        self.warming = True
        try:
            for pipeline, model_id in self.settings.warm:
                try:
                    await asyncio.wrap_future(
                        self.engine.submit(
                            self.engine.load,
                            pipeline,
                            model_id,
                            self.settings.flags.get(model_id),
                        )
                    )
                except Exception as exc:  # reported by /health and the log
                    msg = exc.msg if isinstance(exc, OrchardError) else repr(exc)
                    log.error("could not warm %s %s: %s", pipeline, model_id, msg)
                    self.warm_errors.append(f"{pipeline}:{model_id}: {msg}")
        finally:
            self.warming = False

    def primary(self) -> tuple[str, str]:
        models = self.engine.models()
        if models:
            return models[0].capability.value, models[0].model_id
        if self.settings.warm:
            return self.settings.warm[0]
        return "", ""

    def _follow(self, rid: str, follow: bool, model: LoadedModel) -> tuple[StepFn, StartFn]:
        """Publish ``queued`` for ``rid``; the step and start callbacks the worker calls."""
        hub = self.hub
        hub.publish(
            rid,
            "queued",
            pipeline=model.capability.value,
            model_id=model.model_id,
            queue_depth=self.engine.queue_depth,
        )
        previews = PreviewMaker(model.family) if follow else None

        def on_step(step: int, total: int, latents: Any) -> None:
            urls = previews.maybe(step - 1, total, latents) if previews is not None else None
            hub.publish_threadsafe(rid, "step", step=step, steps=total, previews=urls or [])

        def on_start() -> None:
            hub.publish_threadsafe(rid, "started")

        return on_step, on_start

    async def run(
        self, rid: str, follow: bool, model: LoadedModel, job: Callable[..., Any], *args: Any
    ) -> Any:
        """Queue ``job`` on the worker thread, publishing progress for ``rid``."""
        on_step, on_start = self._follow(rid, follow, model)

        def work() -> Any:
            on_start()
            return job(model, *args, on_step)

        return await asyncio.wrap_future(self.engine.submit(work))

    async def run_images(
        self, rid: str, follow: bool, model: LoadedModel, params: Any, seed: int, **extra: Any
    ) -> Any:
        """An image job through the engine's batching queue (see the BATCH flag)."""
        on_step, on_start = self._follow(rid, follow, model)
        fut = self.engine.submit_images(model, params, seed, on_step, on_start, **extra)
        return await asyncio.wrap_future(fut)

    def keep_output(self, rid: str, task: asyncio.Task[bytes]) -> None:
        self.outputs[rid] = task
        while len(self.outputs) > MAX_OUTPUTS:
            self.outputs.popitem(last=False)


def _request_id(request: Request, response: Response) -> tuple[str, bool]:
    given = request.headers.get(REQUEST_ID_HEADER, "").strip()
    rid = given[:128] if given else uuid.uuid4().hex
    response.headers[REQUEST_ID_HEADER] = rid
    return rid, bool(given)


async def _read_upload(upload: UploadFile, limits: Limits, field_name: str = "image") -> Any:
    data = await upload.read()
    return await asyncio.to_thread(media.decode_image, data, limits.max_pixels, field_name)


def _crop_to_multiple_of_8(img: Any) -> Any:
    w, h = img.size
    cw, ch = w - w % 8, h - h % 8
    if (cw, ch) == (w, h) or cw == 0 or ch == 0:
        return img
    left, top = (w - cw) // 2, (h - ch) // 2
    return img.crop((left, top, left + cw, top + ch))


def _encode_images(images: list[Any], level: int | None = None) -> list[str]:
    return [media.png_data_url(img, 1 if level is None else level) for img in images]


def create_app(settings: RunnerSettings, engine: Engine | None = None) -> FastAPI:
    runner = Runner(settings, engine)
    limits = settings.limits

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        runner.hub  # noqa: B018  (created on the loop)
        warm_task = asyncio.create_task(runner.warm())
        try:
            yield
        finally:
            warm_task.cancel()
            runner.engine.shutdown()

    app = FastAPI(
        title="Orchard runner",
        description="Livepeer AI runner API, served by Orchard",
        version=core.__version__,
        lifespan=lifespan,
    )
    app.state.runner = runner
    app.add_middleware(GuardMiddleware, token=settings.token, max_body=limits.max_upload_bytes)

    def failed(request: Request, status: int, msg: str) -> None:
        """Tell a progress follower that its request ended in an error."""
        rid = request.headers.get(REQUEST_ID_HEADER, "").strip()[:128]
        if rid and request.method == "POST":
            runner.hub.publish(rid, "error", status=status, msg=msg)

    install_error_handlers(app, failed)

    async def images_answer(rid: str, result: Any, model: LoadedModel) -> dict[str, Any]:
        """PNG-encode (off the worker thread) and answer an ``ImageResponse``."""
        level = model.optimizations.png_level
        urls = await asyncio.to_thread(_encode_images, result.images, level)
        runner.hub.publish(rid, "done", images=len(urls))
        media_list = zip(urls, result.seeds, result.nsfw, strict=True)
        return {"images": [{"url": u, "seed": s, "nsfw": n} for u, s, n in media_list]}

    # ------------------------------------------------------------ generate
    @app.post(
        "/text-to-image",
        response_model=ImageResponse,
        responses=ERRORS,
        tags=["generate"],
        operation_id="genTextToImage",
        summary="Text To Image",
    )
    async def text_to_image(
        params: TextToImageParams, request: Request, response: Response
    ) -> dict[str, Any]:
        rid, follow = _request_id(request, response)
        t2i.validate(params, limits)
        model = runner.engine.get(Capability.TEXT_TO_IMAGE, params.model_id)
        seed = resolve_seed(params.seed)
        result = await runner.run_images(
            rid, follow, model, params, seed, width=params.width, height=params.height
        )
        return await images_answer(rid, result, model)

    @app.post(
        "/image-to-image",
        response_model=ImageResponse,
        responses=ERRORS,
        tags=["generate"],
        operation_id="genImageToImage",
        summary="Image To Image",
    )
    async def image_to_image_route(
        params: Annotated[ImageToImageParams, Form()],
        image: Annotated[UploadFile, File(description="Uploaded image to modify.")],
        request: Request,
        response: Response,
    ) -> dict[str, Any]:
        rid, follow = _request_id(request, response)
        img = _crop_to_multiple_of_8(await _read_upload(image, limits))
        image_to_image.validate(params, img.width, img.height, limits)
        model = runner.engine.get(Capability.IMAGE_TO_IMAGE, params.model_id)
        seed = resolve_seed(params.seed)
        result = await runner.run_images(
            rid, follow, model, params, seed, image=img, strength=params.strength
        )
        return await images_answer(rid, result, model)

    @app.post(
        "/image-to-video",
        response_model=VideoResponse,
        responses=ERRORS,
        tags=["generate"],
        operation_id="genImageToVideo",
        summary="Image To Video",
    )
    async def image_to_video_route(
        params: Annotated[ImageToVideoParams, Form()],
        image: Annotated[UploadFile, File(description="Uploaded image to animate.")],
        request: Request,
        response: Response,
    ) -> dict[str, Any]:
        rid, follow = _request_id(request, response)
        image_to_video.validate(params, limits)
        img = await _read_upload(image, limits)
        model = runner.engine.get(Capability.IMAGE_TO_VIDEO, params.model_id)
        seed = resolve_seed(params.seed)
        result = await runner.run(
            rid, follow, model, runner.engine.image_to_video, params, img, seed
        )
        mp4 = asyncio.create_task(asyncio.to_thread(media.encode_mp4, result.frames, params.fps))
        runner.keep_output(rid, mp4)
        level = model.optimizations.png_level
        urls = await asyncio.to_thread(_encode_images, result.frames, level)
        response.headers["X-Video-Url"] = f"/outputs/{rid}.mp4"
        runner.hub.publish(rid, "done", frames=len(urls), video=f"/outputs/{rid}.mp4")
        return {"frames": [[{"url": u, "seed": result.seed, "nsfw": result.nsfw} for u in urls]]}

    # ------------------------------------------------------------ status
    @app.get("/health", summary="Health", operation_id="health")
    async def health() -> dict[str, str]:
        if runner.warming:
            return {"status": "LOADING"}
        return {"status": "ERROR" if runner.warm_errors else "OK"}

    @app.get("/version", summary="Version", operation_id="version")
    async def version() -> dict[str, str]:
        pipeline, model_id = runner.primary()
        return {"pipeline": pipeline, "model_id": model_id, "version": core.__version__}

    @app.get("/hardware/info", summary="Hardware Info", operation_id="hardware_info")
    async def hardware_info() -> dict[str, Any]:
        return await asyncio.to_thread(hardware.hardware_info, *runner.primary())

    @app.get("/hardware/stats", summary="Hardware Stats", operation_id="hardware_stats")
    async def hardware_stats() -> dict[str, Any]:
        return await asyncio.to_thread(hardware.hardware_stats, *runner.primary())

    # ------------------------------------------------------------ extensions
    @app.get("/models", tags=["orchard"], summary="Loaded models and their memory")
    async def models() -> dict[str, Any]:
        eng = runner.engine
        return {
            "device": str(eng.device),
            "dtype": str(eng.dtype).removeprefix("torch."),
            "queue_depth": eng.queue_depth,
            "warming": runner.warming,
            "warm_errors": runner.warm_errors,
            "models": [_model_json(m, eng) for m in eng.models()],
        }

    @app.post("/models/load", tags=["orchard"], responses=ERRORS, summary="Load a model")
    async def load(req: LoadRequest) -> dict[str, Any]:
        try:
            cap = parse_capability(req.pipeline)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        fut = runner.engine.submit(runner.engine.load, cap, req.model_id, req.optimization_flags)
        model = await asyncio.wrap_future(fut)
        return _model_json(model, runner.engine)

    @app.post("/models/unload", tags=["orchard"], responses=ERRORS, summary="Unload a model")
    async def unload(req: UnloadRequest) -> dict[str, Any]:
        try:
            cap = parse_capability(req.pipeline)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        try:
            await asyncio.wrap_future(runner.engine.submit(runner.engine.unload, cap, req.model_id))
        except ModelNotLoaded as exc:
            return detail(404, exc.msg)  # type: ignore[return-value]
        return {"unloaded": {"pipeline": cap.value, "model_id": req.model_id}}

    @app.get("/progress/{request_id}", tags=["orchard"], summary="Progress events (SSE)")
    async def progress(request_id: str) -> StreamingResponse:
        async def stream() -> Any:
            async for event in runner.hub.follow(request_id):
                yield sse(event)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    @app.get("/outputs/{request_id}.mp4", tags=["orchard"], summary="A generated video (MP4)")
    async def output(request_id: str) -> Response:
        task = runner.outputs.get(request_id)
        if task is None:
            return detail(404, f"no video for request {request_id!r} (kept: last {MAX_OUTPUTS})")
        return Response(await asyncio.shield(task), media_type="video/mp4")

    return app


def _model_json(m: LoadedModel, eng: Engine) -> dict[str, Any]:
    return {
        "pipeline": m.capability.value,
        "model_id": m.model_id,
        "path": str(m.path),
        "family": m.family,
        "device": str(eng.device),
        "dtype": str(eng.dtype).removeprefix("torch."),
        "attention": "sdpa",
        "optimization_flags": m.optimization_flags,
        "optimizations": m.optimization_notes,
        "warmup_seconds": round(m.warmup_seconds, 4),
        "shares_weights_with": [
            o.capability.value for o in eng.models() if o.model_id == m.model_id and o is not m
        ],
        "weights_bytes": m.weights_bytes,
        "vram": {
            "allocated_after_load": m.allocated_after_load,
            "reserved_after_load": m.reserved_after_load,
            "peak_allocated_last_run": m.peak_allocated_last_run,
            "peak_reserved_last_run": m.peak_reserved_last_run,
        },
        "load_seconds": round(m.load_seconds, 4),
        "loaded_at": m.loaded_at,
        "last_used": m.last_used,
        "runs": m.runs,
        "busy": eng.busy_with == m.key,
    }
