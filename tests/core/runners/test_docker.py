"""Docker runners against a real Docker engine.

No image registry is reachable here, so the tests build their own image: a static busybox
whose ``httpd`` serves ``/health`` as ``{"status":"OK"}`` on port 8000. It stands in for a
Livepeer ``ai-runner`` image, which answers ``/health`` the same way: the container's
lifecycle (labels, port, mounts, crash and restart, removal) is what is tested here, not
inference. Skipped, saying why, when there is no Docker SDK, no engine or no static busybox.
"""

from __future__ import annotations

import gc
import io
import shutil
import tarfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.runners import (
    CannotStart,
    DockerRunner,
    RestartPolicy,
    RunnerState,
    cleanup_leftovers,
)
from core.runners.docker import (
    NODE_LABEL,
    RUNNER_LABEL,
    connect,
    container_spec,
    remote_engine_host,
)

docker = pytest.importorskip("docker", reason="the Docker SDK for Python is not installed")

pytestmark = pytest.mark.docker

IMAGE = "orchard-test/fake-runner:1"
HTTPD = ["/bin/busybox", "httpd", "-f", "-p", "8000", "-h", "/www"]
SDXL = "orchard-tiny/sdxl"
FAST = RestartPolicy(poll_interval_s=0.2, start_timeout_s=30.0, stop_timeout_s=1.0)


# ---------------------------------------------------------------- the spec (no engine)
def test_spec_for_a_gpu_asks_for_that_gpu_only(tmp_path: Path) -> None:
    spec = container_spec(
        image="livepeer/ai-runner:latest",
        node_id="n1",
        runner_id="gpu1",
        models_dir=tmp_path,
        host_port=41234,
        warm=[("text-to-image", SDXL)],
        gpu_index=1,
        token="tok",
    )
    (request,) = spec["device_requests"]
    assert isinstance(request, docker.types.DeviceRequest)
    assert request["DeviceIDs"] == ["1"] and request["Capabilities"] == [["gpu"]]
    assert spec["labels"] == {NODE_LABEL: "n1", RUNNER_LABEL: "gpu1"}
    assert spec["environment"] == {
        "PIPELINE": "text-to-image",
        "MODEL_ID": SDXL,
        "AUTH_TOKEN": "tok",
    }
    assert spec["volumes"] == {str(tmp_path.resolve()): {"bind": "/models", "mode": "rw"}}
    assert spec["ports"] == {"8000/tcp": ("127.0.0.1", 41234)}
    assert spec["auto_remove"] is False
    assert "command" not in spec  # ai-runner's own CMD serves the model


def test_spec_without_a_gpu_has_no_device_request(tmp_path: Path) -> None:
    spec = container_spec(
        image="livepeer/ai-runner:latest",
        node_id="n1",
        runner_id="cpu",
        models_dir=tmp_path,
        host_port=1,
    )
    assert "device_requests" not in spec


def test_spec_for_an_orchard_image_runs_the_runner_verb(tmp_path: Path) -> None:
    spec = container_spec(
        image="orchard/runner:0.1",
        node_id="n1",
        runner_id="gpu0",
        models_dir=tmp_path,
        host_port=1,
        warm=[("text-to-image", SDXL), ("image-to-image", SDXL)],
        gpu_index=0,
        token="tok",
    )
    cmd = spec["command"]
    assert cmd[:3] == ["runner", "--device", "cuda:0"]
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert cmd[cmd.index("--models-dir") + 1] == "/models"
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--warm"] == [
        f"text-to-image:{SDXL}",
        f"image-to-image:{SDXL}",
    ]
    assert spec["environment"]["ORCHARD_RUNNER_TOKEN"] == "tok"


async def test_no_engine_fails_at_once_saying_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")
    runner = DockerRunner("cpu", "n1", tmp_path, policy=FAST)
    try:
        await runner.start()
        status = await runner.wait_for(RunnerState.FAILED, timeout=10)
    finally:
        await runner.aclose()
    assert "no Docker engine" in status.detail and "DOCKER_HOST" in status.detail
    assert status.restarts == 0


