"""External runners: a runner at someone else's URL (another box, a Kubernetes service,
Livepeer's ``ai-runner``), as ``url`` and ``token`` in aiModels.json.

Orchard launches nothing and restarts nothing here: it polls ``/health`` like any runner
(ready / unhealthy, with the URL in the detail when it cannot be reached) and checks that
the runner takes our token, since ``/health`` itself is public.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from core.runners.base import RestartPolicy, RunnerHandle


class ExternalRunner(RunnerHandle):
    """A runner at ``url`` that someone else runs; ``capacity`` jobs at once. ``warm``
    lists the models it is configured to serve (informational: nothing is loaded)."""

    managed: ClassVar[bool] = False
    #: Re-check the token every 30 polls (and whenever the runner becomes ready).
    verify_token_every: ClassVar[int] = 30

    def __init__(
        self,
        runner_id: str,
        url: str,
        token: str | None,
        capacity: int = 1,
        *,
        warm: Iterable[tuple[str, str]] = (),
        policy: RestartPolicy | None = None,
    ) -> None:
        super().__init__(
            runner_id,
            url=url,
            token=token,
            capacity=capacity,
            device="external",
            gpu_index=None,
            warm=warm,
            policy=policy,
        )

    def _describe(self) -> str:
        return f"external runner {self.runner_id} ({self.url})"
