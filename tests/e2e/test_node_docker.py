# ruff: noqa: F811  (fixtures imported from the modules that define them)
"""The node's docker backend against a real Docker engine.

No image registry is reachable here, so a busybox image built locally stands in for
Livepeer's ai-runner image: it answers ``/health`` as a runner does, which is what the node's
lifecycle needs (start, health, advertise, stop, leftover cleanup). Skipped, saying why,
when no engine runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.core.runners.test_docker import HTTPD, IMAGE, engine  # noqa: F401  (fixture)
from tests.e2e.test_node import SDXL, node_models, start_node, stop_node  # noqa: F401

docker = pytest.importorskip("docker", reason="the Docker SDK for Python is not installed")
pytestmark = pytest.mark.docker


def test_node_runs_a_docker_runner_and_removes_it(
    engine: Any, node_models: Path, tmp_path: Path
) -> None:
    config = [
        {
            "pipeline": "text-to-image",
            "model_id": SDXL,
            "backend": "docker",
            "warm": True,
            "image": IMAGE,
            "command": HTTPD,
            "capacity": 2,
        },
    ]
    node = start_node(node_models, tmp_path, config, "--gpus", "cpu")
    try:
        info = httpx.get(f"{node.url}/info").json()
        model = info["capabilities"]["per_capability"]["27"]["models"][SDXL]
        assert model["loaded"] is True and model["capacity"] == 2
        ours = [c for c in engine.containers.list() if c.labels.get("orchard.runner") == "docker-0"]
        assert len(ours) == 1
        env = dict(e.split("=", 1) for e in ours[0].attrs["Config"]["Env"])
        assert env["PIPELINE"] == "text-to-image" and env["MODEL_ID"] == SDXL
    finally:
        stop_node(node)
    left = [
        c
        for c in engine.containers.list(all=True)
        if c.labels.get("orchard.runner") == "docker-0"
        and c.labels.get("orchard.node") == ours[0].labels["orchard.node"]
    ]
    assert left == []
