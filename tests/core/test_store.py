"""The job store: real SQLite and real files in tmp_path, and a real killed process."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.store import (
    INTERRUPTED_ERROR,
    SCHEMA_VERSION,
    JobRecord,
    JobState,
    JobStore,
    StoreError,
    migrate,
)
from tests.conftest import ROOT

T2I, I2I = "text-to-image", "image-to-image"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[JobStore]:
    async with JobStore(tmp_path / "data") as s:
        yield s


def job(job_id: str, **kw: object) -> JobRecord:
    fields: dict[str, object] = {"capability": T2I, "model_id": "org/a", **kw}
    return JobRecord(job_id, **fields)  # type: ignore[arg-type]


def query(db: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql).fetchall()


async def test_add_get_update(store: JobStore) -> None:
    request = {"prompt": "a cat", "width": 512, "height": 512, "seed": 7}
    await store.add_job(job("j1", request=request, sender="0xabc"))
    got = await store.get_job("j1")
    assert got is not None
    assert (got.state, got.request, got.sender, got.fee, got.outputs) == (
        JobState.QUEUED,
        request,
        "0xabc",
        "0",
        (),
    )
    assert await store.get_job("nope") is None

    now = time.time()
    running = await store.update_job("j1", state="running", started_at=now, runner_id="r0", gpu=1)
    assert (running.state, running.started_at, running.runner_id, running.gpu) == (
        JobState.RUNNING,
        now,
        "r0",
        1,
    )
    done = await store.update_job(
        "j1",
        state=JobState.DONE,
        finished_at=now + 2,
        status=200,
        outputs=["/x/j1-0.png"],
        pixels=262144,
        fee="0.0001",
    )
    assert done == await store.get_job("j1")
    assert done.outputs == ("/x/j1-0.png",) and done.fee == "0.0001" and done.pixels == 262144


async def test_bad_writes_are_refused(store: JobStore) -> None:
    await store.add_job(job("j1"))
    with pytest.raises(ValueError, match="already"):
        await store.add_job(job("j1"))
    with pytest.raises(KeyError):
        await store.update_job("missing", state="done")
    with pytest.raises(TypeError, match="colour"):
        await store.update_job("j1", colour="red")
    with pytest.raises(TypeError, match="float"):
        await store.update_job("j1", fee=0.1)
    for fee in ("abc", "-1", "NaN", "Infinity"):
        with pytest.raises(ValueError, match="fee"):
            await store.update_job("j1", fee=fee)
    with pytest.raises(ValueError):
        await store.update_job("j1", state="exploded")
    with pytest.raises(TypeError):  # image bytes do not belong in the request column
        await store.add_job(job("j2", request={"image": b"\x89PNG"}))
    assert await store.get_job("j2") is None
    assert (await store.get_job("j1")) == (await store.recent_jobs())[0]


async def test_recent_jobs_newest_first_with_filters_and_paging(store: JobStore) -> None:
    t0 = 1_700_000_000.0
    specs = [
        ("a", T2I, "org/a", JobState.DONE),
        ("b", I2I, "org/a", JobState.FAILED),
        ("c", T2I, "org/b", JobState.DONE),
        ("d", T2I, "org/a", JobState.RUNNING),
        ("e", I2I, "org/b", JobState.DONE),
    ]
    for i, (job_id, cap, model, state) in enumerate(specs):
        await store.add_job(
            JobRecord(job_id, cap, model, state=state, created_at=t0 + i, request={"i": i})
        )

    async def ids(**kw: object) -> list[str]:
        return [j.job_id for j in await store.recent_jobs(**kw)]  # type: ignore[arg-type]

    assert await ids() == ["e", "d", "c", "b", "a"]
    assert await ids(limit=2) == ["e", "d"]
    assert await ids(limit=2, offset=2) == ["c", "b"]
    assert await ids(state=JobState.DONE) == ["e", "c", "a"]
    assert await ids(state="failed") == ["b"]
    assert await ids(capability=I2I) == ["e", "b"]
    assert await ids(model_id="org/a") == ["d", "b", "a"]
    assert await ids(state="done", capability=T2I, model_id="org/b") == ["c"]
    assert await ids(model_id="org/none") == []


async def test_outputs_are_written_atomically_and_readable(store: JobStore) -> None:
    png, mp4 = b"\x89PNG\r\n\x1a\n" + bytes(100), b"\x00\x00\x00\x18ftypmp42" + bytes(50)
    paths = await store.save_outputs("job-1", [(png, "png"), (mp4, ".MP4")])
    day = dt.date.today().isoformat()
    assert paths == [
        store.data_dir.resolve() / "outputs" / day / "job-1-0.png",
        store.data_dir.resolve() / "outputs" / day / "job-1-1.mp4",
    ]
    assert paths[0].read_bytes() == png and paths[1].read_bytes() == mp4
    more = await store.save_outputs("job-1", [(b"jpeg", "jpg")])
    assert more[0].name == "job-1-2.jpg"
    assert sorted(p.name for p in paths[0].parent.iterdir()) == [
        "job-1-0.png",
        "job-1-1.mp4",
        "job-1-2.jpg",
    ]  # no temporary files left behind
    with pytest.raises(ValueError, match="file"):
        await store.save_outputs("../escape", [(png, "png")])
    with pytest.raises(ValueError, match="extension"):
        await store.save_outputs("job-2", [(png, "png/../x")])


async def test_wal_mode_and_synchronous_normal(store: JobStore) -> None:
    assert query(store.db_path, "PRAGMA journal_mode") == [("wal",)]
    conn = store._conn
    assert conn is not None
    sync = await store._run(lambda: conn.execute("PRAGMA synchronous").fetchone()[0])
    assert sync == 1  # NORMAL


async def test_schema_version_table_and_migration(store: JobStore) -> None:
    assert query(store.db_path, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    assert SCHEMA_VERSION == 1
    with contextlib.closing(sqlite3.connect(":memory:", isolation_level=None)) as conn:
        assert migrate(conn) == 0
        assert migrate(conn) == 1  # already there: nothing to do
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert {"jobs", "schema_version"} <= tables


async def test_a_database_from_a_newer_orchard_is_refused(tmp_path: Path) -> None:
    async with JobStore(tmp_path) as s:
        db = s.db_path
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="newer Orchard"):
        await JobStore(tmp_path).open()
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("UPDATE schema_version SET version = 1")
    async with JobStore(tmp_path) as s:  # the failed open let go of its lock
        assert await s.recent_jobs() == []


async def test_stats_counts_and_exact_fees(store: JobStore) -> None:
    now = time.time()
    two_days_ago = now - 2 * 86400
    jobs = [
        job("a", state=JobState.DONE, fee="0.1"),
        job("b", state=JobState.DONE, fee="0.2"),
        job("c", state=JobState.FAILED, fee="0"),
        job("d", model_id="org/b", state=JobState.DONE, fee="1000000000000000000.000000001"),
        job("e", model_id="org/b", state=JobState.DONE, fee="0.2", created_at=two_days_ago),
        job("f", model_id="org/b", state=JobState.DONE, fee="5", created_at=now - 40 * 86400),
        job("g", model_id="org/c", state=JobState.RUNNING),
    ]
    await asyncio.gather(*(store.add_job(j) for j in jobs))
    stats = await store.stats()
    assert stats["total_jobs"] == 7
    assert stats["by_state"] == {
        "queued": 0,
        "running": 1,
        "done": 5,
        "failed": 1,
        "interrupted": 0,
    }
    assert stats["by_model"] == {"org/a": 3, "org/b": 3, "org/c": 1}
    assert stats["fees_by_model"] == {
        "org/a": "0.3",
        "org/b": "1000000000000000005.200000001",
        "org/c": "0",
    }
    assert stats["total_fees"] == "1000000000000000005.500000001"
    per_day, fees_per_day = stats["jobs_per_day"], stats["fees_per_day"]
    assert len(per_day) == 30 and list(per_day) == sorted(per_day)
    today = dt.date.today().isoformat()
    assert list(per_day)[-1] == today and per_day[today] == 5
    assert per_day[dt.date.fromtimestamp(two_days_ago).isoformat()] == 1
    assert sum(per_day.values()) == 6  # the 40-day-old job is outside the window
    assert fees_per_day[today] == "1000000000000000000.300000001"


async def test_many_concurrent_adds_are_all_persisted(tmp_path: Path) -> None:
    async with JobStore(tmp_path) as s:
        await asyncio.gather(
            *(s.add_job(job(f"j{i:03}", created_at=1000.0 + i, fee="0.01")) for i in range(100))
        )
        assert len(await s.recent_jobs(limit=1000)) == 100
    async with JobStore(tmp_path) as s:
        jobs = await s.recent_jobs(limit=1000)
        assert sorted(j.job_id for j in jobs) == [f"j{i:03}" for i in range(100)]
        assert (await s.stats())["fees_by_model"] == {"org/a": "1"}


async def test_reopen_keeps_everything(tmp_path: Path) -> None:
    async with JobStore(tmp_path) as s:
        await s.add_job(job("j1", state=JobState.DONE, request={"prompt": "x"}, fee="0.5"))
        [path] = await s.save_outputs("j1", [(b"data", "png")])
        await s.update_job("j1", outputs=[str(path)])
        before = await s.get_job("j1")
    async with JobStore(tmp_path) as s:
        assert s.recovered == ()
        assert await s.get_job("j1") == before
        assert path.read_bytes() == b"data"
        assert query(s.db_path, "SELECT COUNT(*) FROM schema_version") == [(1,)]


async def test_closed_store_refuses_work(tmp_path: Path) -> None:
    s = JobStore(tmp_path)
    with pytest.raises(StoreError, match="not open"):
        await s.get_job("j1")
    await s.open()
    await s.close()
    await s.close()
    with pytest.raises(StoreError, match="not open"):
        await s.add_job(job("j1"))


async def test_prune_deletes_old_finished_jobs_and_their_files(store: JobStore) -> None:
    old = time.time() - 10 * 86400
    [old_file] = await store.save_outputs("old", [(b"x", "png")])
    [new_file] = await store.save_outputs("new", [(b"y", "png")])
    outside = store.data_dir / "elsewhere.png"
    outside.write_bytes(b"keep")
    await store.add_job(
        job("old", state="done", created_at=old, outputs=(str(old_file), str(outside)))
    )
    await store.add_job(job("old-running", state="running", created_at=old))
    await store.add_job(job("new", state="done", outputs=(str(new_file),)))
    assert await store.prune(older_than_days=7) == 1
    assert {j.job_id for j in await store.recent_jobs()} == {"old-running", "new"}
    assert not old_file.exists() and new_file.exists() and outside.exists()


CHILD = """
import asyncio, sys, time
from pathlib import Path
from core.store import JobRecord, JobState, JobStore

