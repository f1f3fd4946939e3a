"""An asyncio HTTP client for one runner (Orchard's own, or Livepeer's ``ai-runner``).

It speaks the runner API (``/health``, ``/text-to-image`` ...) and Orchard's extensions
(``/models``, ``/models/load``, ``/models/unload``, ``/progress/{id}``, ``/outputs/{id}.mp4``).
A runner that cannot be reached raises :class:`~core.errors.RunnerUnavailable` naming its
URL; an error answer raises the typed error for its status, carrying the runner's own
message from ``{"detail": {"msg": ...}}``. ``generate`` returns the raw response instead, so
the orchestrator forwards the runner's status and body as they are.
"""

from __future__ import annotations

import json as jsonlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx

from core.errors import (
    BadRequest,
    ModelNotLoaded,
    OrchardError,
    PayloadTooLarge,
    RunnerUnavailable,
    ServiceUnavailable,
    Unauthorized,
)

log = logging.getLogger(__name__)

#: Header naming a request so its progress can be followed (as the runner reads it).
REQUEST_ID_HEADER = "X-Request-Id"
#: Default wait for a generation or a model load (they can take minutes on a busy GPU).
DEFAULT_TIMEOUT_S = 600.0
#: Wait for ``/health``: short, so a hung runner is noticed.
HEALTH_TIMEOUT_S = 5.0
#: Wait to open a connection.
CONNECT_TIMEOUT_S = 5.0


def error_message(response: httpx.Response) -> str:
    """The runner's message for an error answer, in a form a person can read.

    ``{"detail": {"msg": m}}`` gives ``m``; a validation error list gives
    ``"loc: msg; ..."``; anything else the start of the body, or ``HTTP <status>``.
    """
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:500] if text else f"HTTP {response.status_code}"
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, dict) and isinstance(detail.get("msg"), str):
        return str(detail["msg"])
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list) and detail:
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", ()))
                parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return jsonlib.dumps(body)[:500]


