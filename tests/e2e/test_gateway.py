"""The gateway in front of real orchestrators, over loopback HTTP.

Three ``orchard node`` processes (one CPU runner each, tiny models) offer different models,
warm flags and prices; an ``orchard gateway`` process with price caps sits in front:

=====  ==============================  ===========================  =================
node   text-to-image orchard-tiny/sdxl  other                        price (wei/pixel)
=====  ==============================  ===========================  =================
A      warm, 1000                       i2i sdxl warm, i2v svd warm  i2i 1000, i2v 100
B      cold, 500                        t2i sdxl-b warm              sdxl-b 2000
C      warm, 9000 (over the 5000 cap)
=====  ==============================  ===========================  =================

The gateway picks A (warm, within the cap) for sdxl; when A is SIGKILLed mid-job the job
fails over to B (C is over the cap; a gateway without caps picks C, warm); a model nobody
offers, a model over its cap and a model whose only O is down each get the 503 with their
reason. The last part runs the gateway in-process against stub orchestrators (real HTTP,
no models) for the retry rules: which answers are retried, 4xx passed back, payment hooks,
the retry budget, the default model.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from core.errors import BadRequest, OrchardError, ServiceUnavailable
from core.gateway import Discovery, Gateway, OrchestratorView, PriceCaps
from tests.conftest import ROOT, free_port
from tests.contract import validate
from tests.e2e.nodes import (
    SDXL,
    SVD,
    NodeProcess,
    Proc,
    kill_node,
    png,
    small,
    start_gateway,
    start_nodes,
    stop_gateway,
    stop_node,
)

GATEWAY_CONTRACT = "ai-gateway-openapi.yaml"
SDXL_B = "orchard-tiny/sdxl-b"
T2I, I2I, I2V = "text-to-image", "image-to-image", "image-to-video"


def entry(pipeline: str, model_id: str, warm: bool, price: int) -> dict[str, Any]:
    return {
        "pipeline": pipeline,
        "model_id": model_id,
        "warm": warm,
        "capacity": 1,
        "price_per_unit": price,
        "pixels_per_unit": 1,
    }


CONFIGS = {
    "A": [
        entry(T2I, SDXL, True, 1000),
        entry(I2I, SDXL, True, 1000),
        entry(I2V, SVD, True, 100),
    ],
    "B": [entry(T2I, SDXL, False, 500), entry(T2I, SDXL_B, True, 2000)],
    "C": [entry(T2I, SDXL, True, 9000)],
}
CAPS = ("--max-price", "5000", "--max-price", f"text-to-image:{SDXL_B}=1000")


@pytest.fixture(scope="module")
def models(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gateway-models")
    (out / "orchard-tiny").mkdir()
    for model_id in (SDXL, SVD):
        (out / model_id).symlink_to(tiny_models / model_id)
    shutil.copytree(tiny_models / SDXL, out / SDXL_B)
    return out


@pytest.fixture(scope="module")
def gateway_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The gateway's payment key; its address has an off-chain deposit at every node."""
    from core.payments.sender import load_or_create_key

    path = tmp_path_factory.mktemp("gateway-key") / "gateway.json"
    load_or_create_key(path)
    return path


def address_of(key: Path) -> str:
    from core.payments.sender import load_or_create_key

    return str(load_or_create_key(key).address)


@pytest.fixture(scope="module")
def nodes(
    models: Path, gateway_key: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, NodeProcess]]:
    tmp = tmp_path_factory.mktemp("gateway-nodes")
    deposits = {address_of(gateway_key): 10**21}
    started = dict(
        zip(CONFIGS, start_nodes(models, tmp, list(CONFIGS.values()), deposits), strict=True)
    )
    yield started
    for n in started.values():
        stop_node(n)


@pytest.fixture(scope="module")
def gateway(
    nodes: dict[str, NodeProcess], gateway_key: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proc]:
    urls = [nodes[name].url for name in "ABC"]
    gw = start_gateway(
        tmp_path_factory.mktemp("gateway"),
        urls,
        *CAPS,
        "--poll-interval",
        "1",
        "--key",
        str(gateway_key),
    )
    yield gw
    stop_gateway(gw)


