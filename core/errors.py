"""Typed errors a person can act on.

Each carries the HTTP status it maps to, so the runner, the orchestrator and the gateway
answer in the runner API's shape ``{"detail": {"msg": ...}}`` with the right code, and the
GUI can show the message inline.
"""

from __future__ import annotations


class OrchardError(Exception):
    """Base of every error Orchard raises on purpose."""

    status: int = 500

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg
        #: extra response headers (e.g. the payer's balance after a refund)
        self.headers: dict[str, str] = {}

    def to_detail(self) -> dict[str, dict[str, str]]:
        return {"detail": {"msg": self.msg}}


class BadRequest(OrchardError):
    """A value in the request is wrong (size, range, an image that is not an image)."""

    status = 400


class ModelNotFound(BadRequest):
    """A model id resolves to nothing on disk; the message names where it looked."""


class ModelNotLoaded(BadRequest):
    """A request names a model that this runner does not hold."""


class Unauthorized(OrchardError):
    status = 401


class PayloadTooLarge(OrchardError):
    status = 413


class ServiceUnavailable(OrchardError):
    status = 503


class RunnerUnavailable(ServiceUnavailable):
    """A runner cannot be reached or is not ready."""


class OutOfVram(OrchardError):
    """The GPU ran out of memory while running a job. Memory was released."""

    status = 500


class PipelineFault(OrchardError):
    """An unexpected failure inside a pipeline: a real fault, logged with its traceback."""

    status = 500
