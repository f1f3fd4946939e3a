"""Docker runners: a runner container through the Docker engine (``docker`` SDK).

The container spec is the one Livepeer's ``ai-runner`` images expect: ``PIPELINE`` and
``MODEL_ID`` in the environment (one model per container; the first of the warm set), the
models directory mounted at ``/models``, the API on container port 8000, and ``AUTH_TOKEN``
(a random token, which ai-runner checks on every job). On a local engine the port is
published on loopback only, at a port Orchard picks; on a remote engine (``DOCKER_HOST``
``tcp://`` or ``ssh://``) the engine picks a port on all its interfaces, guarded by the token,
and the runner is reached at the engine's host. An Orchard image (one whose name starts
with ``orchard``, or ``orchard_image=True``) has ``orchard`` as its entrypoint and gets the
runner verb with every warm model instead.

``docker.from_env()`` is used, so ``DOCKER_HOST`` (and ``DOCKER_TLS_VERIFY``,
``DOCKER_CERT_PATH``) choose the engine. Every SDK call blocks, so each runs in a worker
thread. Containers carry the labels ``orchard.node`` and ``orchard.runner``: the node
removes its leftovers at boot with :func:`cleanup_leftovers`. Images are never pulled by
Orchard (ai-runner images are many gigabytes): a missing image is an error that says which
``docker pull`` to run.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from core.runners.base import CannotStart, RestartPolicy, RunnerHandle
from core.runners.local import free_port, port_is_free
from core.runners.logsink import LogSink

DEFAULT_IMAGE = "livepeer/ai-runner:latest"
CONTAINER_PORT = 8000
NODE_LABEL = "orchard.node"
RUNNER_LABEL = "orchard.runner"


def _docker() -> Any:
    try:
        import docker
    except ImportError as exc:
        raise CannotStart(
            "the docker backend needs the Docker SDK for Python: pip install docker"
        ) from exc
    return docker


def connect() -> Any:
    """``docker.from_env()``, with an error that says what to do when no engine answers.
    Blocks: call it through ``asyncio.to_thread``."""
    docker = _docker()
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://") or (not host and os.name == "posix"):
        # Checked first: the SDK leaks a socket when it cannot connect to a missing one.
        path = Path(host.removeprefix("unix://") or "/var/run/docker.sock")
        if not path.exists():
            raise CannotStart(
                f"no Docker engine: {path} does not exist; start Docker, or set DOCKER_HOST "
                "to the engine's address"
            )
    try:
        return docker.from_env()
    except docker.errors.DockerException as exc:
        raise CannotStart(
            f"no Docker engine answers ({exc}); start Docker, or set DOCKER_HOST to the "
            "engine's address"
        ) from exc


def remote_engine_host() -> str | None:
    """The host of a remote engine named by ``DOCKER_HOST`` (``tcp://H:2376``,
    ``ssh://user@H``), where its containers' ports are reached; ``None`` for a local one."""
    parsed = urlsplit(os.environ.get("DOCKER_HOST", ""))
    local = (None, "", "localhost", "127.0.0.1", "::1")
    if parsed.scheme in ("tcp", "ssh", "http", "https") and parsed.hostname not in local:
        return parsed.hostname
    return None


def container_name(node_id: str, runner_id: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", f"orchard-{node_id}-{runner_id}")


def is_orchard_image(image: str) -> bool:
    """``orchard/runner:1``, ``ghcr.io/x/orchard-runner`` → True; ai-runner → False."""
    name = image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
    repo = image.split(":", 1)[0].split("@", 1)[0]
    return name.startswith("orchard") or repo.split("/")[0] == "orchard"


def container_spec(
    *,
    image: str,
    node_id: str,
    runner_id: str,
    models_dir: Path,
    host_port: int | None,
    warm: Sequence[tuple[str, str]] = (),
    gpu_index: int | None = None,
    token: str | None = None,
    orchard_image: bool | None = None,
    command: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``DockerClient.containers.create`` (a pure function)."""
    environment: dict[str, str] = {}
    if warm:
        environment["PIPELINE"], environment["MODEL_ID"] = warm[0]
    if token:
        environment["AUTH_TOKEN"] = token
    if orchard_image is None:
        orchard_image = is_orchard_image(image)
    if orchard_image:
        if token:
            environment["ORCHARD_RUNNER_TOKEN"] = token
        if command is None:
            device = "cpu" if gpu_index is None else "cuda:0"  # the container sees one GPU
            command = ["runner", "--device", device, "--host", "0.0.0.0"]
            command += ["--port", str(CONTAINER_PORT), "--models-dir", "/models"]
            for pipeline, model_id in warm:
                command += ["--warm", f"{pipeline}:{model_id}"]
            for model_id, model_flags in (flags or {}).items():
                command += ["--flags", f"{model_id}:{json.dumps(dict(model_flags))}"]
    elif warm and flags and flags.get(warm[0][1]):
        # ai-runner reads its optimization flags from the environment, as go-livepeer sets them
        for name, value in flags[warm[0][1]].items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            environment[str(name).upper()] = text
    environment.update(env or {})
    spec: dict[str, Any] = {
        "image": image,
        "name": container_name(node_id, runner_id),
        "labels": {NODE_LABEL: node_id, RUNNER_LABEL: runner_id},
        "environment": environment,
        "volumes": {str(Path(models_dir).resolve()): {"bind": "/models", "mode": "rw"}},
        # A remote engine (host_port None) picks a port on all its interfaces; the token
        # guards it. A local one publishes on loopback only.
        "ports": {f"{CONTAINER_PORT}/tcp": None if host_port is None else ("127.0.0.1", host_port)},
        "auto_remove": False,
    }
    if command is not None:
        spec["command"] = list(command)
    if gpu_index is not None:
        types = _docker().types
        spec["device_requests"] = [
            types.DeviceRequest(device_ids=[str(gpu_index)], capabilities=[["gpu"]])
        ]
    return spec


def _remove_labelled(client: Any, labels: Mapping[str, str]) -> list[str]:
    filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
    removed = []
    for container in client.containers.list(all=True, filters=filters):
        try:
            container.remove(force=True)
            removed.append(container.name)
        except _docker().errors.NotFound:
            pass
    return removed


async def cleanup_leftovers(node_id: str, client: Any | None = None) -> list[str]:
    """Remove every container this node left behind (by label); returns their names."""

    def work() -> list[str]:
        if client is not None:
            return _remove_labelled(client, {NODE_LABEL: node_id})
        own = connect()
        try:
            return _remove_labelled(own, {NODE_LABEL: node_id})
        finally:
            own.close()

    return await asyncio.to_thread(work)


class DockerRunner(RunnerHandle):
    """A runner container for ``warm`` models on GPU ``gpu_index`` (None: no GPU)."""

    def __init__(
        self,
        runner_id: str,
        node_id: str,
        models_dir: Path,
        warm: Iterable[tuple[str, str]] = (),
        *,
        gpu_index: int | None = None,
        image: str = DEFAULT_IMAGE,
        port: int | None = None,
        capacity: int = 1,
        command: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        orchard_image: bool | None = None,
        docker_client: Any | None = None,
        log_path: Path | None = None,
        policy: RestartPolicy | None = None,
        public_host: str | None = "auto",
    ) -> None:
        import secrets

        #: Where published ports are reached: None for a local engine (loopback, a port we
        #: pick), else the remote engine's host (the engine picks the port at each launch).
        self.public_host = remote_engine_host() if public_host == "auto" else public_host
        self._port_auto = port is None
        self.port = free_port() if port is None else port
        super().__init__(
            runner_id,
            url=f"http://{self.public_host or '127.0.0.1'}:{self.port}",
            token=secrets.token_urlsafe(32),
            capacity=capacity,
            device="cpu" if gpu_index is None else f"cuda:{gpu_index}",
            gpu_index=gpu_index,
            warm=warm,
            policy=policy,
        )
        self.node_id = node_id
        self.models_dir = Path(models_dir)
        self.image = image
        self.command = None if command is None else list(command)
        self.env = dict(env or {})
        self.orchard_image = orchard_image
        self.log = LogSink(log_path)
        self._given_client = docker_client
        self._docker_client: Any | None = docker_client
        self._container: Any | None = None
        self._launching: asyncio.Future[Any] | None = None
        self._pump: threading.Thread | None = None

    @property
    def labels(self) -> dict[str, str]:
        return {NODE_LABEL: self.node_id, RUNNER_LABEL: self.runner_id}

    def log_tail(self, n: int | None = None) -> list[str]:
        return self.log.tail(n)

    def spec(self) -> dict[str, Any]:
        return container_spec(
            image=self.image,
            node_id=self.node_id,
            runner_id=self.runner_id,
            models_dir=self.models_dir,
            host_port=None if self.public_host else self.port,
            warm=self.warm_models,
            gpu_index=self.gpu_index,
            token=self.token,
            orchard_image=self.orchard_image,
            command=self.command,
            env=self.env,
            flags=self.warm_flags(),
        )

    def _describe(self) -> str:
        return f"docker runner {self.runner_id} ({self.image}, {self.device})"

    # ------------------------------------------------------------ container
    async def _engine(self) -> Any:
        if self._docker_client is None:
            self._docker_client = await asyncio.to_thread(connect)
        return self._docker_client

    def _create_and_start(self, client: Any, spec: dict[str, Any]) -> Any:
        errors = _docker().errors
        _remove_labelled(client, self.labels)  # a leftover of ours holds the name
        try:
            container = client.containers.create(**spec)
        except errors.ImageNotFound as exc:
            raise CannotStart(
                f"the image {self.image} is not on the Docker engine; get it with "
                f"`docker pull {self.image}`"
            ) from exc
        try:
            container.start()
        except errors.APIError:
            container.remove(force=True)
            raise
        container.reload()
        return container

    async def _launch(self) -> None:
        client = await self._engine()
        if self.public_host is None and self._port_auto and not port_is_free(self.port):
            self.port = free_port()
            self._set_url(f"http://127.0.0.1:{self.port}")
        spec = self.spec()
        # Shielded: a stop() during creation waits for it, then removes the container.
        self._launching = asyncio.ensure_future(
            asyncio.to_thread(self._create_and_start, client, spec)
        )
        container = await asyncio.shield(self._launching)
        self._container = container
        self._container_id = container.id
        if self.public_host:
            bindings = container.attrs["NetworkSettings"]["Ports"][f"{CONTAINER_PORT}/tcp"]
            self.port = int(bindings[0]["HostPort"])
            self._set_url(f"http://{self.public_host}:{self.port}")
        self._pump = self.log.pump(
            container.logs(stream=True, follow=True),
            first_line=f"--- orchard: started container {container.name} ({container.short_id})",
        )

    async def _exit_reason(self) -> str | None:
        container = self._container
        if container is None:
            return None
        errors = _docker().errors
        try:
            await asyncio.to_thread(container.reload)
        except errors.NotFound:
            return f"its container {container.name} was removed"
        except errors.DockerException as exc:
            return f"lost contact with the Docker engine: {exc}"
        state = container.attrs.get("State", {})
        if state.get("Status") in ("exited", "dead"):
            why = f"exit code {state.get('ExitCode')}"
            if state.get("OOMKilled"):
                why += ", killed: out of memory"
            if state.get("Error"):
                why += f", {state['Error']}"
            return f"its container {container.name} ended with {why}"
        return None

    def _remove(self, container: Any) -> None:
        errors = _docker().errors
        try:
            container.stop(timeout=max(1, round(self.policy.stop_timeout_s)))
        except errors.NotFound:
            return
        except errors.APIError:
            pass
        try:
            container.remove(force=True)
        except errors.NotFound:
            pass
        except errors.APIError as exc:
            if exc.status_code != 409:  # 409: a removal already in progress
                raise

    async def _terminate(self) -> None:
        launching = self._launching
        if launching is not None and not launching.done():
            await asyncio.wait([launching])
        if (
            launching is not None
            and not launching.cancelled()
            and launching.exception() is None
            and self._container is None
        ):
            self._container = launching.result()  # created while stop() was waiting
        self._launching = None
        container = self._container
        if container is not None:
            await asyncio.to_thread(self._remove, container)
            self._container = None
            self._container_id = None

    async def stop(self) -> None:
        try:
            await super().stop()
        finally:
            await asyncio.to_thread(self._close_log)
            if self._given_client is None and self._docker_client is not None:
                client, self._docker_client = self._docker_client, None
                await asyncio.to_thread(client.close)

    def _close_log(self) -> None:
        if self._pump is not None:
            self._pump.join(5.0)  # the container is gone, so its log stream has ended
            self._pump = None
        self.log.close()

    def _failure_help(self) -> str:
        tail = "\n".join(self.log_tail(20))
        name = container_name(self.node_id, self.runner_id)
        return f"Container {name}; last lines:\n{tail}" if tail else f"Container {name}."
