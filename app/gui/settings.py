"""What the app remembers between runs (QSettings): window, page, GPU choices, reserves,
the configuration file, the node's address."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings


class AppSettings:
    """Typed access to QSettings. ``path`` (an INI file) keeps tests away from the user's."""

    def __init__(self, path: Path | None = None) -> None:
        if path is None:
            self.q = QSettings("Orchard", "Orchard")
        else:
            self.q = QSettings(str(path), QSettings.Format.IniFormat)

    def _json(self, key: str, default: Any) -> Any:
        raw = self.q.value(key)
        if raw is None:
            return default
        try:
            return json.loads(str(raw))
        except ValueError:
            return default

    # ----------------------------------------------------------------- window
    @property
    def geometry(self) -> QByteArray | None:
        value = self.q.value("window/geometry")
        return value if isinstance(value, QByteArray) else None

    @geometry.setter
    def geometry(self, value: QByteArray) -> None:
        self.q.setValue("window/geometry", value)

    @property
    def page(self) -> int:
        try:
            return int(self.q.value("window/page", 0))  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return 0

    @page.setter
    def page(self, value: int) -> None:
        self.q.setValue("window/page", int(value))

    @property
    def keep_in_tray(self) -> bool | None:
        """The answer to "keep the node running in the tray?" when remembered."""
        value = self._json("window/keep_in_tray", None)
        return value if isinstance(value, bool) else None

    @keep_in_tray.setter
    def keep_in_tray(self, value: bool | None) -> None:
        self.q.setValue("window/keep_in_tray", json.dumps(value))

    # ----------------------------------------------------------------- devices
    @property
    def use_gpus(self) -> set[int] | None:
        """GPUs chosen for the node; None until the operator has chosen (all of them)."""
        value = self._json("gpus/use", None)
        return None if not isinstance(value, list) else {int(i) for i in value}

    @use_gpus.setter
    def use_gpus(self, value: set[int]) -> None:
        self.q.setValue("gpus/use", json.dumps(sorted(value)))

    @property
    def reserve(self) -> dict[int, int]:
        value = self._json("gpus/reserve", {})
        return {int(k): int(v) for k, v in value.items()} if isinstance(value, dict) else {}

    @reserve.setter
    def reserve(self, value: dict[int, int]) -> None:
        self.q.setValue("gpus/reserve", json.dumps({str(k): v for k, v in value.items()}))

    # ----------------------------------------------------------------- node
    @property
    def config_path(self) -> Path | None:
        value = self.q.value("config/path")
        return Path(str(value)) if value else None

    @config_path.setter
    def config_path(self, value: Path) -> None:
        self.q.setValue("config/path", str(value))

    @property
    def host(self) -> str:
        return str(self.q.value("node/host", "127.0.0.1"))

    @host.setter
    def host(self, value: str) -> None:
        self.q.setValue("node/host", value)

    @property
    def port(self) -> int:
        try:
            return int(self.q.value("node/port", 8935))  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return 8935

    @port.setter
    def port(self, value: int) -> None:
        self.q.setValue("node/port", int(value))

    @property
    def free_mode(self) -> bool | None:
        """Free mode (no payment asked) as the operator last chose it; None: never chosen."""
        value = self._json("node/free", None)
        return value if isinstance(value, bool) else None

    @free_mode.setter
    def free_mode(self, value: bool) -> None:
        self.q.setValue("node/free", json.dumps(bool(value)))

    def sync(self) -> None:
        self.q.sync()