async def main():
    store = JobStore(Path(sys.argv[1]))
    await store.open()
    now = time.time()
    await store.add_job(JobRecord("done", "text-to-image", "org/a", JobState.DONE, now - 3))
    await store.add_job(JobRecord("queued", "text-to-image", "org/a", JobState.QUEUED, now - 2))
    await store.add_job(
        JobRecord("running", "image-to-video", "org/v", JobState.RUNNING, now - 1,
                  started_at=now, runner_id="r0", gpu=0)
    )
    print("ready", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_jobs_of_a_killed_node_become_interrupted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
            assert line.strip() == "ready"
            with pytest.raises(StoreError, match="another Orchard process"):
                await JobStore(data).open()  # one owner at a time
        finally:
            proc.kill()  # SIGKILL: no cleanup of any kind runs in the child
            await asyncio.to_thread(proc.wait, 30)
    assert proc.returncode == -9 or sys.platform == "win32"

    async with JobStore(data) as s:
        assert s.recovered == ("queued", "running")
        running = await s.get_job("running")
        assert running is not None
        assert running.state == JobState.INTERRUPTED and running.error == INTERRUPTED_ERROR
        assert (running.runner_id, running.gpu, running.capability) == ("r0", 0, "image-to-video")
        queued, done = await s.get_job("queued"), await s.get_job("done")
        assert queued is not None and queued.state == JobState.INTERRUPTED
        assert done is not None and done.state == JobState.DONE and done.error is None
        assert (await s.stats())["by_state"]["interrupted"] == 2
