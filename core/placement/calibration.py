"""Measured footprints from ``orchard bench``, kept for the planner in ``calibration.json``.

``orchard bench`` measures what a model really takes on a device: the bytes NVML shows its
process took (``nvml_delta``), the weights and torch's peaks. :func:`measurements_from_report`
turns a bench report into :class:`Measurement` values, :class:`CalibrationStore` keeps them in
``<data_dir>/calibration.json`` (the newest per model, device, size and flags), and the node
looks one up before anything loads, so that the measurement replaces the family estimate.
:func:`footprint_bytes` carries a measurement to another size. See ``docs/placement.md``.

Pure Python: no torch, no Qt. Only :class:`CalibrationStore` touches the disk.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.atomicfile import fsync_dir, write_temp

log = logging.getLogger(__name__)

#: The file's name in the data directory; ``orchard bench`` and ``orchard node`` meet there.
CALIBRATION_FILENAME = "calibration.json"
#: Format version written to the file.
FILE_VERSION = 1

_VIDEO_PIPELINES = frozenset({"image-to-video"})
_OFF = frozenset({"", "0", "false", "off", "no"})
_ON = frozenset({"1", "true", "on", "yes"})
_NEVER = datetime.min.replace(tzinfo=UTC)


def calibration_path(data_dir: Path) -> Path:
    """``<data_dir>/calibration.json``."""
    return Path(data_dir) / CALIBRATION_FILENAME


def normal_flags(flags: Mapping[str, Any] | None) -> dict[str, Any]:
    """The flags that are on, as the runner reads them: names in upper case, ``"true"``,
    ``"1"``, ``"yes"`` and ``"on"`` as True, other text stripped and in lower case. Off means
    False, None, 0, ``""``, ``"0"``, ``"false"``, ``"off"`` or ``"no"``: so
    ``{"channels_last": "true", "COMPILE": False}`` and ``{"CHANNELS_LAST": True}`` are one
    setup, and ``{}`` is the plain one."""
    out: dict[str, Any] = {}
    for name, value in (flags or {}).items():
        if value is None or value is False or (type(value) is int and value == 0):
            continue
        if isinstance(value, str):
            value = value.strip().lower()
            if value in _OFF:
                continue
            if value in _ON:
                value = True
        out[str(name).strip().upper()] = value
    return dict(sorted(out.items()))


def _flags_key(flags: Mapping[str, Any] | None) -> tuple[tuple[str, str], ...]:
    return tuple((k, json.dumps(v, sort_keys=True)) for k, v in normal_flags(flags).items())


def _parse_date(text: str) -> datetime:
    """An ISO date as an aware datetime (naive ones are taken as UTC); unreadable: the past."""
    try:
        when = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return _NEVER
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _int_or_none(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number of bytes or null (got {value!r})")
    if value < 0:
        raise ValueError(f"{name} must not be negative (got {value})")
    return value


@dataclass(frozen=True)
class Measurement:
    """One model measured by ``orchard bench`` on one device, on its direct path.

    Bytes are as the bench saw them: ``nvml_delta`` is what NVML shows the benchmark's process
    took (used at the end minus used before loading, CUDA only), ``weights`` the loaded
    weights, ``peak_allocated`` and ``peak_reserved`` torch's peaks during the runs. On a CPU
    every memory figure but ``weights`` is None. ``frames`` is 1 for images; None for a video
    means the model's default frame count. ``flags`` are the engine's optimisation flags (an
    empty dict for the plain variant); flags that are off count as absent.
    """

    pipeline: str
    model_id: str
    device_name: str
    width: int
    height: int
    frames: int | None = 1
    batch: int = 1
    flags: Mapping[str, Any] = field(default_factory=dict, hash=False)
    weights: int | None = None
    peak_allocated: int | None = None
    peak_reserved: int | None = None
    nvml_delta: int | None = None
    median_s: float | None = None
    date: str = ""
    variant: str = "plain"
    source: str | None = None

    def __post_init__(self) -> None:
        for name in ("pipeline", "model_id", "device_name", "date", "variant"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be text (got {getattr(self, name)!r})")
        if not self.pipeline or not self.model_id:
            raise ValueError("a measurement needs a pipeline and a model_id")
        for name in ("width", "height", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number, at least 1 (got {value!r})")
        frames = self.frames
        if frames is not None and (isinstance(frames, bool) or not isinstance(frames, int)):
            raise ValueError(f"frames must be a whole number or null (got {frames!r})")
        if frames is not None and frames < 1:
            raise ValueError(f"frames must be at least 1 (got {frames})")
        for name in ("weights", "peak_allocated", "peak_reserved", "nvml_delta"):
            _int_or_none(name, getattr(self, name))
        if self.median_s is not None and (
            isinstance(self.median_s, bool) or not isinstance(self.median_s, int | float)
        ):
            raise ValueError(f"median_s must be a number or null (got {self.median_s!r})")
        if not isinstance(self.flags, Mapping):
            raise ValueError(f"flags must be an object (got {self.flags!r})")
        if self.source is not None and not isinstance(self.source, str):
            raise ValueError(f"source must be text or null (got {self.source!r})")
        object.__setattr__(self, "flags", dict(self.flags))

    @property
    def key(self) -> tuple[Any, ...]:
        """What one stored measurement stands for; a newer one with the same key replaces it."""
        return (
            self.pipeline,
            self.model_id,
            self.device_name,
            self.width,
            self.height,
            self.frames,
            self.batch,
            _flags_key(self.flags),
        )

    @property
    def when(self) -> datetime:
        """``date`` as an aware datetime; the distant past when it cannot be read."""
        return _parse_date(self.date)

    @property
    def usable(self) -> bool:
        """Has a memory figure the planner can use: an NVML delta that holds the weights."""
        return (
            self.nvml_delta is not None
            and self.nvml_delta > 0
            and (self.weights is None or self.nvml_delta >= self.weights)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "model_id": self.model_id,
            "device_name": self.device_name,
            "width": self.width,
            "height": self.height,
            "frames": self.frames,
            "batch": self.batch,
            "flags": dict(self.flags),
            "weights": self.weights,
            "peak_allocated": self.peak_allocated,
            "peak_reserved": self.peak_reserved,
            "nvml_delta": self.nvml_delta,
            "median_s": self.median_s,
            "date": self.date,
            "variant": self.variant,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: Any) -> Measurement:
        """The inverse of :meth:`to_json`; unknown fields are ignored, bad ones raise ValueError."""
        if not isinstance(data, dict):
            raise ValueError(f"a measurement must be an object (got {type(data).__name__})")
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:  # a required field is missing
            raise ValueError(str(exc)) from None


def measurements_from_report(
    report: Mapping[str, Any], *, source: str | None = None
) -> list[Measurement]:
    """One :class:`Measurement` per ``direct`` result of an ``orchard bench`` report.

    Only the direct path measures torch's memory, so the ``runner`` and ``node`` results are
    left out. CPU results are kept (their memory figures are None; :attr:`Measurement.usable`
    is False). Older reports without ``variant``, ``flags``, ``frames`` or ``nvml_delta`` read
    as plain, no flags, the default frame count and no NVML delta. ``source`` is recorded as
    given (e.g. the report's path). Raises ValueError when ``report`` is not a bench report.
    """
    if not isinstance(report, Mapping):
        raise ValueError("an orchard bench report is a JSON object")
    config = report.get("config")
    results = report.get("results")
    if not isinstance(config, Mapping) or not isinstance(results, list):
        raise ValueError("not an orchard bench report: it needs 'config' and 'results'")
    pipeline = config.get("pipeline")
    model_id = config.get("model")
    if not isinstance(pipeline, str) or not isinstance(model_id, str):
        raise ValueError("not an orchard bench report: config lacks 'pipeline' or 'model'")
    width, height = config.get("width"), config.get("height")
    if not isinstance(width, int) or not isinstance(height, int):
        raise ValueError("not an orchard bench report: config lacks 'width' or 'height'")
    frames = config.get("frames")
    if frames is None and pipeline not in _VIDEO_PIPELINES:
        frames = 1
    device_name = report.get("device_name") or report.get("device") or ""
    out = []
    for result in results:
        if not isinstance(result, Mapping) or result.get("path") != "direct":
            continue
        memory = result.get("memory") or {}
        if not isinstance(memory, Mapping):
            raise ValueError(f"the direct result's memory is not an object: {memory!r}")
        out.append(
            Measurement(
                pipeline=pipeline,
                model_id=model_id,
                device_name=str(device_name),
                width=width,
                height=height,
                frames=frames,
                batch=config.get("batch") or 1,
                flags=result.get("flags") or {},
                weights=memory.get("weights"),
                peak_allocated=memory.get("torch_peak_allocated"),
                peak_reserved=memory.get("torch_peak_reserved"),
                nvml_delta=memory.get("nvml_delta"),
                median_s=result.get("median_s"),
                date=str(report.get("date") or ""),
                variant=str(result.get("variant") or "plain"),
                source=source,
            )
        )
    return out


def footprint_bytes(
    m: Measurement,
    width: int,
    height: int,
    frames: int = 1,
    batch: int = 1,
    *,
    default_frames: int | None = None,
) -> int:
    """The NVML-used bytes ``m``'s model would take at ``width x height x frames``, ``batch``.

    The weights do not change with size. Of the rest, the part torch reserved beyond the
    weights (``peak_reserved - weights``: activations and the allocator's slack) grows linearly
    with pixels, as in the family calibration of :mod:`core.placement.estimate`; the part NVML
    shows beyond torch (CUDA context, cuBLAS/cuDNN workspaces) stays. Without
    ``peak_reserved`` all of ``nvml_delta - weights`` grows, which overestimates.

    A smaller size is never scaled down: the measured figure is returned as it is. Activations
    shrink less than linearly at small sizes (fixed workspaces, the VAE's tiles), so scaling
    down would promise memory the model may still need; a planner that overestimates refuses
    a model, one that underestimates runs out of memory mid-job.

    ``m.frames`` None (the model's default frame count) reads as ``default_frames``, or as
    ``frames`` when that is None too. Raises ValueError when ``m`` has no usable figure.
    """
    if not m.usable:
        raise ValueError(f"{m.model_id} ({m.pipeline}) on {m.device_name} has no NVML figure")
    for name, value in (("width", width), ("height", height), ("frames", frames), ("batch", batch)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1 (got {value})")
    assert m.nvml_delta is not None
    delta = m.nvml_delta
    weights = min(m.weights or 0, delta)
    measured_frames = m.frames or default_frames or frames
    measured = m.width * m.height * measured_frames * m.batch
    target = width * height * frames * batch
    if target <= measured:
        return delta
    if m.peak_reserved is not None and m.peak_reserved >= weights:
        growing = min(m.peak_reserved, delta) - weights
    else:
        growing = delta - weights
    return delta + math.ceil(growing * (target - measured) / measured)


class CalibrationStore:
    """Measurements kept as JSON in ``path`` (``<data_dir>/calibration.json``).

    Reading never fails: a missing file is empty, and an unreadable or corrupt one is logged
    as a warning naming the file and treated as empty (entries that cannot be read are
    skipped). :meth:`add` first moves such a file aside to ``calibration.json.corrupt``, then
    writes the new content atomically (temporary file, fsync, ``os.replace``).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._measurements: list[Measurement] | None = None

    @classmethod
    def in_dir(cls, data_dir: Path) -> CalibrationStore:
        return cls(calibration_path(data_dir))

    @property
    def corrupt_path(self) -> Path:
        return self.path.with_name(self.path.name + ".corrupt")

    def load(self) -> list[Measurement]:
        """Read the file again; the measurements it holds."""
        self._measurements, _ = self._read()
        return list(self._measurements)

    def measurements(self) -> list[Measurement]:
        """The measurements held (the file is read on first use)."""
        if self._measurements is None:
            return self.load()
        return list(self._measurements)

    def add(self, measurements: Iterable[Measurement]) -> None:
        """Merge ``measurements`` into the file: per key the newest stays (on a tie, the one
        added now). Re-reads the file first, so measurements written since :meth:`load` stay."""
        held, damaged = self._read()
        by_key = {m.key: m for m in held}
        for m in measurements:
            old = by_key.get(m.key)
            if old is None or m.when >= old.when:
                by_key[m.key] = m
        kept = sorted(by_key.values(), key=lambda m: (m.pipeline, m.model_id, str(m.key), m.date))
        text = json.dumps(
            {"version": FILE_VERSION, "measurements": [m.to_json() for m in kept]}, indent=2
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = write_temp(self.path, (text + "\n").encode("utf-8"))
        try:
            if damaged and self.path.exists():
                os.replace(self.path, self.corrupt_path)
                log.warning("moved the unreadable %s aside to %s", self.path, self.corrupt_path)
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self.path.parent)
        self._measurements = kept

    def lookup(
        self,
        pipeline: str,
        model_id: str,
        *,
        device_name: str | None = None,
        flags: Mapping[str, Any] | None = None,
    ) -> Measurement | None:
        """The best usable measurement of ``(pipeline, model_id)``, or None.

        Usable means it has an NVML delta (a CUDA run). Preferred, in order: one taken on a
        device named ``device_name`` (when given), one with the same ``flags`` (when given;
        flags that are off count as absent), the newest, and on a tie the larger figure.
        """
        want_device = device_name.strip().lower() if device_name else None
        want_flags = _flags_key(flags) if flags is not None else None

        def rank(m: Measurement) -> tuple[bool, bool, datetime, int]:
            return (
                want_device is not None and m.device_name.strip().lower() == want_device,
                want_flags is not None and _flags_key(m.flags) == want_flags,
                m.when,
                m.nvml_delta or 0,
            )

        found = [
            m
            for m in self.measurements()
            if m.pipeline == pipeline and m.model_id == model_id and m.usable
        ]
        return max(found, key=rank) if found else None

    def _read(self) -> tuple[list[Measurement], bool]:
        """The measurements in the file, and whether anything in it could not be read."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return [], False
        except OSError as exc:
            log.warning("cannot read the calibration file %s (%s); ignoring it", self.path, exc)
            return [], True
        try:
            data = json.loads(raw.decode("utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("measurements"), list):
                raise ValueError("expected an object with a list of measurements")
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError included
            log.warning("the calibration file %s is corrupt (%s); ignoring it", self.path, exc)
            return [], True
        out, bad = [], 0
        for entry in data["measurements"]:
            try:
                out.append(Measurement.from_json(entry))
            except ValueError as exc:
                bad += 1
                log.debug("skipping a measurement in %s: %s", self.path, exc)
        if bad:
            log.warning(
                "the calibration file %s has %d measurement(s) that cannot be read; skipping them",
                self.path,
                bad,
            )
        return out, bad > 0
