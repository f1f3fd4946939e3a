"""Downloads from the Hugging Face Hub: offline they fail with a sentence that says what to
do (there is no hub access where these tests run), and a cancel stops the transfer."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from app.gui.catalogue import load_catalogue
from app.gui.downloads import DownloadCancelled, Downloader, explain, progress_class
from core.runners.local import free_port
from tests.app.conftest import run, wait_until


def test_offline_download_fails_clearly(qloop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    # a hub that does not answer: a closed port on loopback, as offline as it gets
    downloader = Downloader(
        tmp_path / "models", load_catalogue(), endpoint=f"http://127.0.0.1:{free_port()}"
    )
    events: list[tuple[str, ...]] = []
    downloader.progress.connect(lambda r, d, t, s: events.append(("progress", r)))
    downloader.failed.connect(lambda r, m: events.append(("failed", r, m)))
    downloader.finished.connect(lambda r, n: events.append(("finished", r)))
    downloader.start("stabilityai/sd-turbo")
    assert downloader.active("stabilityai/sd-turbo")
    run(qloop, wait_until(lambda: any(e[0] == "failed" for e in events), 30, "the failure"))
    failed = next(e for e in events if e[0] == "failed")
    assert failed[1] == "stabilityai/sd-turbo"
    assert "cannot reach the Hugging Face Hub" in failed[2]
    assert "press Download again (it resumes)" in failed[2]
    assert not downloader.active("stabilityai/sd-turbo")
    assert ("progress", "stabilityai/sd-turbo") in events
    run(qloop, downloader.close())


def test_progress_is_reported_and_cancel_stops_it() -> None:
    seen: list[tuple[int, int]] = []
    cancel = threading.Event()
    bar_class = progress_class(lambda done, total: seen.append((done, total)), cancel)
    bar = bar_class(name="huggingface_hub.snapshot_download", total=100, unit="B")
    other = bar_class(total=3)  # the hub's file-count bar: not reported
    bar.update(40)
    other.update(1)
    bar.total = 200  # the hub grows the total as it learns file sizes
    bar.update(10)
    assert seen == [(40, 100), (50, 200)]
    cancel.set()
    with pytest.raises(DownloadCancelled):
        other.update(1)
    bar.close()
    other.close()


def test_failures_say_what_to_do(tmp_path: Path) -> None:
    assert "resume" in explain(DownloadCancelled(), tmp_path)

    class GatedRepoError(Exception):
        pass

    class RepositoryNotFoundError(Exception):
        pass

    assert "accept its licence" in explain(GatedRepoError("401"), tmp_path)
    assert "no such model" in explain(RepositoryNotFoundError("404"), tmp_path)
    assert "disk holding" in explain(OSError(28, "No space left on device"), tmp_path)
    assert explain(ValueError("odd"), tmp_path) == "download failed: ValueError: odd"