def served_by(r: httpx.Response, nodes: dict[str, NodeProcess]) -> str:
    url = r.headers["X-Orchestrator"]
    return next(name for name, n in nodes.items() if n.url == url)


def reason(r: httpx.Response) -> str:
    assert r.status_code == 503, r.text
    validate(r.json(), "HTTPError", contract=GATEWAY_CONTRACT)
    msg = r.json()["detail"]["msg"]
    assert msg.startswith("no orchestrators available: "), msg
    return str(msg.removeprefix("no orchestrators available: "))


# ---------------------------------------------------------------------- real nodes
def test_discovery_lists_offers_and_prices(gateway: Proc, nodes: dict[str, NodeProcess]) -> None:
    with gateway.client() as c:
        assert c.get("/health").json() == {"status": "OK", "orchestrators": 3, "reachable": 3}
        state = c.get("/orchestrators").json()
    assert state["caps"] == f"default 5000 wei/pixel, text-to-image:{SDXL_B} 1000 wei/pixel"
    by_url = {o["url"]: o for o in state["orchestrators"]}
    assert list(by_url) == [nodes[n].url for n in "ABC"]
    b = {(m["pipeline"], m["model_id"]): m for m in by_url[nodes["B"].url]["offered"]}
    assert b[(T2I, SDXL)]["warm"] is False and b[(T2I, SDXL)]["price_per_pixel"] == "500"
    assert b[(T2I, SDXL_B)]["warm"] is True and b[(T2I, SDXL_B)]["price_per_pixel"] == "2000"
    assert all(o["reachable"] and not o["suspended"] for o in by_url.values())


def test_warm_within_the_cap_serves(gateway: Proc, nodes: dict[str, NodeProcess]) -> None:
    """A (warm, 1000) over B (cold, cheaper) and C (warm, over the cap)."""
    with gateway.client() as c:
        for seed in (1, 2):
            r = c.post("/text-to-image", json=small(seed=seed))
            assert r.status_code == 200, r.text
            assert served_by(r, nodes) == "A"
            validate(r.json(), "ImageResponse", contract=GATEWAY_CONTRACT)
            assert r.json()["images"][0]["seed"] == seed
        state = c.get("/orchestrators").json()["orchestrators"]
    with nodes["A"].client() as a:  # the O's own record of the job
        job = a.get(f"/jobs/{r.headers['X-Request-Id']}").json()
    assert job["state"] == "done" and job["model_id"] == SDXL and job["pixels"] == 64 * 64
    a_state = next(o for o in state if o["url"] == nodes["A"].url)
    sdxl = next(m for m in a_state["offered"] if (m["pipeline"], m["model_id"]) == (T2I, SDXL))
    assert sdxl["score"] > 0 and sdxl["score_samples"] == 2
    assert a_state["stats"]["jobs_ok"] == 2


def test_image_to_image_and_video_through_the_gateway(
    gateway: Proc, nodes: dict[str, NodeProcess]
) -> None:
    with gateway.client() as c:
        r = c.post(
            "/image-to-image",
            data={"model_id": SDXL, "prompt": "x", "num_inference_steps": "2", "strength": "0.5"},
            files={"image": ("a.png", png((72, 64)), "image/png")},
        )
        assert r.status_code == 200, r.text
        assert served_by(r, nodes) == "A"
        validate(r.json(), "ImageResponse", contract=GATEWAY_CONTRACT)
        v = c.post(
            "/image-to-video",
            data={"model_id": SVD, "width": "64", "height": "64", "num_inference_steps": "2"},
            files={"image": ("a.png", png(), "image/png")},
        )
        assert v.status_code == 200, v.text
        assert served_by(v, nodes) == "A"
    body = v.json()
    validate(body, "VideoResponse", contract=GATEWAY_CONTRACT)
    assert len(body["images"]) == 14  # the tiny SVD's frames, flattened in order
    assert all(m["url"].startswith("data:image/png;base64,") for m in body["images"])


def test_model_over_its_cap_gets_the_price_reason(gateway: Proc) -> None:
    with gateway.client() as c:
        r = c.post("/text-to-image", json=small(SDXL_B))
    assert reason(r) == (
        f"the one orchestrator offering {SDXL_B} for text-to-image is over the price cap "
        "(price: 2000 wei/pixel, cap: 1000 wei/pixel)"
    )


