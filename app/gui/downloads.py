"""Model downloads from the Hugging Face Hub into the models directory, with progress,
speed, cancel and resume.

``huggingface_hub.snapshot_download`` runs in a worker thread with ``cache_dir`` set to the
models directory, so files land in the cache layout the runners read
(``models--org--name/snapshots/<rev>``). A cancel stops at the next chunk; files already
fetched stay, and the hub's partial ``.incomplete`` blobs make the next try resume. The
tiny demo models are not downloaded but built (``app.gui.demo``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from app.gui import demo
from app.gui.catalogue import Catalogue, on_disk
from app.gui.tasks import spawn

log = logging.getLogger(__name__)

#: Progress is reported at most this often (seconds).
REPORT_EVERY_S = 0.25


class DownloadCancelled(Exception):
    pass


@dataclass
class _Job:
    repo_id: str
    cancel: threading.Event = field(default_factory=threading.Event)
    task: asyncio.Task[None] | None = None


def progress_class(report: Callable[[int, int], None], cancel: threading.Event) -> type[Any]:
    """A tqdm class for ``snapshot_download`` that reports bytes and honours ``cancel``.

    The hub aggregates every file's bytes into one bar named
    ``huggingface_hub.snapshot_download``; this class reports that bar's ``(done, total)``.
    Every bar checks ``cancel`` on each update, so all download threads stop soon.
    """
    from huggingface_hub.utils import tqdm as hf_tqdm

    class Progress(hf_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._orchard_name = kwargs.get("name")
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self._orchard_done = int(kwargs.get("initial") or 0)

        def update(self, n: float | None = 1) -> bool | None:
            if cancel.is_set():
                raise DownloadCancelled()
            if self._orchard_name == "huggingface_hub.snapshot_download":
                self._orchard_done += int(n or 0)
                report(self._orchard_done, int(self.total or 0))
            return super().update(n)

    return Progress


def explain(exc: BaseException, models_dir: Path) -> str:
    """A download failure as a sentence that says what to do."""
    name = type(exc).__name__
    text = str(exc).strip().splitlines()
    first = text[0] if text else name
    if isinstance(exc, DownloadCancelled):
        return "cancelled; press Download again to resume (the files already fetched are kept)"
    if isinstance(exc, ImportError):
        return "downloads need the huggingface_hub package: pip install huggingface_hub"
    if name == "GatedRepoError":
        return (
            "this model is gated: accept its licence on huggingface.co, then log in with "
            "`hf auth login` and try again"
        )
    if name == "RepositoryNotFoundError":
        return "the Hugging Face Hub has no such model (or it is private)"
    offline = (
        name
        in ("LocalEntryNotFoundError", "ConnectError", "ConnectTimeout", "OfflineModeIsEnabled")
        or "connect" in first.lower()
        or "name or service not known" in str(exc).lower()
        or "internet connection" in str(exc).lower()
    )
    if offline:
        return (
            "cannot reach the Hugging Face Hub (huggingface.co): no internet connection, or "
            "a proxy or firewall blocks it. Connect and press Download again (it resumes), or "
            f"copy the model into {models_dir} in the Hugging Face cache layout and press "
            "Refresh."
        )
    if isinstance(exc, OSError) and "No space left" in str(exc):
        return f"the disk holding {models_dir} is full; free some space and press Download again"
    return f"download failed: {name}: {first}"


class Downloader(QObject):
    """Runs downloads (and demo builds) as asyncio tasks; results come out as signals."""

    progress = Signal(str, object, object, float)  # repo_id, done, total bytes, bytes/s
    finished = Signal(str, object)  # repo_id, bytes on disk (or None)
    failed = Signal(str, str)  # repo_id, message

    def __init__(
        self,
        models_dir: Path,
        catalogue: Catalogue,
        *,
        endpoint: str | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.models_dir = Path(models_dir)
        self.catalogue = catalogue
        self.endpoint = endpoint  # tests point it elsewhere; None is huggingface.co
        self.jobs: dict[str, _Job] = {}

    def active(self, repo_id: str) -> bool:
        return repo_id in self.jobs

    def start(self, repo_id: str) -> asyncio.Task[None] | None:
        if repo_id in self.jobs:
            return self.jobs[repo_id].task
        job = _Job(repo_id)
        self.jobs[repo_id] = job
        job.task = spawn(self._run(job), f"download {repo_id}")
        return job.task

    def cancel(self, repo_id: str) -> None:
        job = self.jobs.get(repo_id)
        if job is not None:
            job.cancel.set()

    async def close(self) -> None:
        """Cancel every download and wait for the threads to notice."""
        for job in list(self.jobs.values()):
            job.cancel.set()
        tasks = [j.task for j in self.jobs.values() if j.task is not None]
        for task in tasks:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task

    async def _run(self, job: _Job) -> None:
        model = self.catalogue.get(job.repo_id)
        self.progress.emit(job.repo_id, 0, 0, 0.0)
        try:
            if model is not None and model.demo:
                await demo.make_tiny(self.models_dir)
            else:
                await self._download(job)
            size = await asyncio.to_thread(on_disk, self.models_dir, job.repo_id)
        except demo.DemoError as exc:
            self.failed.emit(job.repo_id, exc.msg)
        except Exception as exc:
            log.warning("download of %s failed: %s", job.repo_id, exc)
            self.failed.emit(job.repo_id, explain(exc, self.models_dir))
        else:
            log.info("downloaded %s into %s", job.repo_id, self.models_dir)
            self.finished.emit(job.repo_id, size)
        finally:
            self.jobs.pop(job.repo_id, None)

    async def _download(self, job: _Job) -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        last = [0.0]

        def report(done: int, total: int) -> None:  # on a download thread
            now = time.monotonic()
            if now - last[0] < REPORT_EVERY_S and done < total:
                return
            last[0] = now
            speed = done / max(now - started, 1e-6)
            with contextlib.suppress(RuntimeError):  # the loop closed: the app is quitting
                loop.call_soon_threadsafe(self.progress.emit, job.repo_id, done, total, speed)

        patterns = list(self.catalogue.files) or None

        def fetch() -> None:
            from huggingface_hub import snapshot_download

            snapshot_download(
                job.repo_id,
                cache_dir=self.models_dir,
                allow_patterns=patterns,
                tqdm_class=progress_class(report, job.cancel),
                endpoint=self.endpoint,
                etag_timeout=10,
            )

        await asyncio.to_thread(fetch)
