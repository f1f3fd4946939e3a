"""Discovery: poll each orchestrator's ``GET /info`` and keep what it offers.

One :class:`~core.gateway.views.OrchestratorView` per configured URL, in the order given.
An O that cannot be reached stays in the list with its error and is suspended like an O
whose job failed; the next good answer ends that suspension. Polls run concurrently with a
short timeout, so one hung O never delays the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable

import httpx

from core.gateway.views import LatencyScore, OrchestratorView

__all__ = ["Discovery", "LatencyScore", "OrchestratorView", "normalize_url"]

log = logging.getLogger(__name__)

#: A poll gives up after this long: /info is cheap on a healthy O.
POLL_TIMEOUT_S = 3.0


def normalize_url(url: str) -> str:
    """``host:port`` -> ``http://host:port``; no trailing slash."""
    url = url.strip().rstrip("/")
    if not url:
        raise ValueError("an orchestrator URL cannot be empty")
    if "://" not in url:
        url = f"http://{url}"
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"an orchestrator URL must be http(s) (got {url!r})")
    return url


def describe_error(exc: BaseException) -> str:
    """A transport error in words: httpx's message, else its kind."""
    text = str(exc).strip()
    kind = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({kind})"
    return f"{text} ({kind})" if text else kind


class Discovery:
    """Polls every ``interval_s``; ``start()`` on the loop, ``await stop()`` to end."""

    def __init__(
        self,
        urls: Iterable[str],
        interval_s: float = 5.0,
        timeout_s: float = POLL_TIMEOUT_S,
        sender: str | None = None,
    ) -> None:
        self.interval_s = interval_s
        #: the gateway's payment address: Os answer with the prices they charge this sender
        self.sender = sender
        self._views: dict[str, OrchestratorView] = {}
        for url in urls:
            u = normalize_url(url)
            self._views.setdefault(u, OrchestratorView(u))
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 2.0))
        )
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0

    def views(self) -> list[OrchestratorView]:
        return list(self._views.values())

    def view(self, url: str) -> OrchestratorView | None:
        return self._views.get(normalize_url(url))

    def add(self, url: str) -> OrchestratorView:
        """Watch one more O (polled from the next round)."""
        u = normalize_url(url)
        return self._views.setdefault(u, OrchestratorView(u))

    def remove(self, url: str) -> None:
        self._views.pop(normalize_url(url), None)

    def start(self) -> None:
        """Poll in the background on the running loop (call :meth:`refresh` first for an
        immediate round)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="discovery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._client.aclose()

    async def refresh(self) -> None:
        """One round: poll every O now."""
        await asyncio.gather(*(self._poll(v) for v in self.views()))
        self.rounds += 1

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.refresh()
            except Exception:  # a bug here must not end discovery
                log.exception("discovery round failed")

    async def _poll(self, view: OrchestratorView) -> None:
        try:
            query = {"sender": self.sender} if self.sender else None
            resp = await self._client.get(f"{view.url}/info", params=query)
            if resp.status_code != 200:
                raise _BadAnswer(f"/info answered HTTP {resp.status_code}")
            info = resp.json()
            if not isinstance(info, dict):
                raise _BadAnswer("/info did not answer a JSON object")
        except _BadAnswer as exc:
            self._failed(view, str(exc))
            return
        except httpx.HTTPError as exc:
            self._failed(view, describe_error(exc))
            return
        except ValueError:
            self._failed(view, "/info did not answer JSON")
            return
        back = view.last_ok is None or view.unreachable
        view.mark_polled(info, time.time())
        if back:
            log.info("orchestrator %s: up, models offered: %d", view.url, len(view.offered()))

    @staticmethod
    def _failed(view: OrchestratorView, msg: str) -> None:
        error = f"cannot reach /info: {msg}"
        if view.error != error:
            log.warning("orchestrator %s: %s", view.url, error)
        view.mark_failure(error, time.time(), unreachable=True)


class _BadAnswer(Exception):
    pass
