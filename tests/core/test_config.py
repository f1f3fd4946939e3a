"""aiModels.json: load, validate, write (core/config.py).

Real files on a tmp_path; the only stand-ins are failures injected into ``os`` calls
(fsync, replace) to show that a save that dies half-way leaves the previous file intact.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import config
from core.config import (
    Backend,
    ConfigError,
    ModelEntry,
    ModelsConfig,
    Price,
    dumps,
    load,
    loads,
    save,
)
from core.errors import BadRequest, OrchardError
from core.pipelines import Capability

GW = "0x5bE44e23041E93CDF9bCd5A0968524e104e38ae1"
OTHER_GW = "0x0000000000000000000000000000000000000001"

# The shape of go-livepeer's documented example, plus unknown keys that must survive.
LIVEPEER_FILE = """[
  {
    "pipeline": "text-to-image",
    "model_id": "SG161222/RealVisXL_V4.0_Lightning",
    "price_per_unit": 4768371,
    "warm": true
  },
  {
    "pipeline": "image-to-video",
    "model_id": "stabilityai/stable-video-diffusion-img2vid-xt-1-1",
    "price_per_unit": 3390842,
    "warm": true,
    "optimization_flags": {"SFAST": true, "DEEPCACHE": false}
  },
  {
    "pipeline": "upscale",
    "model_id": "stabilityai/stable-diffusion-x4-upscaler",
    "price_per_unit": 0.000000000000000001,
    "pixels_per_unit": 1e3,
    "comment": "kept for the old gateway",
    "x-ops": {"owner": "ops", "limits": [1, 2.50, null, {"deep": 12345678901234567890123}]}
  },
  {
    "pipeline": "text-to-image",
    "model_id": "x",
    "url": "http://127.0.0.1:8000",
    "token": "secret",
    "capacity": 2
  },
  {
    "pipeline": "text-to-image",
    "model_id": "SG161222/RealVisXL_V4.0_Lightning",
    "gateway": "0x5bE44e23041E93CDF9bCd5A0968524e104e38ae1",
    "price_per_unit": 3390842.50,
    "pixels_per_unit": 1000000,
    "currency": "USD",
    "warm": true
  }
]
"""


def entry(**fields: Any) -> dict[str, Any]:
    return {"pipeline": "text-to-image", "model_id": "org/model", **fields}


def text_of(*entries: dict[str, Any]) -> str:
    """The entries as JSON text; a Decimal is written as the number it spells."""
    text = json.dumps(list(entries), indent=2, default=lambda d: f"<{d}>")
    return re.sub(r'"<([^>]*)>"', r"\1", text)


# --- loading a Livepeer file -------------------------------------------------------------


def test_livepeer_file_loads() -> None:
    cfg = loads(LIVEPEER_FILE)

    assert [e.key for e in cfg.entries] == [
        ("text-to-image", "SG161222/RealVisXL_V4.0_Lightning"),
        ("image-to-video", "stabilityai/stable-video-diffusion-img2vid-xt-1-1"),
        ("upscale", "stabilityai/stable-diffusion-x4-upscaler"),
        ("text-to-image", "x"),
        ("text-to-image", "SG161222/RealVisXL_V4.0_Lightning"),
    ]
    rv, svd, upscale, ext, rv_gw = cfg.entries
    assert (
        rv.warm
        and rv.price_per_unit == Fraction(4768371)
        and rv.capability is Capability("text-to-image")
    )
    assert rv.effective_backend is Backend.LOCAL and rv.effective_capacity == 1
    assert svd.optimization_flags == {"SFAST": True, "DEEPCACHE": False}
    assert not upscale.supported and upscale.capability is None
    assert upscale.price_per_unit == Fraction(1, 10**18) and upscale.pixels_per_unit == 1000
    assert upscale.extra["comment"] == "kept for the old gateway"
    assert ext.effective_backend is Backend.EXTERNAL and ext.backend is None
    assert (ext.url, ext.token, ext.capacity, ext.effective_capacity) == (
        "http://127.0.0.1:8000",
        "secret",
        2,
        2,
    )
    assert not ext.warm and ext.price_per_unit is None
    assert rv_gw.gateway == GW and rv_gw.gateway_key == GW.lower()
    assert rv_gw.price_per_unit == Fraction(339084250, 100) and rv_gw.line == 30
    assert cfg.warnings == (
        'aiModels.json entry 1 ("model_id": "stabilityai/stable-video-diffusion-img2vid-xt-1-1"): '
        'optimization flag "SFAST": stable-fast is not part of Orchard; use COMPILE; it is not '
        "applied",
        'aiModels.json entry 2 ("model_id": "stabilityai/stable-diffusion-x4-upscaler"): '
        'pipeline "upscale" is a Livepeer pipeline that Orchard does not run; the entry is kept '
        "in the file but not served (Orchard runs text-to-image, image-to-image, image-to-video)",
    )
    assert [e.model_id for e in cfg.warm_models()] == [
        "SG161222/RealVisXL_V4.0_Lightning",
        "stabilityai/stable-video-diffusion-img2vid-xt-1-1",
    ]


def test_round_trip_through_save_and_load_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "aiModels.json"
    path.write_text(LIVEPEER_FILE)
    cfg = load(path)

    save(cfg, path)
    again = load(path)

    assert again == cfg
    assert again.to_json_list() == cfg.to_json_list()
    assert dumps(again) == dumps(cfg)
    written = path.read_text()
    # Numbers exactly as the operator wrote them, not as a float would print them.
    for spelled in ("4768371", "0.000000000000000001", "1e3", "3390842.50", "2.50"):
        assert f": {spelled}" in written or f" {spelled}," in written, spelled
    assert "12345678901234567890123" in written
    # The same meaning to Livepeer: json.loads of both files gives the same values.
    assert json.loads(written, parse_float=Decimal) == json.loads(
        LIVEPEER_FILE, parse_float=Decimal
    )
    assert again.entries[2].extra == {
        "comment": "kept for the old gateway",
        "x-ops": {
            "owner": "ops",
            "limits": [1, Decimal("2.50"), None, {"deep": 12345678901234567890123}],
        },
    }


def test_dumps_orders_keys_and_leaves_absent_defaults_out() -> None:
    text = json.dumps(
        [
            {
                "zz-note": "mine",
                "backend": "docker",
                "gpus": [1, 0],
                "warm": False,
                "model_id": "org/model",
                "pipeline": "image-to-image",
            },
            {"model_id": "org/other", "pipeline": "text-to-image", "url": None},
        ]
    )
    assert dumps(loads(text)) == (
        "[\n"
        "  {\n"
        '    "pipeline": "image-to-image",\n'
        '    "model_id": "org/model",\n'
        '    "warm": false,\n'
        '    "gpus": [1, 0],\n'
        '    "backend": "docker",\n'
        '    "zz-note": "mine"\n'
        "  },\n"
        "  {\n"
        '    "pipeline": "text-to-image",\n'
        '    "model_id": "org/other"\n'
        "  }\n"
        "]\n"
    )
    assert dumps(loads("[]")) == "[]\n"


@given(st.decimals(min_value=0, allow_nan=False, allow_infinity=False).map(abs))  # no -0
def test_any_price_round_trips_exactly(price: Decimal) -> None:
    text = f'[{{"pipeline": "llm", "model_id": "m", "price_per_unit": {price}}}]'
    cfg = loads(text)
    assert cfg.entries[0].price_per_unit == Fraction(price)
    assert f'"price_per_unit": {price}\n' in dumps(cfg)
    assert loads(dumps(cfg)) == cfg


def test_a_changed_price_is_written_in_exact_decimal_form() -> None:
    cfg = loads('[{"pipeline": "text-to-image", "model_id": "org/model", "price_per_unit": 1e3}]')
    cheaper = dataclasses.replace(cfg.entries[0], price_per_unit=Fraction(7, 8))
    assert '"price_per_unit": 0.875\n' in dumps(ModelsConfig((cheaper,)))
    same = dataclasses.replace(cfg.entries[0], price_per_unit=Fraction(1000))
    assert '"price_per_unit": 1e3\n' in dumps(ModelsConfig((same,)))

    third = dataclasses.replace(cfg.entries[0], price_per_unit=Fraction(1, 3))
    with pytest.raises(ConfigError) as err:
        dumps(ModelsConfig((third,)))
    assert err.value.msg == (
        'aiModels.json entry 0 ("model_id": "org/model"): "price_per_unit" is 1/3, which has '
        'no exact decimal form; scale it with "pixels_per_unit" instead (for example 1 per 3 '
        "pixels)"
    )


def test_model_entry_normalises_values() -> None:
    e = ModelEntry(
        "text-to-image",
        "org/model",
        price_per_unit=Decimal("0.5"),  # type: ignore[arg-type]
        pixels_per_unit=Decimal("10.0"),  # type: ignore[arg-type]
        gpus=[0, 2],  # type: ignore[arg-type]
        backend="docker",  # type: ignore[arg-type]
    )
    assert e.price_per_unit == Fraction(1, 2) and e.pixels_per_unit == 10
    assert e.gpus == (0, 2) and e.backend is Backend.DOCKER
    assert dumps(ModelsConfig((e,))) == (
        "[\n"
        "  {\n"
        '    "pipeline": "text-to-image",\n'
        '    "model_id": "org/model",\n'
        '    "price_per_unit": 0.5,\n'
        '    "pixels_per_unit": 10,\n'
        '    "gpus": [0, 2],\n'
        '    "backend": "docker"\n'
        "  }\n"
        "]\n"
    )


# --- errors ------------------------------------------------------------------------------

ERRORS = [
    pytest.param(
        '[\n  {"pipeline": "text-to-image" "model_id": "a"}\n]',
        "aiModels.json: not valid JSON at line 2, column 32: Expecting ',' delimiter",
        None,
        None,
        id="invalid-json",
    ),
    pytest.param(
        "  \n",
        "aiModels.json: the file is empty; a configuration with no models is []",
        None,
        None,
        id="empty-file",
    ),
    pytest.param(
        '[{"pipeline": "text-to-image", "model_id": "a", "price_per_unit": NaN}]',
        "aiModels.json: not valid JSON: NaN is not a number JSON allows",
        None,
        None,
        id="nan",
    ),
    pytest.param(
        '{"pipeline": "text-to-image", "model_id": "a"}',
        "aiModels.json: the top level must be a list of model entries, [{...}, ...], got an object",
        None,
        None,
        id="top-level-not-a-list",
    ),
    pytest.param(
        text_of(entry(), "text-to-image:org/model:true"),  # type: ignore[arg-type]
        'aiModels.json entry 1: each entry must be an object such as {"pipeline": '
        '"text-to-image", "model_id": "..."}, got "text-to-image:org/model:true"',
        1,
        None,
        id="entry-not-an-object",
    ),
    pytest.param(
        text_of({"model_id": "org/model", "warm": True}),
        'aiModels.json entry 0 ("model_id": "org/model"): "pipeline" is missing; name one '
        "of: text-to-image, image-to-image, image-to-video",
        0,
        "pipeline",
        id="missing-pipeline",
    ),
    pytest.param(
        text_of({"pipeline": "text-to-image", "model_id": ""}),
        'aiModels.json entry 0: "model_id" is missing; name the model by its Hugging Face '
        'id, such as "org/name"',
        0,
        "model_id",
        id="missing-model-id",
    ),
    pytest.param(
        text_of(entry(), entry(model_id="b"), entry(pipeline="text-to-imgae", model_id="foo/bar")),
        'aiModels.json entry 2 ("model_id": "foo/bar"): unknown pipeline "text-to-imgae"; '
        "known: text-to-image, image-to-image, image-to-video, upscale, audio-to-text, "
        "segment-anything-2, llm, image-to-text, text-to-speech, live-video-to-video; "
        'did you mean "text-to-image"?',
        2,
        "pipeline",
        id="unknown-pipeline",
    ),
    pytest.param(
        text_of(entry(pipeline=27)),
        'aiModels.json entry 0 ("model_id": "org/model"): "pipeline" must be a string, got 27',
        0,
        "pipeline",
        id="pipeline-not-a-string",
    ),
    pytest.param(
        text_of(entry(warm="yes")),
        'aiModels.json entry 0 ("model_id": "org/model"): "warm" must be true or false, got "yes"',
        0,
        "warm",
        id="warm-not-a-bool",
    ),
    pytest.param(
        text_of(entry(capacity=Decimal("1.5"))),
        'aiModels.json entry 0 ("model_id": "org/model"): "capacity" must be a whole number, '
        "got 1.5",
        0,
        "capacity",
        id="capacity-not-an-int",
    ),
    pytest.param(
        text_of(entry(capacity="2")),
        'aiModels.json entry 0 ("model_id": "org/model"): "capacity" must be a whole number, '
        'got "2"',
        0,
        "capacity",
        id="capacity-a-string",
    ),
    pytest.param(
        text_of(entry(capacity=-1)),
        'aiModels.json entry 0 ("model_id": "org/model"): "capacity" must not be negative, '
        "got -1; leave it out for the default, 1",
        0,
        "capacity",
        id="negative-capacity",
    ),
    pytest.param(
        text_of(entry(gpus=0)),
        'aiModels.json entry 0 ("model_id": "org/model"): "gpus" must be a list of GPU '
        "indices such as [0, 1], got 0",
        0,
        "gpus",
        id="gpus-not-a-list",
    ),
    pytest.param(
        text_of(entry(gpus=[0, -1])),
        'aiModels.json entry 0 ("model_id": "org/model"): "gpus" must list GPU indices '
        "(whole numbers from 0), got -1",
        0,
        "gpus",
        id="gpus-negative",
    ),
    pytest.param(
        text_of(entry(gpus=[True])),
        'aiModels.json entry 0 ("model_id": "org/model"): "gpus" must list GPU indices '
        "(whole numbers from 0), got true",
        0,
        "gpus",
        id="gpus-bool",
    ),
    pytest.param(
        text_of(entry(gpus=[1, 0, 1])),
        'aiModels.json entry 0 ("model_id": "org/model"): "gpus" lists GPU 1 twice',
        0,
        "gpus",
        id="gpus-twice",
    ),
    pytest.param(
        text_of(entry(gpus=[])),
        'aiModels.json entry 0 ("model_id": "org/model"): "gpus" is empty; leave it out to '
        "let Orchard place the model",
        0,
        "gpus",
        id="gpus-empty",
    ),
    pytest.param(
        text_of(entry(price_per_unit="cheap")),
        'aiModels.json entry 0 ("model_id": "org/model"): "price_per_unit" must be a number '
        'such as 4768371, got "cheap"',
        0,
        "price_per_unit",
        id="price-not-numeric",
    ),
    pytest.param(
        text_of(entry(price_per_unit=True)),
        'aiModels.json entry 0 ("model_id": "org/model"): "price_per_unit" must be a number '
        "such as 4768371, got true",
        0,
        "price_per_unit",
        id="price-bool",
    ),
    pytest.param(
        text_of(entry(price_per_unit=None)),
        'aiModels.json entry 0 ("model_id": "org/model"): "price_per_unit" must be a number, '
        "got null; leave the key out for the default",
        0,
        "price_per_unit",
        id="price-null",
    ),
    pytest.param(
        text_of(entry(price_per_unit=-5)),
        'aiModels.json entry 0 ("model_id": "org/model"): "price_per_unit" must not be '
        "negative, got -5",
        0,
        "price_per_unit",
        id="price-negative",
    ),
    pytest.param(
        text_of(entry(price_per_unit="-0.5")),
        'aiModels.json entry 0 ("model_id": "org/model"): "price_per_unit" must not be '
        'negative, got "-0.5"',
        0,
        "price_per_unit",
        id="price-negative-string",
    ),
    pytest.param(
        text_of(entry(pixels_per_unit=0)),
        'aiModels.json entry 0 ("model_id": "org/model"): "pixels_per_unit" must be a whole '
        "number above 0, got 0",
        0,
        "pixels_per_unit",
        id="pixels-zero",
    ),
    pytest.param(
        text_of(entry(pixels_per_unit=Decimal("1.5"))),
        'aiModels.json entry 0 ("model_id": "org/model"): "pixels_per_unit" must be a whole '
        "number above 0, got 1.5",
        0,
        "pixels_per_unit",
        id="pixels-fraction",
    ),
    pytest.param(
        text_of(entry(optimization_flags=["SFAST"])),
        'aiModels.json entry 0 ("model_id": "org/model"): "optimization_flags" must be an '
        'object such as {"SFAST": true}, got a list',
        0,
        "optimization_flags",
        id="flags-not-an-object",
    ),
    pytest.param(
        text_of(entry(url=8000)),
        'aiModels.json entry 0 ("model_id": "org/model"): "url" must be a string, got 8000',
        0,
        "url",
        id="url-not-a-string",
    ),
    pytest.param(
        text_of(entry(url="127.0.0.1:8000")),
        'aiModels.json entry 0 ("model_id": "org/model"): "url" must be an http:// or '
        'https:// address such as "http://127.0.0.1:8000", got "127.0.0.1:8000"',
        0,
        "url",
        id="url-not-http",
    ),
    pytest.param(
        text_of(entry(backend="kubernetes")),
        'aiModels.json entry 0 ("model_id": "org/model"): "backend" must be one of local, '
        'docker, external, got "kubernetes"',
        0,
        "backend",
        id="unknown-backend",
    ),
    pytest.param(
        text_of(entry(url="http://10.0.0.5:8000", backend="local")),
        'aiModels.json entry 0 ("model_id": "org/model"): "backend" is "local" but "url" is '
        'set, which means an external runner; set "backend" to "external" or remove "url"',
        0,
        "backend",
        id="url-with-backend-local",
    ),
    pytest.param(
        text_of(entry(backend="external")),
        'aiModels.json entry 0 ("model_id": "org/model"): "url" is missing but "backend" is '
        '"external"; give the runner\'s address in "url"',
        0,
        "url",
        id="external-without-url",
    ),
    pytest.param(
        text_of({"pipeline": "text-to-image", "Model_ID": "org/model"}),
        'aiModels.json entry 0: unknown key "Model_ID"; keys are lower case: write "model_id"',
        0,
        "Model_ID",
        id="key-in-wrong-case",
    ),
    pytest.param(
        text_of(entry(price_per_unit=1), entry(model_id="b"), entry(price_per_unit=2)),
        'aiModels.json entries 0 and 2 ("model_id": "org/model"): pipeline "text-to-image" is '
        'listed twice for the default gateway; merge the two entries (use "capacity" for more '
        'than one job at a time) or give one a "gateway"',
        2,
        "model_id",
        id="same-model-twice",
    ),
    pytest.param(
        text_of(entry(gateway=GW), entry(gateway=GW.lower())),
        f'aiModels.json entries 0 and 1 ("model_id": "org/model"): pipeline "text-to-image" '
        f'is listed twice for gateway "{GW.lower()}"; merge the two entries (use "capacity" '
        'for more than one job at a time) or give one a "gateway"',
        1,
        "model_id",
        id="same-model-twice-for-a-gateway",
    ),
    pytest.param(
        text_of(entry(), entry(gateway="default")),
        'aiModels.json entries 0 and 1 ("model_id": "org/model"): pipeline "text-to-image" is '
        'listed twice for the default gateway; merge the two entries (use "capacity" for more '
        'than one job at a time) or give one a "gateway"',
        1,
        "model_id",
        id="gateway-default-is-the-default-entry",
    ),
    pytest.param(
        text_of(
            entry(warm=True, url="http://a:8000"),
            entry(model_id="b"),
            entry(url="http://b:8000"),
        ),
        'aiModels.json entries 0 and 2 ("model_id": "org/model"): pipeline "text-to-image" is '
        "warm in entry 0 and cold in entry 2; a model is either kept warm or not (go-livepeer "
        'refuses this too): make "warm" the same in both',
        2,
        "warm",
        id="warm-and-cold",
    ),
]


@pytest.mark.parametrize(("text", "message", "index", "field"), ERRORS)
def test_errors_name_the_entry_and_the_field(
    text: str, message: str, index: int | None, field: str | None
) -> None:
    with pytest.raises(ConfigError) as err:
        loads(text)
    assert err.value.msg == message
    assert (err.value.entry, err.value.field) == (index, field)
    assert isinstance(err.value, BadRequest) and err.value.status == 400
    assert err.value.to_detail() == {"detail": {"msg": message}}


def test_errors_carry_the_position_in_the_file() -> None:
    with pytest.raises(ConfigError) as bad_json:
        loads('[\n  {"pipeline": "text-to-image" "model_id": "a"}\n]')
    assert (bad_json.value.line, bad_json.value.column) == (2, 32)

    with pytest.raises(ConfigError) as bad_entry:
        loads(text_of(entry(), entry(model_id="b", capacity=-2)))
    assert (bad_entry.value.line, bad_entry.value.model_id) == (6, "b")


def test_load_names_the_file_and_reports_a_missing_one(tmp_path: Path) -> None:
    path = tmp_path / "aiModels.json"
    with pytest.raises(FileNotFoundError):
        load(path)
    path.write_bytes(b'[{"pipeline": "text-to-image", "model_id": "caf\xe9"}]')
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.msg == f"{path}: not UTF-8 text (byte 47); save the file as UTF-8"
    assert isinstance(err.value, OrchardError)


# --- accepted, with something to tell the operator -----------------------------------------

WARNINGS = [
    pytest.param(
        text_of(entry(capacity=0)),
        'aiModels.json entry 0 ("model_id": "org/model"): "capacity" 0 means the default, 1, '
        "to Livepeer; write 1 or leave it out",
        id="capacity-zero",
    ),
    pytest.param(
        text_of(entry(price_per_unit="12345678901234567890")),
        'aiModels.json entry 0 ("model_id": "org/model"): "price_per_unit" is a string '
        '("12345678901234567890"); go-livepeer reads only a bare number here and would refuse '
        "the file: write 12345678901234567890 without quotes",
        id="price-as-string",
    ),
    pytest.param(
        text_of(entry(optimization_flags={"CHANNELS_LAST": True})),
        'aiModels.json entry 0 ("model_id": "org/model"): "optimization_flags" are set but '
        '"warm" is not; Livepeer applies them only to warm models',
        id="flags-without-warm",
    ),
    pytest.param(
        text_of(entry(warm=True, optimization_flags={"PNG_LEVEL": 4})),
        'aiModels.json entry 0 ("model_id": "org/model"): optimization flag "PNG_LEVEL" is 4; '
        "go-livepeer accepts only true, false or a string and would refuse the file",
        id="flag-a-number",
    ),
    pytest.param(
        text_of(entry(token="secret")),
        'aiModels.json entry 0 ("model_id": "org/model"): "token" is set without "url"; it is '
        "only sent to an external runner",
        id="token-without-url",
    ),
    pytest.param(
        text_of(entry(url="http://a:8000", gpus=[0])),
        'aiModels.json entry 0 ("model_id": "org/model"): "gpus" is ignored for an external '
        'runner (one with a "url")',
        id="gpus-for-external",
    ),
    pytest.param(
        text_of(entry(gateway="my-gateway")),
        'aiModels.json entry 0 ("model_id": "org/model"): "gateway" "my-gateway" is not an '
        "Ethereum address (0x and 40 hex digits), so no gateway will match it",
        id="gateway-not-an-address",
    ),
    pytest.param(
        text_of(entry(warm=True), entry(gateway=GW, price_per_unit=1)),
        'aiModels.json entries 0 and 1 ("model_id": "org/model"): the gateway entry 1 is cold '
        "but the model is warm; Orchard keeps it warm, go-livepeer as a combined orchestrator "
        'and worker refuses the file: make "warm" the same',
        id="gateway-entry-cold",
    ),
    pytest.param(
        text_of(
            entry(url="http://a:8000", price_per_unit=1),
            entry(url="http://b:8000", price_per_unit=2),
        ),
        'aiModels.json entries 0 and 1 ("model_id": "org/model"): these runners of one model '
        "set different prices; the last one, entry 1, counts (as in go-livepeer)",
        id="runners-with-different-prices",
    ),
    pytest.param(
        '[{"pipeline": "text-to-image", "model_id": "org/model", "warm": false, "warm": true}]',
        'aiModels.json entry 0 ("model_id": "org/model"): "warm" appears twice; the last value '
        "counts (as in go-livepeer)",
        id="key-twice",
    ),
]


@pytest.mark.parametrize(("text", "warning"), WARNINGS)
def test_accepted_with_a_warning(text: str, warning: str) -> None:
    cfg = loads(text)
    assert cfg.warnings == (warning,)
    assert loads(dumps(cfg)).entries == cfg.entries


def test_what_livepeer_accepts_loads() -> None:
    cfg = loads(
        text_of(
            # Two external runners of one model: go-livepeer registers both.
            entry(url="http://a:8000", token="t", warm=True, price_per_unit=5),
            entry(url="http://b:8000", warm=True, price_per_unit=5),
            # A per-gateway price for the same model.
            entry(gateway=GW, warm=True, price_per_unit=3),
            # null is the same as an absent key; "gateway": "" means no gateway.
            entry(pipeline="llm", url=None, token=None, gateway="", warm=None),
            # Livepeer pipelines Orchard does not run.
            *(
                entry(pipeline=p, model_id=f"m/{p}")
                for p in config.LIVEPEER_PIPELINES
                if p not in {c.value for c in Capability}
            ),
        )
    )
    assert len(cfg.entries) == 11
    assert cfg.entries[3].url is None and cfg.entries[3].gateway_key is None
    assert len(cfg.warnings) == 8  # one per entry of a pipeline that Orchard does not run
    assert [e.url for e in cfg.warm_models()] == ["http://a:8000", "http://b:8000"]
    assert '"url"' not in dumps(cfg).split('"llm"')[1].split("}")[0]


def test_a_bom_is_read_and_dropped_on_save(tmp_path: Path) -> None:
    path = tmp_path / "aiModels.json"
    path.write_bytes(b"\xef\xbb\xbf" + text_of(entry()).encode())
    cfg = load(path)
    assert cfg.warnings == (
        f"{path}: the file starts with a byte-order mark, which go-livepeer cannot read; "
        "Orchard saves it without one",
    )
    save(cfg, path)
    assert path.read_bytes().startswith(b"[\n")


# --- prices ------------------------------------------------------------------------------

PRICED = loads(
    text_of(
        entry(price_per_unit=4768371),
        entry(gateway=GW, price_per_unit=Decimal("0.02"), pixels_per_unit=1000, currency="usd"),
        entry(model_id="free", price_per_unit=0),
        entry(model_id="unpriced"),
        entry(model_id="only-for-a-gateway", gateway=OTHER_GW, price_per_unit=9),
    )
)


@pytest.mark.parametrize(
    ("model_id", "gateway", "price"),
    [
        ("org/model", None, Price(Fraction(4768371), 1, "WEI")),
        ("org/model", GW, Price(Fraction(2, 100), 1000, "USD")),
        ("org/model", GW.lower(), Price(Fraction(2, 100), 1000, "USD")),
        ("org/model", OTHER_GW, Price(Fraction(4768371), 1, "WEI")),
        ("org/model", "default", Price(Fraction(4768371), 1, "WEI")),
        ("free", GW, Price(Fraction(0), 1, "WEI")),
        ("unpriced", None, None),
        ("only-for-a-gateway", OTHER_GW, Price(Fraction(9), 1, "WEI")),
        ("only-for-a-gateway", GW, None),
        ("not-listed", None, None),
    ],
)
def test_price_for_prefers_the_gateway_entry(
    model_id: str, gateway: str | None, price: Price | None
) -> None:
    assert PRICED.price_for("text-to-image", model_id, gateway) == price


def test_price_per_pixel() -> None:
    price = PRICED.price_for("text-to-image", "org/model", GW)
    assert price is not None and price.per_pixel == Fraction(2, 100_000)


# --- saving ------------------------------------------------------------------------------


def files_in(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(directory.iterdir())}


def test_save_keeps_the_previous_file_as_bak(tmp_path: Path) -> None:
    path = tmp_path / "aiModels.json"
    first = loads(text_of(entry(price_per_unit=1)))
    second = loads(text_of(entry(price_per_unit=2)))
    third = loads(text_of(entry(price_per_unit=3)))

    save(first, path)
    assert files_in(tmp_path) == {"aiModels.json": dumps(first)}
    save(second, path)
    assert files_in(tmp_path) == {"aiModels.json": dumps(second), "aiModels.json.bak": dumps(first)}
    save(third, path)
    assert files_in(tmp_path) == {"aiModels.json": dumps(third), "aiModels.json.bak": dumps(second)}


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions and symlinks")
def test_save_keeps_permissions_and_follows_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text("[]")
    real.chmod(0o640)
    link = tmp_path / "aiModels.json"
    link.symlink_to(real)

    save(loads(text_of(entry())), link)

    assert link.is_symlink() and load(link).entries[0].model_id == "org/model"
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert (tmp_path / "real.json.bak").read_text() == "[]"
    fresh = tmp_path / "new.json"
    save(loads("[]"), fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600  # it may come to hold runner tokens


def test_a_value_json_cannot_hold_fails_before_the_disk_is_touched(tmp_path: Path) -> None:
    path = tmp_path / "aiModels.json"
    save(loads(text_of(entry(price_per_unit=1))), path)
    save(loads(text_of(entry(price_per_unit=2))), path)
    before = files_in(tmp_path)
    bad = dataclasses.replace(
        loads(text_of(entry())).entries[0], extra={"note": "ok", "when": {1, 2}}
    )

    with pytest.raises(ConfigError) as err:
        save(ModelsConfig((bad,)), path)

    assert err.value.msg == (
        'aiModels.json entry 0 ("model_id": "org/model"): "when" cannot be written as JSON: '
        "a set is not a JSON value"
    )
    assert err.value.field == "when"
    assert files_in(tmp_path) == before


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_save_that_dies_half_way_leaves_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "aiModels.json"
    save(loads(text_of(entry(price_per_unit=1))), path)
    save(loads(text_of(entry(price_per_unit=2))), path)
    before = files_in(tmp_path)

    def disk_full(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, disk_full)
    with pytest.raises(ConfigError) as err:
        save(loads(text_of(entry(price_per_unit=3))), path)
    monkeypatch.undo()

    assert err.value.msg == (
        f"{path}: could not save the file: No space left on device; the previous file is unchanged"
    )
    assert files_in(tmp_path) == before  # no temporary file left behind either
    assert load(path).price_for("text-to-image", "org/model") == Price(Fraction(2), 1, "WEI")


def test_a_save_that_dies_after_the_backup_leaves_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "aiModels.json"
    save(loads(text_of(entry(price_per_unit=1))), path)
    save(loads(text_of(entry(price_per_unit=2))), path)
    current = path.read_text()
    replace = os.replace
    calls: list[str] = []

    def replace_then_fail(src: Any, dst: Any) -> None:
        calls.append(Path(dst).name)
        if len(calls) == 2:  # the backup is in place, the new file is not
            raise OSError(5, "Input/output error")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_fail)
    with pytest.raises(ConfigError):
        save(loads(text_of(entry(price_per_unit=3))), path)
    monkeypatch.undo()

    assert calls == ["aiModels.json.bak", "aiModels.json"]
    assert files_in(tmp_path) == {"aiModels.json": current, "aiModels.json.bak": current}


def test_optimization_flags_orchard_applies() -> None:
    """Known flags are checked when the file is read; unknown ones are kept and reported."""
    cfg = loads(
        text_of(
            entry(
                warm=True,
                optimization_flags={"CHANNELS_LAST": True, "BATCH": "8", "TURBO_MODE": True},
            )
        )
    )
    (e,) = cfg.entries
    assert e.orchard_flags == {"CHANNELS_LAST": True, "BATCH": "8"}
    assert e.optimization_flags == {"CHANNELS_LAST": True, "BATCH": "8", "TURBO_MODE": True}
    assert any("unknown optimization flag 'TURBO_MODE'" in w for w in cfg.warnings)
    assert '"TURBO_MODE": true' in dumps(cfg)  # round-trips untouched
    with pytest.raises(ConfigError) as err:
        loads(text_of(entry(warm=True, optimization_flags={"BATCH": "lots"})))
    assert '"optimization_flags" BATCH must be a whole number from 1 to 64' in str(err.value)
