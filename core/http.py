"""What every Orchard HTTP service shares: errors in the runner API's shape.

``{"detail": {"msg": ...}}`` with the error's status for Orchard's typed errors and HTTP
errors; FastAPI's 422 ``HTTPValidationError`` list for schema violations; 500 with the
exception named, logged with its traceback, for real faults. A payment refusal adds its
``reason`` (and the amount ``missing``) so a gateway can tell "fetch new ticket parameters"
from "pay more".
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import OrchardError

log = logging.getLogger(__name__)

#: Called with (request, status, message) whenever a request ends in an error.
OnError = Callable[[Request, int, str], None]


def detail(status: int, msg: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": {"msg": msg, **extra}})


def install_error_handlers(app: FastAPI, on_error: OnError | None = None) -> None:
    def told(request: Request, status: int, msg: str) -> None:
        if on_error is not None:
            on_error(request, status, msg)

    @app.exception_handler(OrchardError)
    async def _orchard_error(request: Request, exc: OrchardError) -> JSONResponse:
        told(request, exc.status, exc.msg)
        extra: dict[str, Any] = {}
        reason = getattr(exc, "reason", None)
        if reason is not None:
            extra["reason"] = str(reason)
        missing = getattr(exc, "missing", None)
        if missing is not None:
            extra["missing"] = str(missing)
        response = detail(exc.status, exc.msg, **extra)
        response.headers.update(exc.headers)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_r: Request, exc: StarletteHTTPException) -> JSONResponse:
        return detail(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e["type"])}
            for e in exc.errors()
        ]
        told(request, 422, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        return JSONResponse(status_code=422, content={"detail": errors})

    @app.exception_handler(Exception)
    async def _fault(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error: %s", exc)
        msg = f"internal error: {type(exc).__name__}: {exc}"
        told(request, 500, msg)
        return detail(500, msg)
