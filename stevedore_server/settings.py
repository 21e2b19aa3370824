"""Server settings: one object, read from CLI flags or ``STEVEDORE_*`` environment variables.

Precedence: a CLI flag beats its environment variable, which beats the default.
``stevedore-server run`` hands the settings to its worker processes through the
same environment variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from .errors import StartupError
from .plugins import PluginSelection

ENV_PREFIX = "STEVEDORE_"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    log_level: str = "info"
    #: Any plugin or model failure stops the server (non-zero exit) instead of being reported.
    strict: bool = False
    #: Comma-separated entry-point or distribution names to load; unset loads all.
    plugins: tuple[str, ...] | None = None
    #: Comma-separated entry-point or distribution names never to load: the recovery when a plugin breaks.
    disable_plugins: tuple[str, ...] = ()
    #: Largest request body accepted, in bytes (413 beyond).
    max_body_size: int = 16 * 1024 * 1024
    #: Worker threads of each model: its requests beyond these wait, without holding other models' threads.
    model_threads: int = 4

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise StartupError(f"setting port: {self.port} is not a TCP port (0-65535)")
        if self.workers < 1:
            raise StartupError(f"setting workers: {self.workers} must be at least 1")
        if self.log_level not in LOG_LEVELS:
            raise StartupError(f"setting log_level: {self.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
        if self.model_threads < 1:
            raise StartupError(f"setting model_threads: {self.model_threads} must be at least 1")
        if self.max_body_size < 1:
            raise StartupError(f"setting max_body_size: {self.max_body_size} must be positive")

    @property
    def selection(self) -> PluginSelection:
        return PluginSelection.from_names(self.plugins, self.disable_plugins)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from ``STEVEDORE_*`` variables; ``overrides`` (CLI flags) take precedence."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for item in fields(cls):
            raw = environ.get(ENV_PREFIX + item.name.upper())
            if raw is not None:
                values[item.name] = _parse(item.name, str(item.type), raw)
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The ``STEVEDORE_*`` variables that reproduce these settings in another process."""
        env = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value is None:
                continue
            if isinstance(value, tuple):
                value = ",".join(value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            env[ENV_PREFIX + item.name.upper()] = str(value)
        return env


def _parse(name: str, annotation: str, raw: str) -> object:
    variable = ENV_PREFIX + name.upper()
    if annotation.startswith("bool"):
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off", ""}:
            return False
        raise StartupError(f"setting {name} ({variable}): {raw!r} is not a boolean")
    if annotation.startswith("int"):
        try:
            return int(raw)
        except ValueError:
            raise StartupError(f"setting {name} ({variable}): {raw!r} is not an integer") from None
    if annotation.startswith("tuple"):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw.strip()
