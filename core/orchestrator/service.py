"""The orchestrator's HTTP API: the runner contract's generation routes, ``/info`` (what this
node offers), ``/metrics`` (Prometheus), ``/jobs`` (history)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import PlainTextResponse, Response

import core
from core.errors import ServiceUnavailable
from core.http import detail, install_error_handlers
from core.orchestrator.jobs import JobRequest
from core.payments.tickets import PAYMENT_HEADER
from core.pipelines import Capability, image_to_image, image_to_video
from core.pipelines import text_to_image as t2i
from core.pipelines.image_to_image import ImageToImageParams
from core.pipelines.image_to_video import ImageToVideoParams
from core.pipelines.text_to_image import TextToImageParams
from core.runner import media

if TYPE_CHECKING:
    from core.orchestrator.node import Node

log = logging.getLogger(__name__)

JOB_ID_HEADER = "X-Request-Id"


def create_app(node: Node) -> FastAPI:
    app = FastAPI(title="Orchard orchestrator", version=core.__version__)
    limits = node.settings.limits

    install_error_handlers(app)

    async def run(req: JobRequest) -> Response:
        if node.jobs is None:
            raise ServiceUnavailable(f"the node is {node.state}; start it first")
        result = await node.jobs.run(req)
        return Response(
            result.body,
            status_code=result.status,
            media_type=result.content_type,
            headers={JOB_ID_HEADER: result.job_id, **result.headers},
        )

    @app.get("/earnings", tags=["node"], summary="Fees and tickets (off-chain ledger)")
    async def earnings() -> dict[str, Any]:
        return await node.payments.earnings()

    async def run_multipart(
        cap: Capability, params: Any, image: UploadFile, data: bytes, pixels: int, request: Request
    ) -> Response:
        """Forward a multipart job: the fields the client set and its image, as received."""
        files = {"image": (image.filename or "image", data, image.content_type or "image/png")}
        return await run(
            JobRequest(
                cap,
                params.model_id,
                params.model_dump(),
                pixels,
                data=_form(params),
                files=files,
                payment_header=request.headers.get(PAYMENT_HEADER),
            )
        )

    @app.get("/ticket-params", tags=["node"], summary="Ticket parameters for a gateway")
    async def ticket_params(sender: str | None = None) -> dict[str, Any]:
        return await node.payments.ticket_params(sender)

    @app.post("/text-to-image", tags=["generate"], operation_id="genTextToImage")
    async def text_to_image(params: TextToImageParams, request: Request) -> Response:
        t2i.validate(params, limits)
        body = params.model_dump(exclude_unset=True)
        pixels = t2i.billing_pixels(body)
        return await run(
            JobRequest(
                Capability.TEXT_TO_IMAGE,
                params.model_id,
                params.model_dump(),
                pixels,
                json=body,
                payment_header=request.headers.get(PAYMENT_HEADER),
            )
        )

    @app.post("/image-to-image", tags=["generate"], operation_id="genImageToImage")
    async def image_to_image_route(
        params: Annotated[ImageToImageParams, Form()],
        image: Annotated[UploadFile, File()],
        request: Request,
    ) -> Response:
        data = await image.read()
        img = await asyncio.to_thread(media.decode_image, data, limits.max_pixels, "image")
        w, h = img.width - img.width % 8, img.height - img.height % 8
        image_to_image.validate(params, w, h, limits)
        pixels = image_to_image.billing_pixels(img.width, img.height, params.num_images_per_prompt)
        return await run_multipart(Capability.IMAGE_TO_IMAGE, params, image, data, pixels, request)

    @app.post("/image-to-video", tags=["generate"], operation_id="genImageToVideo")
    async def image_to_video_route(
        params: Annotated[ImageToVideoParams, Form()],
        image: Annotated[UploadFile, File()],
        request: Request,
    ) -> Response:
        image_to_video.validate(params, limits)
        data = await image.read()
        await asyncio.to_thread(media.decode_image, data, limits.max_pixels, "image")
        pixels = image_to_video.billing_pixels(params.model_dump())
        return await run_multipart(Capability.IMAGE_TO_VIDEO, params, image, data, pixels, request)

    @app.get("/info", tags=["node"], summary="What this node offers")
    async def info(sender: str | None = None) -> dict[str, Any]:
        """``sender``: a gateway's address, to see the prices it would be charged."""
        return node.info(sender)

    @app.get("/health", tags=["node"])
    async def health() -> dict[str, str]:
        return {"status": node.health()}

    @app.get("/metrics", tags=["node"], response_class=PlainTextResponse)
    async def metrics() -> str:
        return node.metrics()

    @app.get("/jobs", tags=["node"], summary="Recent jobs")
    async def jobs(limit: int = 50, state: str | None = None) -> list[dict[str, Any]]:
        records = await node.store.recent_jobs(limit=min(max(limit, 1), 500), state=state)
        return [_record_json(r) for r in records]

    @app.get("/jobs/{job_id}", tags=["node"])
    async def job(job_id: str) -> Any:
        record = await node.store.get_job(job_id)
        if record is None:
            return detail(404, f"no job {job_id!r}")
        return _record_json(record)

    return app


def _form(params: Any) -> dict[str, str]:
    """Multipart fields the client set, as strings (the runner parses them again)."""
    out = {}
    for key, value in params.model_dump(exclude_unset=True).items():
        out[key] = json.dumps(value) if isinstance(value, bool) else str(value)
    return out


def _record_json(r: Any) -> dict[str, Any]:
    from dataclasses import asdict

    d = asdict(r)
    d["state"] = str(r.state)
    return d
