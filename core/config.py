"""Livepeer's ``aiModels.json``: read, validate and write it.

The file is a JSON list of model entries, in go-livepeer's ``AIModelConfig`` shape, plus
two optional keys of Orchard's (``gpus``, ``backend``) that Livepeer ignores. A file that
go-livepeer accepts loads here; entries for Livepeer pipelines that Orchard does not run
are kept (and round-tripped) with a warning. Anything wrong raises :class:`ConfigError`,
whose message names the entry (index, ``model_id``) and the field. Orchard is stricter than
go-livepeer where go-livepeer would misbehave quietly: a key in the wrong case, a ``url``
that is not http(s), a negative ``capacity``, the same model listed twice. It is more
lenient where the intent is plain, and warns: a price written as a string, a byte-order
mark, an optimization flag that is a number. docs/config.md is the operator's reference.

Numbers are exact: prices are :class:`~fractions.Fraction` (go-livepeer's ``big.Rat``),
JSON numbers are read as ``int`` or :class:`~decimal.Decimal`, never float, and a number
is written back the way the file spelled it. :func:`save` is atomic and keeps the
previous file as ``aiModels.json.bak``.

Reading and writing block on the disk: call :func:`load` and :func:`save` from a worker
thread (``asyncio.to_thread``) in the event loop.
"""

from __future__ import annotations

import codecs
import difflib
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from core import optimizations as optim
from core.atomicfile import fsync_dir, write_temp
from core.errors import BadRequest
from core.pipelines import Capability

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_FILENAME",
    "LIVEPEER_PIPELINES",
    "Backend",
    "ConfigError",
    "ModelEntry",
    "ModelsConfig",
    "Price",
    "dumps",
    "load",
    "loads",
    "save",
]

DEFAULT_FILENAME = "aiModels.json"

#: Every pipeline go-livepeer accepts (``core.PipelineToCapability``). Orchard runs the ones
#: that are a :class:`~core.pipelines.Capability`; it keeps the others untouched.
LIVEPEER_PIPELINES: tuple[str, ...] = (
    "text-to-image",
    "image-to-image",
    "image-to-video",
    "upscale",
    "audio-to-text",
    "segment-anything-2",
    "llm",
    "image-to-text",
    "text-to-speech",
    "live-video-to-video",
)

#: Key order when writing: Livepeer's keys, then Orchard's, then unknown keys as found.
LIVEPEER_KEYS: tuple[str, ...] = (
    "pipeline",
    "model_id",
    "warm",
    "url",
    "token",
    "capacity",
    "price_per_unit",
    "pixels_per_unit",
    "currency",
    "gateway",
    "optimization_flags",
)
ORCHARD_KEYS: tuple[str, ...] = ("gpus", "backend")
_KNOWN_KEYS = frozenset(LIVEPEER_KEYS + ORCHARD_KEYS)
_NUMBER_KEYS = ("price_per_unit", "pixels_per_unit")
_RUNNABLE = ", ".join(c.value for c in Capability)
_ETH_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}\Z")
# A JSON number, or a ratio such as "1/3" (go-livepeer's big.Rat reads both).
_NUMBER_TEXT = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?\Z|-?\d+/\d+\Z")


class Backend(StrEnum):
    """Where a model's runner lives."""

    LOCAL = "local"  # a subprocess on this machine (the default)
    DOCKER = "docker"  # a container through the Docker engine
    EXTERNAL = "external"  # a runner at ``url`` (another box, Livepeer's ai-runner)


