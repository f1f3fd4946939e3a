"""Runner handles: the orchestrator side that launches, watches and restarts runners.

``core/runner/`` is the runner process itself; this package manages such processes:
:class:`LocalRunner` (a subprocess), :class:`DockerRunner` (a container) and
:class:`ExternalRunner` (someone else's URL), all :class:`RunnerHandle` with one state
machine, and :class:`RunnerClient` to talk to any of them.
"""

from core.runners.base import (
    CannotStart,
    RestartPolicy,
    RunnerHandle,
    RunnerState,
    RunnerStatus,
)
from core.runners.client import RunnerClient, error_message, raise_for_answer
from core.runners.docker import DockerRunner, cleanup_leftovers, container_spec
from core.runners.external import ExternalRunner
from core.runners.local import LocalRunner

__all__ = [
    "CannotStart",
    "DockerRunner",
    "ExternalRunner",
    "LocalRunner",
    "RestartPolicy",
    "RunnerClient",
    "RunnerHandle",
    "RunnerState",
    "RunnerStatus",
    "cleanup_leftovers",
    "container_spec",
    "error_message",
    "raise_for_answer",
]
