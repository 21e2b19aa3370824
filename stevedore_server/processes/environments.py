"""The settings file's ``[models.NAME]`` tables of the models other environments provide, written for the
``stevedore-server environment-settings`` command."""

from __future__ import annotations

from pathlib import Path

import orjson

from stevedore_server.base.errors import StartupError
from stevedore_server.base.settings import ModelSettings, Settings

from .isolation import describe_environment
from .spawn import interpreter


def environment_settings(environments: list[Path], settings: Settings) -> str:
    """``[models.NAME]`` tables (TOML) running every model of each virtual environment in ``environments``
    there: the settings file of an image with plugins in environments of their own."""
    tables = []
    for environment in environments:
        python = interpreter(ModelSettings(python=str(environment)))
        candidates, failures, _ = describe_environment(python, None, settings)
        if failures:
            raise StartupError(f"{environment}: " + "; ".join(f"{f.source.describe()}: {f.error}" for f in failures))
        for name in sorted({candidate.predictor.name for candidate in candidates}):
            tables.append(f"[models.{toml_key(name)}]\npython = {orjson.dumps(str(environment)).decode()}\n")
    return "\n".join(tables)


def toml_key(name: str) -> str:
    """A model name as a TOML key: bare where it can be (letters, digits, ``-``, ``_``), else quoted."""
    return name if all(c.isalnum() or c in "-_" for c in name) else orjson.dumps(name).decode()