class ConfigError(BadRequest):
    """``aiModels.json`` is wrong: the message names the entry and the field.

    ``entry`` is the 0-based index in the list (the later one when two entries clash,
    ``entries`` has both), ``field`` the key at fault, ``line``/``column`` the place in the
    file when known. ``problem`` is the message without the "where" prefix.
    """

    def __init__(
        self,
        problem: str,
        *,
        source: str = DEFAULT_FILENAME,
        entry: int | None = None,
        entries: tuple[int, ...] = (),
        model_id: str | None = None,
        field: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.problem = problem
        self.source = source
        self.entries = entries or ((entry,) if entry is not None else ())
        self.entry = self.entries[-1] if self.entries else None
        self.model_id = model_id
        self.field = field
        self.line = line
        self.column = column
        super().__init__(f"{_where(source, self.entries, model_id)}: {problem}")

    def in_context(
        self, *, source: str, entry: int, model_id: str | None, line: int | None
    ) -> ConfigError:
        """The same problem, placed at entry ``entry`` of ``source``."""
        return ConfigError(
            self.problem,
            source=source,
            entry=entry,
            model_id=model_id,
            field=self.field,
            line=line,
        )


def _where(source: str, entries: tuple[int, ...], model_id: str | None) -> str:
    where = source
    if len(entries) > 1:
        where += " entries " + ", ".join(map(str, entries[:-1])) + f" and {entries[-1]}"
    elif entries:
        where += f" entry {entries[0]}"
    elif model_id is not None:
        where += " entry"
    if model_id is not None:
        where += f' ("model_id": {_quote(model_id)})'
    return where


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _describe(value: Any) -> str:
    """A value as an operator would see it in the file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _quote(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, _JsonDecimal):
        return value.text
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return str(value)


class _JsonDecimal(Decimal):
    """A JSON number with a fraction or exponent, remembering how the file spelled it."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> _JsonDecimal:
        self = super().__new__(cls, text)
        self.text = text
        return self


def _to_fraction(value: Any) -> Fraction | None:
    """``value`` as an exact number, or None if it is not a finite number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | Fraction):
        return Fraction(value)
    if isinstance(value, Decimal):
        return Fraction(value) if value.is_finite() else None
    if isinstance(value, float):
        return Fraction(repr(value)) if math.isfinite(value) else None
    if isinstance(value, str) and _NUMBER_TEXT.match(value):
        try:
            return Fraction(value)
        except ZeroDivisionError:
            return None
    return None


@dataclass(frozen=True)
class _Origin:
    """How the entry was written in the file, so that saving changes nothing else."""

    keys: frozenset[str] = frozenset()
    numbers: Mapping[str, Any] = field(default_factory=dict)  # as parsed: int, Decimal, str
    line: int | None = None


class Price(NamedTuple):
    """What a job costs: ``price_per_unit`` per ``pixels_per_unit`` pixels, in ``currency``."""

    price_per_unit: Fraction
    pixels_per_unit: int
    currency: str  # upper case; "WEI" unless the entry says otherwise

    @property
    def per_pixel(self) -> Fraction:
        return self.price_per_unit / self.pixels_per_unit


@dataclass(frozen=True)
class ModelEntry:
    """One entry of ``aiModels.json``. ``None`` means the key is absent (Livepeer's default).

    Values are checked and normalised on construction (a price given as ``int``,
    ``Decimal`` or a numeric string becomes a ``Fraction``; ``gpus`` a tuple); a wrong
    value raises :class:`ConfigError`. Unknown keys live in ``extra``.
    """

    pipeline: str
    model_id: str
    warm: bool = False
    url: str | None = None
    token: str | None = None
    capacity: int | None = None  # Livepeer: absent or 0 means 1
    price_per_unit: Fraction | None = None  # absent: the node-wide price applies
    pixels_per_unit: int | None = None  # absent: 1
    currency: str | None = None  # absent: WEI
    gateway: str | None = None  # a gateway's address: this entry's price is for it alone
    optimization_flags: dict[str, Any] | None = field(default=None, hash=False)
    gpus: tuple[int, ...] | None = None  # Orchard: pin to these GPU indices
    backend: Backend | None = None  # Orchard: absent means local, or external with url
    extra: dict[str, Any] = field(default_factory=dict, hash=False)
    _origin: _Origin | None = field(default=None, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def key(self) -> tuple[str, str]:
        return (self.pipeline, self.model_id)

    @property
    def capability(self) -> Capability | None:
        """The Orchard capability, or None for a Livepeer pipeline Orchard does not run."""
        try:
            return Capability(self.pipeline)
        except ValueError:
            return None

    @property
    def supported(self) -> bool:
        return self.capability is not None

    @property
    def effective_backend(self) -> Backend:
        if self.url:
            return Backend.EXTERNAL
        return self.backend or Backend.LOCAL

    @property
    def orchard_flags(self) -> dict[str, Any]:
        """The optimization flags Orchard applies (names it knows; others stay in the file)."""
        known = {*optim.FLAGS, *optim.IGNORED_FLAGS}
        return {k: v for k, v in (self.optimization_flags or {}).items() if k.upper() in known}

    @property
    def effective_capacity(self) -> int:
        """How many jobs at once: Livepeer reads an absent or 0 capacity as 1."""
        return self.capacity or 1

    @property
    def gateway_key(self) -> str | None:
        """The gateway this entry prices for, lower case; None for the default entry.

        go-livepeer compares addresses in lower case and reads "" and "default" as no
        gateway.
        """
        if self.gateway is None or self.gateway.lower() in ("", "default"):
            return None
        return self.gateway.lower()

    @property
    def line(self) -> int | None:
        """The line the entry starts on in the file it was read from."""
        return self._origin.line if self._origin else None


def _validate(e: ModelEntry) -> None:
    """Check and normalise ``e``'s fields in place (it is frozen: object.__setattr__)."""
    model_id = e.model_id if isinstance(e.model_id, str) and e.model_id else None

    def need(ok: bool, key: str, problem: str) -> None:
        if not ok:
            raise ConfigError(f'"{key}" {problem}', model_id=model_id, field=key)

    def put(key: str, value: Any) -> None:
        object.__setattr__(e, key, value)

    need(e.pipeline not in (None, ""), "pipeline", f"is missing; name one of: {_RUNNABLE}")
    need(isinstance(e.pipeline, str), "pipeline", f"must be a string, got {_describe(e.pipeline)}")
    if e.pipeline not in LIVEPEER_PIPELINES:
        near = difflib.get_close_matches(e.pipeline, LIVEPEER_PIPELINES, n=1)
        hint = f"; did you mean {_quote(near[0])}?" if near else ""
        raise ConfigError(
            f"unknown pipeline {_quote(e.pipeline)}; known: {', '.join(LIVEPEER_PIPELINES)}{hint}",
            model_id=model_id,
            field="pipeline",
        )
    need(
        e.model_id not in (None, ""),
        "model_id",
        'is missing; name the model by its Hugging Face id, such as "org/name"',
    )
    need(isinstance(e.model_id, str), "model_id", f"must be a string, got {_describe(e.model_id)}")
    need(isinstance(e.warm, bool), "warm", f"must be true or false, got {_describe(e.warm)}")
    for key in ("url", "token", "currency", "gateway"):
        value = getattr(e, key)
        need(
            value is None or isinstance(value, str),
            key,
            f"must be a string, got {_describe(value)}",
        )
    if e.url:
        parts = urlsplit(e.url.strip())
        need(
            parts.scheme in ("http", "https") and bool(parts.hostname),
            "url",
            f'must be an http:// or https:// address such as "http://127.0.0.1:8000", '
            f"got {_describe(e.url)}",
        )
    if e.capacity is not None:
        whole = isinstance(e.capacity, int) and not isinstance(e.capacity, bool)
        need(whole, "capacity", f"must be a whole number, got {_describe(e.capacity)}")
        need(
            e.capacity >= 0,
            "capacity",
            f"must not be negative, got {e.capacity}; leave it out for the default, 1",
        )
    if e.price_per_unit is not None:
        price = _to_fraction(e.price_per_unit)
        shown = _describe(e.price_per_unit)
        need(price is not None, "price_per_unit", f"must be a number such as 4768371, got {shown}")
        need(
            price is not None and price >= 0, "price_per_unit", f"must not be negative, got {shown}"
        )
        put("price_per_unit", price)
    if e.pixels_per_unit is not None:
        pixels = _to_fraction(e.pixels_per_unit)
        need(
            pixels is not None and pixels.denominator == 1 and pixels > 0,
            "pixels_per_unit",
            f"must be a whole number above 0, got {_describe(e.pixels_per_unit)}",
        )
        put("pixels_per_unit", int(pixels or 0))
    if e.optimization_flags is not None:
        flags = e.optimization_flags
        need(
            isinstance(flags, Mapping) and all(isinstance(k, str) for k in flags),
            "optimization_flags",
            f'must be an object such as {{"SFAST": true}}, got {_describe(flags)}',
        )
        put("optimization_flags", dict(flags))
        try:
            optim.parse(e.orchard_flags)
        except BadRequest as exc:
            need(False, "optimization_flags", exc.msg.removeprefix("optimization flag "))
    if e.gpus is not None:
        gpus = e.gpus
        need(
            isinstance(gpus, list | tuple),
            "gpus",
            f"must be a list of GPU indices such as [0, 1], got {_describe(gpus)}",
        )
        need(bool(gpus), "gpus", "is empty; leave it out to let Orchard place the model")
        for gpu in gpus:
            whole = isinstance(gpu, int) and not isinstance(gpu, bool)
            need(
                whole and gpu >= 0,
                "gpus",
                f"must list GPU indices (whole numbers from 0), got {_describe(gpu)}",
            )
        twice = sorted({gpu for gpu in gpus if gpus.count(gpu) > 1})
        need(not twice, "gpus", f"lists GPU {twice[0] if twice else ''} twice")
        put("gpus", tuple(gpus))
    if e.backend is not None:
        need(
            e.backend in tuple(Backend),
            "backend",
            f"must be one of {', '.join(Backend)}, got {_describe(e.backend)}",
        )
        put("backend", Backend(e.backend))
        need(
            not e.url or e.backend is Backend.EXTERNAL,
            "backend",
            f'is "{e.backend}" but "url" is set, which means an external runner; '
            'set "backend" to "external" or remove "url"',
        )
        need(
            bool(e.url) or e.backend is not Backend.EXTERNAL,
            "url",
            'is missing but "backend" is "external"; give the runner\'s address in "url"',
        )
    need(isinstance(e.extra, Mapping), "extra", f"must be an object, got {_describe(e.extra)}")
    clash = sorted(_KNOWN_KEYS.intersection(e.extra))
    need(not clash, clash[0] if clash else "", "is a field of its own, not an extra key")
    put("extra", dict(e.extra))


@dataclass(frozen=True)
class ModelsConfig:
    """A whole ``aiModels.json``: the entries in file order and what to tell the operator.

    Constructing one checks the entries against each other (duplicates, warm and cold at
    once) and raises :class:`ConfigError`; use :meth:`from_entries` to also compute the
    warnings.
    """

    entries: tuple[ModelEntry, ...] = ()
    warnings: tuple[str, ...] = ()
    source: str = field(default=DEFAULT_FILENAME, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", tuple(self.entries))
        object.__setattr__(self, "warnings", tuple(self.warnings))
        _check(self.entries, self.source)

    @classmethod
    def from_entries(
        cls,
        entries: Iterable[ModelEntry],
        *,
        source: str = DEFAULT_FILENAME,
        notes: Iterable[str] = (),
    ) -> ModelsConfig:
        """A checked config whose warnings are ``notes`` plus what the check found."""
        entries = tuple(entries)
        found = _check(entries, source)
        return cls(entries, tuple(dict.fromkeys([*notes, *found])), source)

    def warm_models(self) -> tuple[ModelEntry, ...]:
        """The entries Orchard keeps warm: runnable pipelines, ``warm`` true, in file order.

        A gateway entry only overrides a price, so it counts only for a model that has no
        default entry.
        """
        with_default = {e.key for e in self.entries if e.gateway_key is None}
        return tuple(
            e
            for e in self.entries
            if e.warm and e.supported and (e.gateway_key is None or e.key not in with_default)
        )

    def price_for(self, pipeline: str, model_id: str, gateway: str | None = None) -> Price | None:
        """The price a gateway pays for a model, as go-livepeer sets it.

        The entry for ``gateway`` first, then the default entry (no ``gateway``); among
        equals the last one counts. None when no entry lists the model or the entry that
        applies sets no ``price_per_unit``: the node-wide price (Livepeer's
        ``-pricePerUnit``) applies then.
        """
        wanted = gateway.lower() if gateway and gateway.lower() != "default" else None
        chosen: ModelEntry | None = None
        for gw in (wanted, None) if wanted else (None,):
            for e in self.entries:
                if e.key == (pipeline, model_id) and e.gateway_key == gw:
                    chosen = e
            if chosen is not None:
                break
        if chosen is None or chosen.price_per_unit is None:
            return None
        return Price(
            chosen.price_per_unit,
            chosen.pixels_per_unit or 1,
            (chosen.currency or "WEI").upper(),
        )

    def to_json_list(self) -> list[dict[str, Any]]:
        """The entries as JSON values in the order :func:`dumps` writes them.

        Numbers are ``int`` or ``Decimal`` (exact); a price the file gave as a string stays
        a string.
        """
        return [dict(_items(e, i, self.source)) for i, e in enumerate(self.entries)]


def _check(entries: tuple[ModelEntry, ...], source: str) -> list[str]:
    """Raise on entries that contradict each other; return warnings."""
    for e in entries:
        if not isinstance(e, ModelEntry):
            raise ConfigError(f"an entry must be a ModelEntry, got {type(e).__name__}")
    warnings: list[str] = []
    for i, e in enumerate(entries):
        warnings += [f"{_where(source, (i,), e.model_id)}: {text}" for text in _entry_warnings(e)]

    # Warm and cold at once: go-livepeer refuses it ("Cannot have same model_id as cold and
    # warm"). Gateway entries only set prices here, so a mismatch there is a warning.
    first: dict[tuple[str, str], int] = {}
    for i, e in enumerate(entries):
        if e.gateway_key is not None:
            continue
        j = first.setdefault(e.key, i)
        if entries[j].warm != e.warm:
            raise ConfigError(
                f'pipeline "{e.pipeline}" is {_temper(entries[j])} in entry {j} and '
                f"{_temper(e)} in entry {i}; a model is either kept warm or not "
                '(go-livepeer refuses this too): make "warm" the same in both',
                source=source,
                entries=(j, i),
                model_id=e.model_id,
                field="warm",
                line=e.line,
            )
    for i, e in enumerate(entries):
        d = first.get(e.key)
        if e.gateway_key is not None and d is not None and entries[d].warm != e.warm:
            warnings.append(
                f"{_where(source, (d, i), e.model_id)}: the gateway entry {i} is "
                f"{_temper(e)} but the model is {_temper(entries[d])}; Orchard keeps it "
                f"{_temper(entries[d])}, go-livepeer as a combined orchestrator and worker "
                'refuses the file: make "warm" the same'
            )

    # The same (pipeline, model_id, gateway) twice: an error, except for external runners
    # at different URLs, which go-livepeer registers side by side.
    seen: dict[tuple[str, str, str | None], list[int]] = {}
    for i, e in enumerate(entries):
        group = seen.setdefault((*e.key, e.gateway_key), [])
        for j in group:
            other = entries[j]
            if not (e.url and other.url and e.url.strip() != other.url.strip()):
                gw = (
                    f"gateway {_quote(e.gateway or '')}" if e.gateway_key else "the default gateway"
                )
                raise ConfigError(
                    f'pipeline "{e.pipeline}" is listed twice for {gw}; merge the two entries '
                    '(use "capacity" for more than one job at a time) or give one a "gateway"',
                    source=source,
                    entries=(j, i),
                    model_id=e.model_id,
                    field="model_id",
                    line=e.line,
                )
            if _price_of(other) != _price_of(e):
                warnings.append(
                    f"{_where(source, (j, i), e.model_id)}: these runners of one model set "
                    f"different prices; the last one, entry {i}, counts (as in go-livepeer)"
                )
        group.append(i)
    return warnings


def _temper(e: ModelEntry) -> str:
    return "warm" if e.warm else "cold"


def _price_of(e: ModelEntry) -> tuple[Fraction | None, int, str]:
    return (e.price_per_unit, e.pixels_per_unit or 1, (e.currency or "WEI").upper())


def _entry_warnings(e: ModelEntry) -> list[str]:
    out: list[str] = []
    if not e.supported:
        out.append(
            f'pipeline "{e.pipeline}" is a Livepeer pipeline that Orchard does not run; '
            f"the entry is kept in the file but not served (Orchard runs {_RUNNABLE})"
        )
    if e._origin:
        for key, value in e._origin.numbers.items():
            if isinstance(value, str):
                out.append(
                    f'"{key}" is a string ({_quote(value)}); go-livepeer reads only a bare '
                    f"number here and would refuse the file: write {value} without quotes"
                )
    if e.capacity == 0:
        out.append('"capacity" 0 means the default, 1, to Livepeer; write 1 or leave it out')
    if e.optimization_flags and not e.warm:
        out.append(
            '"optimization_flags" are set but "warm" is not; Livepeer applies them only '
            "to warm models"
        )
    for name, value in (e.optimization_flags or {}).items():
        if name.upper() in optim.IGNORED_FLAGS:
            if value not in (False, "false", ""):
                out.append(
                    f"optimization flag {_quote(name)}: {optim.IGNORED_FLAGS[name.upper()]}; "
                    "it is not applied"
                )
        elif name.upper() not in optim.FLAGS:
            out.append(optim.unknown_flag_message(name) + "; it is kept but not applied")
        if not isinstance(value, bool | str):
            out.append(
                f'optimization flag "{name}" is {_describe(value)}; go-livepeer accepts only '
                "true, false or a string and would refuse the file"
            )
    if e.token and not e.url:
        out.append('"token" is set without "url"; it is only sent to an external runner')
    if e.gpus is not None and e.effective_backend is Backend.EXTERNAL:
        out.append('"gpus" is ignored for an external runner (one with a "url")')
    if e.gateway_key is not None and not _ETH_ADDRESS.match(e.gateway or ""):
        out.append(
            f'"gateway" {_quote(e.gateway or "")} is not an Ethereum address (0x and 40 hex '
            "digits), so no gateway will match it"
        )
    return out


# --- reading ---------------------------------------------------------------------------


def load(path: str | os.PathLike[str]) -> ModelsConfig:
    """Read and check ``path``. A missing file raises FileNotFoundError (nothing configured).

    A UTF-8 byte-order mark is accepted (with a warning: go-livepeer refuses it).
    """
    source = os.fspath(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror or exc}", source=source) from exc
    notes: list[str] = []
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
        notes.append(
            f"{source}: the file starts with a byte-order mark, which go-livepeer cannot "
            "read; Orchard saves it without one"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text (byte {exc.start}); save the file as UTF-8", source=source
        ) from None
    return _parse(text, source, notes)


def loads(text: str, source: str = DEFAULT_FILENAME) -> ModelsConfig:
    """Parse and check the text of an ``aiModels.json``; ``source`` names it in messages."""
    return _parse(text, source, [])


def _reject_constant(name: str) -> Any:
    raise ConfigError(f"not valid JSON: {name} is not a number JSON allows")


def _parse(text: str, source: str, notes: list[str]) -> ModelsConfig:
    if not text.strip():
        raise ConfigError(
            "the file is empty; a configuration with no models is []", source=source, line=1
        )
    try:
        data = json.loads(text, parse_float=_JsonDecimal, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
            source=source,
            line=exc.lineno,
            column=exc.colno,
        ) from None
    except ConfigError as exc:
        raise ConfigError(exc.problem, source=source) from None
    if not isinstance(data, list):
        raise ConfigError(
            f"the top level must be a list of model entries, [{{...}}, ...], got {_describe(data)}",
            source=source,
            line=1,
        )
    entries = []
    for index, (obj, line, dupes) in enumerate(_elements(text)):
        entries.append(_entry_from_json(obj, index, line, source, notes))
        model_id = entries[-1].model_id
        notes += [
            f'{_where(source, (index,), model_id)}: "{key}" appears twice; the last value '
            "counts (as in go-livepeer)"
            for key in dupes
        ]
    return ModelsConfig.from_entries(entries, source=source, notes=notes)


def _elements(text: str) -> list[tuple[Any, int, list[str]]]:
    """The top-level list's items with the line each starts on and keys given twice.

    Only called on text that ``json.loads`` accepted as a list.
    """
    dupes: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out and key not in dupes:
                dupes.append(key)
            out[key] = value
        return out

    decoder = json.JSONDecoder(
        parse_float=_JsonDecimal, parse_constant=_reject_constant, object_pairs_hook=pairs
    )
    found: list[tuple[Any, int, list[str]]] = []
    at = _skip_space(text, _skip_space(text, 0) + 1)  # past "["
    while text[at] != "]":
        dupes.clear()
        value, end = decoder.raw_decode(text, at)
        found.append((value, text.count("\n", 0, at) + 1, list(dupes)))
        at = _skip_space(text, end)
        if text[at] == ",":
            at = _skip_space(text, at + 1)
    return found


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\n\r":
        at += 1
    return at


def _entry_from_json(obj: Any, index: int, line: int, source: str, notes: list[str]) -> ModelEntry:
    if not isinstance(obj, dict):
        raise ConfigError(
            'each entry must be an object such as {"pipeline": "text-to-image", '
            f'"model_id": "..."}}, got {_describe(obj)}',
            source=source,
            entry=index,
            line=line,
        )
    raw_id = obj.get("model_id")
    model_id = raw_id if isinstance(raw_id, str) and raw_id else None
    for key in obj:
        if key not in _KNOWN_KEYS and key.lower() in _KNOWN_KEYS:
            raise ConfigError(
                f"unknown key {_quote(key)}; keys are lower case: write {_quote(key.lower())}",
                source=source,
                entry=index,
                model_id=model_id,
                field=key,
                line=line,
            )
    for key in _NUMBER_KEYS:
        if key in obj and obj[key] is None:
            raise ConfigError(
                f'"{key}" must be a number, got null; leave the key out for the default',
                source=source,
                entry=index,
                model_id=model_id,
                field=key,
                line=line,
            )
    # JSON null is the same as an absent key to go-livepeer, so it is dropped here.
    given = {k: v for k, v in obj.items() if k in _KNOWN_KEYS and v is not None}
    origin = _Origin(
        keys=frozenset(obj),
        numbers={k: given[k] for k in _NUMBER_KEYS if k in given},
        line=line,
    )
    try:
        return ModelEntry(
            pipeline=given.pop("pipeline", None),
            model_id=given.pop("model_id", None),
            **given,
            extra={k: v for k, v in obj.items() if k not in _KNOWN_KEYS},
            _origin=origin,
        )
    except ConfigError as exc:
        raise exc.in_context(source=source, entry=index, model_id=model_id, line=line) from None


# --- writing ---------------------------------------------------------------------------


def _items(e: ModelEntry, index: int, source: str) -> list[tuple[str, Any]]:
    """The entry's keys and JSON values in writing order, absent defaults left out."""
    keys = e._origin.keys if e._origin else frozenset()
    items: list[tuple[str, Any]] = [("pipeline", e.pipeline), ("model_id", e.model_id)]
    if e.warm or "warm" in keys:
        items.append(("warm", e.warm))
    for key in ("url", "token", "capacity", "price_per_unit", "pixels_per_unit"):
        value = getattr(e, key)
        if value is None:
            continue
        if key in _NUMBER_KEYS:
            value = _spell(e, index, source, key, value)
        items.append((key, value))
    for key in ("currency", "gateway", "optimization_flags"):
        if getattr(e, key) is not None:
            items.append((key, getattr(e, key)))
    if e.gpus is not None:
        items.append(("gpus", list(e.gpus)))
    if e.backend is not None:
        items.append(("backend", e.backend.value))
    items += e.extra.items()
    return items


def _spell(e: ModelEntry, index: int, source: str, key: str, value: Fraction | int) -> Any:
    """A number as the file spelled it if unchanged, else its exact decimal form."""
    written = e._origin.numbers.get(key) if e._origin else None
    if written is not None and _to_fraction(written) == value:
        return written
    value = Fraction(value)
    if value.denominator == 1:
        return value.numerator
    den, twos, fives = value.denominator, 0, 0
    while den % 2 == 0:
        den, twos = den // 2, twos + 1
    while den % 5 == 0:
        den, fives = den // 5, fives + 1
    if den != 1:
        raise ConfigError(
            f'"{key}" is {value}, which has no exact decimal form; scale it with '
            '"pixels_per_unit" instead (for example 1 per 3 pixels)',
            source=source,
            entry=index,
            model_id=e.model_id,
            field=key,
        )
    digits = max(twos, fives)
    return Decimal(f"{value.numerator * 10**digits // value.denominator}E-{digits}")


def _emit(value: Any, level: int) -> str:
    """``value`` as JSON text, nested containers indented by two spaces a level."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else ("true" if value else "false")
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, _JsonDecimal):
        return value.text
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError(f"{value} is not a number JSON allows")
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{value} is not a number JSON allows")
        return repr(value)
    if isinstance(value, str):
        return _quote(value)
    inner, outer = "  " * (level + 1), "  " * level
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        if all(v is None or isinstance(v, bool | int | float | Decimal | str) for v in value):
            return "[" + ", ".join(_emit(v, level + 1) for v in value) + "]"
        return "[\n" + ",\n".join(inner + _emit(v, level + 1) for v in value) + f"\n{outer}]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        for k in value:
            if not isinstance(k, str):
                raise TypeError(f"object key {k!r} is not a string")
        body = ",\n".join(f"{inner}{_quote(k)}: {_emit(v, level + 1)}" for k, v in value.items())
        return "{\n" + body + f"\n{outer}}}"
    raise TypeError(f"a {type(value).__name__} is not a JSON value")


def dumps(cfg: ModelsConfig) -> str:
    """``cfg`` as aiModels.json text: 2-space indent, Livepeer's keys first, then Orchard's,
    then unknown keys; absent defaults stay absent; numbers exactly as read."""
    if not cfg.entries:
        return "[]\n"
    chunks = []
    for index, e in enumerate(cfg.entries):
        lines = []
        for key, value in _items(e, index, cfg.source):
            try:
                text = _emit(value, 2)
            except TypeError as exc:
                raise ConfigError(
                    f"{_quote(key)} cannot be written as JSON: {exc}",
                    source=cfg.source,
                    entry=index,
                    model_id=e.model_id,
                    field=key,
                ) from None
            lines.append(f"    {_quote(key)}: {text}")
        chunks.append("  {\n" + ",\n".join(lines) + "\n  }")
    return "[\n" + ",\n".join(chunks) + "\n]\n"


def save(cfg: ModelsConfig, path: str | os.PathLike[str]) -> None:
    """Write ``cfg`` to ``path`` atomically, keeping the previous file as ``<name>.bak``.

    The text is built first (a value JSON cannot hold fails before the disk is touched),
    written to a temporary file in the same directory and fsynced; the current file is
    copied to ``.bak`` (replacing an older backup) and only then replaced with
    ``os.replace``. At every moment ``path`` holds either the old or the new content. A
    symlink is followed, and an existing file's permissions are kept (a new file is
    readable by its owner only: it may hold runner tokens).
    """
    target = Path(os.path.realpath(path))
    data = dumps(cfg).encode("utf-8")
    try:
        tmp = write_temp(target, data)
        try:
            if target.exists():
                os.chmod(tmp, target.stat().st_mode & 0o7777)
                backup = target.with_name(target.name + ".bak")
                bak_tmp = write_temp(backup, target.read_bytes())
                try:
                    os.chmod(bak_tmp, target.stat().st_mode & 0o7777)
                    os.replace(bak_tmp, backup)
                except BaseException:
                    bak_tmp.unlink(missing_ok=True)
                    raise
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ConfigError(
            f"could not save the file: {exc.strerror or exc}; the previous file is unchanged",
            source=os.fspath(path),
        ) from exc
    fsync_dir(target.parent)
