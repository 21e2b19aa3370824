"""MLServer's ``ModelSettings`` of a model, and its implementation imported as MLServer imports it."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlserver import MLModel
from mlserver.settings import ModelSettings

from stevedore_server.base.errors import PluginError

MODEL_SETTINGS = "model-settings.json"


def settings_document(options: Mapping[str, Any], path: Path) -> tuple[dict[str, Any], Path]:
    """The model-settings JSON and its folder: from ``options`` (an MLServer folder, the variables), else the
    ``model-settings.json`` of the folder ``path`` (``--model NAME=mlserver:DIR``)."""
    document = options.get("model_settings")
    if isinstance(document, dict):
        return copy.deepcopy(document), Path(str(options.get("folder") or path))
    file = path / MODEL_SETTINGS
    try:
        found = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise PluginError(f"the mlserver runtime reads {file}, which it cannot: {error}") from None
    if not isinstance(found, dict):
        raise PluginError(f"{file} must hold a JSON object")
    return found, path


def model_settings(document: dict[str, Any], folder: Path, name: str, uri: str) -> ModelSettings:
    """MLServer's settings of the model: the file's, its name ours, its URI the local artifact (fetched)."""
    values = dict(document, name=name)
    parameters = dict(values.get("parameters") or {})
    parameters["uri"] = uri
    values["parameters"] = parameters
    # MLServer's own reading of the file sets ``_source``: its folder is where the implementation is imported from.
    values["_source"] = str(folder / MODEL_SETTINGS)
    try:
        return ModelSettings.model_validate(values)
    except ValueError as error:  # pydantic's ValidationError
        raise PluginError(f"MLServer refuses the model's settings: {error}") from None


def implementation_of(settings: ModelSettings) -> type[MLModel]:
    """The ``MLModel`` subclass the settings name, imported with the model's folder on ``sys.path``."""
    try:
        implementation = settings.implementation
    except Exception as error:  # an import runs the user's module: anything may fail
        raise PluginError(
            f"cannot import {settings.implementation_!r} (from {Path(str(settings._source)).parent}): "
            f"{type(error).__name__}: {error}"
        ) from error
    if not (isinstance(implementation, type) and issubclass(implementation, MLModel)):
        raise PluginError(f"{settings.implementation_!r} is not an mlserver.MLModel subclass")
    return implementation