_ERROR_TYPES: dict[int, type[OrchardError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: ModelNotLoaded,
    413: PayloadTooLarge,
    422: BadRequest,
    503: ServiceUnavailable,
}


def raise_for_answer(response: httpx.Response) -> None:
    """Raise the typed error for an error answer (status ≥ 400), keeping its status."""
    if response.status_code < 400:
        return
    cls = _ERROR_TYPES.get(response.status_code, OrchardError)
    err = cls(error_message(response))
    err.status = response.status_code  # forward the runner's code, e.g. 500 or 507
    raise err


class RunnerClient:
    """HTTP client for the runner at ``base_url``; ``token`` is its bearer token."""

    def __init__(
        self, base_url: str, token: str | None = None, timeout: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_S),
        )

    def __repr__(self) -> str:
        return f"RunnerClient({self.base_url!r})"

    async def __aenter__(self) -> RunnerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def is_closed(self) -> bool:
        return self._http.is_closed

    def _unavailable(self, exc: httpx.TransportError) -> RunnerUnavailable:
        why = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.ConnectError):
            return RunnerUnavailable(f"runner at {self.base_url} is unreachable: {why}")
        if isinstance(exc, httpx.TimeoutException):
            return RunnerUnavailable(f"runner at {self.base_url} did not answer in time: {why}")
        return RunnerUnavailable(f"runner at {self.base_url} dropped the connection: {why}")

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self._http.is_closed:
            raise RunnerUnavailable(f"runner at {self.base_url} was stopped")
        try:
            return await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unavailable(exc) from exc

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._request(method, path, **kwargs)
        raise_for_answer(response)
        try:
            return response.json()
        except ValueError:
            raise RunnerUnavailable(
                f"runner at {self.base_url} answered {path} with something that is not JSON: "
                f"{response.text[:200]!r}"
            ) from None

    # ------------------------------------------------------------ API
    async def health(self) -> str:
        """``LOADING``, ``OK``, ``ERROR`` (or Livepeer's ``IDLE``)."""
        body = await self._json("GET", "/health", timeout=HEALTH_TIMEOUT_S)
        status = body.get("status") if isinstance(body, dict) else None
        if not isinstance(status, str):
            raise RunnerUnavailable(
                f"runner at {self.base_url} answered /health without a status: {body!r:.200}"
            )
        return status

    async def models(self, timeout: float | None = None) -> dict[str, Any]:
        """Orchard's ``GET /models``: device, queue depth, warm errors and loaded models."""
        kwargs = {"timeout": timeout} if timeout is not None else {}
        body = await self._json("GET", "/models", **kwargs)
        return dict(body)

    async def load(
        self, pipeline: str, model_id: str, optimization_flags: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Load a model (Orchard's ``POST /models/load``); returns its description."""
        payload = {
            "pipeline": pipeline,
            "model_id": model_id,
            "optimization_flags": optimization_flags or {},
        }
        return dict(await self._json("POST", "/models/load", json=payload))

    async def unload(self, pipeline: str, model_id: str) -> None:
        """Unload a model; :class:`ModelNotLoaded` when the runner does not hold it."""
        payload = {"pipeline": pipeline, "model_id": model_id}
        await self._json("POST", "/models/unload", json=payload)

    async def generate(
        self,
        capability: str,
        *,
        json: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        files: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> httpx.Response:
        """POST a job to ``/<capability>`` and return the runner's answer as it is.

        ``json`` for text-to-image; ``data`` and ``files`` (multipart) for image-to-image
        and image-to-video. ``request_id`` is sent as ``X-Request-Id`` so the job's progress
        can be followed with :meth:`follow`. The caller checks the status
        (:func:`raise_for_answer`) or forwards it.
        """
        name = str(capability).strip("/")
        if not name or "/" in name or name.startswith("."):
            raise BadRequest(f"not a capability: {capability!r}")
        headers = {REQUEST_ID_HEADER: request_id} if request_id else {}
        return await self._request(
            "POST", f"/{name}", json=json, data=data, files=files, headers=headers
        )

    async def follow(self, request_id: str) -> AsyncIterator[dict[str, Any]]:
        """The progress events of a request (``queued``, ``started``, ``step``, ``done`` /
        ``error``), parsed from the runner's Server-Sent Events.

        Ends after the last event, or quietly when the runner goes away or does not have the
        progress extension (Livepeer's ``ai-runner``): progress is a nicety, never a fault.
        """
        timeout = httpx.Timeout(CONNECT_TIMEOUT_S, read=None)
        if self._http.is_closed:
            return
        try:
            async with self._http.stream(
                "GET", f"/progress/{request_id}", timeout=timeout
            ) as response:
                if response.status_code != 200:
                    log.debug(
                        "no progress from %s for %s: HTTP %d",
                        self.base_url,
                        request_id,
                        response.status_code,
                    )
                    return
                data: list[str] = []
                async for line in response.aiter_lines():
                    if line == "":
                        if data:
                            event = _parse_event("\n".join(data))
                            data = []
                            if event is not None:
                                yield event
                        continue
                    if line.startswith(":"):
                        continue  # an SSE comment (keep-alive)
                    name, _, value = line.partition(":")
                    if name == "data":
                        data.append(value.removeprefix(" "))
                if data and (event := _parse_event("\n".join(data))) is not None:
                    yield event
        except httpx.TransportError as exc:
            log.debug("progress stream of %s from %s ended: %r", request_id, self.base_url, exc)

    async def video(self, request_id: str) -> bytes:
        """The MP4 of an image-to-video request (Orchard's ``GET /outputs/{id}.mp4``)."""
        response = await self._request("GET", f"/outputs/{request_id}.mp4")
        raise_for_answer(response)
        return response.content


def _parse_event(data: str) -> dict[str, Any] | None:
    try:
        event = jsonlib.loads(data)
    except ValueError:
        log.debug("ignoring a progress event that is not JSON: %.200r", data)
        return None
    return event if isinstance(event, dict) else None