@pytest.mark.parametrize(
    ("docker_host", "expected"),
    [
        ("", None),
        ("unix:///var/run/docker.sock", None),
        ("tcp://127.0.0.1:2375", None),
        ("tcp://gpu-box.lan:2376", "gpu-box.lan"),
        ("ssh://me@10.1.2.3", "10.1.2.3"),
    ],
)
def test_remote_engine_host(
    docker_host: str, expected: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    assert remote_engine_host() == expected


# ---------------------------------------------------------------- a real engine
def _static_busybox() -> Path | None:
    for name in ("busybox", "busybox-static"):
        found = shutil.which(name)
        if found and b"ld-linux" not in Path(found).read_bytes()[:8192]:
            return Path(found)
    return None


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    reason = None
    with warnings.catch_warnings():  # the SDK leaks a socket when no engine answers
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = connect()
            client.ping()
        except (CannotStart, docker.errors.DockerException) as exc:
            reason = exc.msg if isinstance(exc, CannotStart) else str(exc)
        gc.collect()
    if reason is not None:
        pytest.skip(f"no Docker engine running: {reason}")
    busybox = _static_busybox()
    if busybox is None:
        client.close()
        pytest.skip("no static busybox to build the test image: apt-get install busybox-static")
    client.api.import_image_from_data(
        _rootfs_tar(busybox), repository=IMAGE.split(":")[0], tag=IMAGE.split(":")[1]
    )
    yield client
    client.close()


def _rootfs_tar(busybox: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        for d in ("bin", "www", "models", "tmp"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        add("bin/busybox", busybox.read_bytes(), 0o755)
        add("www/health", b'{"status":"OK"}')
    return buf.getvalue()


@pytest.fixture
def node_id() -> Iterator[str]:
    node = f"test-{uuid.uuid4().hex[:8]}"
    yield node
    client = docker.from_env()
    try:
        for c in client.containers.list(all=True, filters={"label": f"{NODE_LABEL}={node}"}):
            c.remove(force=True)
    finally:
        client.close()


def _ours(engine: Any, node: str) -> list[Any]:
    return list(engine.containers.list(all=True, filters={"label": f"{NODE_LABEL}={node}"}))


@pytest.mark.timeout(120)
async def test_lifecycle_labels_crash_restart_and_removal(
    engine: Any, node_id: str, tmp_path: Path
) -> None:
    runner = DockerRunner(
        "cpu0",
        node_id,
        tmp_path,
        warm=[("text-to-image", SDXL)],
        image=IMAGE,
        command=HTTPD,
        policy=FAST,
    )
    try:
        await runner.start()
        status = await runner.wait_for(RunnerState.READY, timeout=30)
        assert await runner.client.health() == "OK"  # through the published port
        first = engine.containers.get(status.container_id)
        assert first.labels[NODE_LABEL] == node_id and first.labels[RUNNER_LABEL] == "cpu0"
        env = dict(e.split("=", 1) for e in first.attrs["Config"]["Env"])
        assert env["PIPELINE"] == "text-to-image" and env["MODEL_ID"] == SDXL
        assert env["AUTH_TOKEN"] == runner.token
        host = first.attrs["HostConfig"]
        assert not host.get("DeviceRequests")  # no GPU asked for
        assert host["AutoRemove"] is False
        assert host["PortBindings"]["8000/tcp"] == [
            {"HostIp": "127.0.0.1", "HostPort": str(runner.port)}
        ]
        mounts = {m["Destination"]: m["Source"] for m in first.attrs["Mounts"]}
        assert mounts["/models"] == str(tmp_path.resolve())

        first.kill()  # a crash, as the SDK sees it
        crashed = await runner.wait_for(RunnerState.RESTARTING, timeout=10)
        assert "exit code 137" in crashed.detail
        status = await runner.wait_for(RunnerState.READY, timeout=30)
        assert status.restarts == 1 and status.container_id != first.id
        with pytest.raises(docker.errors.NotFound):
            engine.containers.get(first.id)  # the crashed container was removed
        assert [c.id for c in _ours(engine, node_id)] == [status.container_id]
    finally:
        await runner.aclose()
    assert runner.status.state == RunnerState.STOPPED and runner.status.container_id is None
    assert _ours(engine, node_id) == []


async def test_cleanup_leftovers_removes_only_this_nodes_containers(
    engine: Any, node_id: str
) -> None:
    mine = engine.containers.create(IMAGE, HTTPD, labels={NODE_LABEL: node_id, RUNNER_LABEL: "old"})
    other_node = f"{node_id}-other"
    theirs = engine.containers.create(
        IMAGE, HTTPD, labels={NODE_LABEL: other_node, RUNNER_LABEL: "old"}
    )
    try:
        removed = await cleanup_leftovers(node_id)
        assert removed == [mine.name]
        with pytest.raises(docker.errors.NotFound):
            engine.containers.get(mine.id)
        assert engine.containers.get(theirs.id).labels[NODE_LABEL] == other_node
    finally:
        theirs.remove(force=True)


async def test_missing_image_fails_at_once_saying_what_to_pull(
    engine: Any, node_id: str, tmp_path: Path
) -> None:
    image = "orchard-test/not-here:1"
    runner = DockerRunner("gone", node_id, tmp_path, image=image, policy=FAST)
    try:
        await runner.start()
        status = await runner.wait_for(RunnerState.FAILED, timeout=30)
    finally:
        await runner.aclose()
    assert f"docker pull {image}" in status.detail and status.restarts == 0


async def test_an_engine_elsewhere_picks_the_port(
    engine: Any, node_id: str, tmp_path: Path
) -> None:
    """As with DOCKER_HOST=tcp://host: the engine picks the port, read back at each launch."""
    runner = DockerRunner(
        "remote",
        node_id,
        tmp_path,
        image=IMAGE,
        command=HTTPD,
        policy=FAST,
        public_host="127.0.0.1",
    )
    try:
        await runner.start()
        status = await runner.wait_for(RunnerState.READY, timeout=30)
        ports = engine.containers.get(status.container_id).attrs["NetworkSettings"]["Ports"]
        assert status.url == f"http://127.0.0.1:{ports['8000/tcp'][0]['HostPort']}"
    finally:
        await runner.aclose()
    assert _ours(engine, node_id) == []