def test_model_nobody_offers(gateway: Proc) -> None:
    with gateway.client() as c:
        r = c.post("/text-to-image", json=small("acme/nothing"))
        assert reason(r) == "no orchestrator offers model acme/nothing for pipeline text-to-image"
        r = c.post(
            "/image-to-video",
            data={"model_id": SDXL, "width": "64", "height": "64"},
            files={"image": ("a.png", png(), "image/png")},
        )
        assert reason(r) == f"no orchestrator offers model {SDXL} for pipeline image-to-video"


def test_bad_requests_are_refused_before_any_orchestrator(gateway: Proc) -> None:
    with gateway.client() as c:
        r = c.post("/text-to-image", json=small(width=100))
        assert r.status_code == 400 and "multiple of 8" in r.json()["detail"]["msg"]
        assert "X-Orchestrator" not in r.headers
        r = c.post("/text-to-image", json={"model_id": SDXL})
        assert r.status_code == 422
        validate(r.json(), "HTTPValidationError", contract=GATEWAY_CONTRACT)
        r = c.post("/image-to-image", data={"prompt": "x"}, files={"image": ("a", b"nope")})
        assert r.status_code == 400 and "not an image" in r.json()["detail"]["msg"]
        r = c.post("/text-to-image", json=small(""))  # several models offered: say which
        assert r.status_code == 400 and SDXL_B in r.json()["detail"]["msg"]


async def test_killed_orchestrator_fails_over_mid_job(
    gateway: Proc, nodes: dict[str, NodeProcess]
) -> None:
    a = nodes["A"]
    async with (
        httpx.AsyncClient(base_url=gateway.url, timeout=120) as gw,
        httpx.AsyncClient(base_url=a.url, timeout=5) as ac,
    ):
        job = asyncio.create_task(
            gw.post("/text-to-image", json=small(steps=40, width=256, height=256, seed=7))
        )
        for _ in range(400):  # until A is running it
            if (await ac.get("/jobs", params={"state": "running"})).json():
                break
            await asyncio.sleep(0.025)
        else:
            pytest.fail(f"the job never ran on A: {await job}")
        await asyncio.to_thread(kill_node, a)
        r = await job
        assert r.status_code == 200, r.text
        assert served_by(r, nodes) == "B"  # C is warm but over the cap
        attempts = r.headers["X-Gateway-Attempts"]
        assert attempts.startswith(f"{a.url}: ") and f"{nodes['B'].url}: HTTP 200" in attempts
        r = await gw.post("/text-to-image", json=small())  # A is suspended now
        assert r.status_code == 200 and served_by(r, nodes) == "B"
        assert r.headers["X-Gateway-Attempts"].count("HTTP") == 1
        r = await gw.post(
            "/image-to-image",
            data={"model_id": SDXL, "prompt": "x", "num_inference_steps": "2"},
            files={"image": ("a.png", png(), "image/png")},
        )
        assert reason(r).startswith(
            f"the one orchestrator offering {SDXL} for image-to-image failed recently (suspended;"
        )
        await asyncio.sleep(1.5)  # a poll round
        state = (await gw.get("/orchestrators")).json()["orchestrators"]
    a_state = next(o for o in state if o["url"] == a.url)
    assert a_state["suspended"] and not a_state["reachable"]
    assert a_state["error"].startswith("cannot reach /info")
    assert a_state["stats"]["jobs_failed"] == 1


async def test_in_process_without_caps_picks_the_warm_expensive_one(
    gateway: Proc, nodes: dict[str, NodeProcess], gateway_key: Path
) -> None:
    """After A died: no cap, so C (warm, 9000) beats B (cold, 500)."""
    from core.gateway.payer import TicketPayer
    from core.payments.sender import TicketSender, load_or_create_key

    assert nodes["A"].proc.poll() is not None
    payer = TicketPayer(TicketSender(load_or_create_key(gateway_key)))
    gw = Gateway(Discovery([nodes[n].url for n in "ABC"]), payer=payer)
    await gw.start()
    try:
        result = await gw.submit(T2I, json=small(), pixels=64 * 64, steps=2)
        assert result.status == 200 and result.orchestrator_url == nodes["C"].url
        assert [a.url for a in result.attempts] == [nodes["C"].url]
        view = gw.discovery.view(nodes["A"].url)
        assert view is not None and view.error and view.suspended(view.suspended_until - 1)
    finally:
        await gw.stop()
        await payer.aclose()


# ---------------------------------------------------------------------- stub orchestrators
def stub_info(models: dict[str, bool], price: int | None = None) -> dict[str, Any]:
    return {
        "state": "running",
        "capabilities": {
            "per_capability": {
                "27": {
                    "name": T2I,
                    "models": {m: {"warm": w, "capacity": 1} for m, w in models.items()},
                }
            }
        },
        "capabilities_prices": [
            {"capability": 27, "constraint": m, "price_per_unit": str(price), "pixels_per_unit": 1}
            for m in models
            if price is not None
        ],
    }


class QuietServer(uvicorn.Server):
    """uvicorn without signal handlers (the test owns the loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Stub:
    """An orchestrator that answers jobs from a script of (status, message) and records them."""

    def __init__(self, models: dict[str, bool], script: list[tuple[int, str]]) -> None:
        self.script = list(script)
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        app = FastAPI()
        app.get("/info")(lambda: stub_info(models))

        @app.post("/text-to-image")
        async def t2i(request: Request) -> JSONResponse:
            self.requests.append((dict(request.headers), await request.json()))
            status, msg = self.script.pop(0) if self.script else (200, "")
            if status == 200:
                return JSONResponse({"images": [{"url": "data:,", "seed": 1, "nsfw": False}]})
            return JSONResponse({"detail": {"msg": msg}}, status_code=status)

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = QuietServer(
            uvicorn.Config(app, port=self.port, log_level="warning", lifespan="off")
        )


@contextlib.asynccontextmanager
async def serving(*stubs: Stub) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(s.server.serve()) for s in stubs]
    try:
        while not all(s.server.started for s in stubs):
            await asyncio.sleep(0.01)
        yield
    finally:
        for s in stubs:
            s.server.should_exit = True
        await asyncio.gather(*tasks)


class RecordingPayer:
    def __init__(self, refuse: str | None = None) -> None:
        self.refuse = refuse
        self.answers: list[tuple[str, int]] = []

    async def headers(
        self, view: OrchestratorView, capability: str, model_id: str, pixels: int
    ) -> dict[str, str]:
        if view.url == self.refuse:
            raise OrchardError("no ticket parameters")
        return {"Livepeer-Payment": f"{capability}:{model_id}:{pixels}"}

    async def on_response(self, view: OrchestratorView, response: httpx.Response) -> None:
        self.answers.append((view.url, response.status_code))


def body(model: str = "m/one") -> dict[str, Any]:
    return {"model_id": model, "prompt": "x"}


@pytest.mark.parametrize(
    ("first", "retried"),
    [
        pytest.param((503, "insufficient capacity"), True, id="503-capacity"),
        pytest.param((500, "out of memory"), True, id="500"),
        pytest.param((402, "ticket rejected"), True, id="402-payment"),
        pytest.param((400, "width must be a multiple of 8"), False, id="400-client"),
        pytest.param((404, "no such route"), False, id="404-client"),
    ],
)
async def test_which_answers_are_retried(first: tuple[int, str], retried: bool) -> None:
    one, two = Stub({"m/one": True}, [first]), Stub({"m/one": True}, [])
    payer = RecordingPayer()
    gw = Gateway(Discovery([one.url, two.url]), payer=payer)
    async with serving(one, two):
        await gw.start()
        try:
            result = await gw.submit(T2I, json=body(), pixels=100, steps=4)
        finally:
            await gw.stop()
    a, b = gw.discovery.views()
    assert one.requests[0][0]["livepeer-payment"] == "text-to-image:m/one:100"
    assert one.requests[0][1] == body()
    if retried:
        assert result.status == 200 and result.orchestrator_url == two.url
        assert [(x.url, x.outcome) for x in result.attempts] == [
            (one.url, first[0]),
            (two.url, 200),
        ]
        assert result.attempts[0].detail == first[1]
        assert a.suspended(a.suspended_until - 1) and a.failures == 1 and first[1] in str(a.error)
        assert b.score.get(T2I, "m/one") is not None
        assert payer.answers == [(one.url, first[0]), (two.url, 200)]
    else:
        assert result.status == first[0] and result.orchestrator_url == one.url
        assert result.json() == {"detail": {"msg": first[1]}}
        assert a.suspended_until == 0 and a.failures == 0
        assert a.stats.jobs_rejected == 1 and two.requests == []


async def test_all_failing_is_503_naming_each_attempt() -> None:
    one = Stub({"m/one": True}, [(503, "insufficient capacity")])
    two = Stub({"m/one": False}, [(500, "boom")])
    gw = Gateway(Discovery([one.url, two.url]))
    async with serving(one, two):
        await gw.start()
        try:
            with pytest.raises(ServiceUnavailable) as err:
                await gw.submit(T2I, json=body(), pixels=1, steps=1)
            assert err.value.msg == (
                f"no orchestrators available: tried 2, all failed: {one.url}: HTTP 503 "
                f"insufficient capacity; {two.url}: HTTP 500 boom"
            )
            with pytest.raises(ServiceUnavailable, match="failed recently \\(suspended;"):
                await gw.submit(T2I, json=body(), pixels=1, steps=1)
        finally:
            await gw.stop()


async def test_retry_budget_and_unreachable_orchestrators() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    one, two = Stub({"m/one": True}, [(503, "busy")]), Stub({"m/one": True}, [])
    gw = Gateway(Discovery([one.url, dead, two.url]), retry_budget_s=0)
    async with serving(one, two):
        await gw.start()
        try:
            assert gw.discovery.views()[1].error and gw.discovery.views()[1].info is None
            with pytest.raises(ServiceUnavailable, match=r"retry budget of 0 s spent"):
                await gw.submit(T2I, json=body(), pixels=1, steps=1)
            assert two.requests == []
        finally:
            await gw.stop()


async def test_payer_refusing_an_orchestrator_skips_it() -> None:
    one, two = Stub({"m/one": True}, []), Stub({"m/one": True}, [])
    gw = Gateway(Discovery([one.url, two.url]), payer=RecordingPayer(refuse=one.url))
    async with serving(one, two):
        await gw.start()
        try:
            result = await gw.submit(T2I, json=body(), pixels=1, steps=1)
        finally:
            await gw.stop()
    assert result.orchestrator_url == two.url and one.requests == []
    assert result.attempts[0] == (one.url, "payment: no ticket parameters", "", 0.0)


async def test_default_model_when_the_request_names_none() -> None:
    one, two = Stub({"m/one": True}, []), Stub({"m/one": False, "m/two": True}, [])
    async with serving(one, two):
        gw = Gateway(Discovery([one.url]))
        await gw.start()
        try:
            result = await gw.submit(T2I, json=body(""), pixels=1, steps=1)
            assert result.status == 200 and one.requests[-1][1]["model_id"] == "m/one"
        finally:
            await gw.stop()
        gw = Gateway(Discovery([one.url, two.url]), PriceCaps.parse(["10"]))
        await gw.start()
        try:
            with pytest.raises(BadRequest, match=r"set model_id: .* \(m/one, m/two\)"):
                await gw.submit(T2I, json=body(""), pixels=1, steps=1)
        finally:
            await gw.stop()


# ---------------------------------------------------------------------- command line
@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(
            ["--max-price", "cheap"], 2, "a price must be a number such as 5000", id="bad-price"
        ),
        pytest.param(
            ["--max-price", "text-to-imgae:a/b=1"], 2, "unknown pipeline", id="bad-pipeline"
        ),
        pytest.param(["--key", "/dev/null/key"], 2, "key file", id="unusable-key"),
        pytest.param(["--orchestrators", "ftp://x"], 2, "must be http(s)", id="bad-url"),
    ],
)
def test_command_line_refuses_wrong_options(args: list[str], code: int, message: str) -> None:
    launcher = "import sys; from app.gateway_cli import main; sys.exit(main(sys.argv[1:]))"
    out = subprocess.run(
        [sys.executable, "-c", launcher, "--orchestrators", "127.0.0.1:1", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert out.returncode == code and message in out.stderr, out.stderr
