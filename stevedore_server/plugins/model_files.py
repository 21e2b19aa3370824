"""Model files as candidates: the settings' declared files (``[models.NAME] uri``, ``--model``, an MLServer
folder) as ``ModelFile`` specs, each made a predictor by its runtime (a ``stevedore.runtimes`` entry point).

The server makes the specs once (``model_files``: runtimes guessed, paths and trust settled) and hands them to
its worker processes, which make their own predictors from them (``candidates_of``). A runtime that is not
installed, not selected or fails to make a predictor gives a model that fails to load with that reason: it is
listed, the others serve.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from importlib.metadata import EntryPoint
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import orjson
import platformdirs

from stevedore_server.base.errors import PluginError
from stevedore_server.base.settings import ModelSettings, Settings
from stevedore_server.base.sources import PluginSelection, PluginSource
from stevedore_server.model_files import RUNTIMES_GROUP, Derived, FilePredictor, ModelFile
from stevedore_server.predictor import Predictor

from .installed import iter_entry_points

logger = logging.getLogger("stevedore.model_files")

#: Under the state directory: downloaded model files.
CACHE = "model-cache"


def model_files(settings: Settings) -> list[ModelFile]:
    """Every model file the settings declare, its runtime guessed where not given ("" where none claims it)."""
    cache_dir = state_dir(settings) / CACHE
    runtimes = installed_runtimes(settings.selection)
    return [
        spec_of(name, own, cache_dir, settings.allow_pickle, runtimes)
        for name, own in settings.models.items()
        if own.is_file
    ]


def state_dir(settings: Settings) -> Path:
    if settings.state_dir is not None:
        return Path(settings.state_dir)
    return Path(platformdirs.user_data_dir("stevedore-server"))


def spec_of(
    name: str, own: ModelSettings, cache_dir: Path, allow_pickle: bool, runtimes: dict[str, EntryPoint]
) -> ModelFile:
    uri = own.uri or ""
    return ModelFile(
        name=name,
        version=own.version or "1",
        runtime=own.runtime or guess_runtime(uri, runtimes),
        uri=uri,
        cache_dir=cache_dir,
        sha256=own.sha256.lower() if own.sha256 is not None else None,
        trusted=bool(own.trust) or allow_pickle,
        output=own.output,
        content_type=own.content_type,
        predict_schema=Path(own.predict_schema) if own.predict_schema else None,
        predict_fixture=Path(own.predict_fixture) if own.predict_fixture else None,
        options=dict(own.options or {}),
    )


def installed_runtimes(selection: PluginSelection) -> dict[str, EntryPoint]:
    """The selected runtimes, by name (the first of a name, in the entry points' order)."""
    found: dict[str, EntryPoint] = {}
    for entry_point in iter_entry_points(RUNTIMES_GROUP):
        if selection.allows(PluginSource.of(entry_point)):
            found.setdefault(entry_point.name, entry_point)
    return found


def guess_runtime(uri: str, runtimes: dict[str, EntryPoint]) -> str:
    """The one runtime that claims ``uri`` (a local file or folder, else a remote URI's last segment); ""
    where none or several do (the model then fails, saying to name one)."""
    path = local_path(uri)
    claiming = []
    for name, entry_point in runtimes.items():
        try:
            claims = getattr(entry_point.load(), "claims", None)
            if claims is not None and claims(path):
                claiming.append(name)
        except Exception as error:  # a broken runtime claims nothing; it fails the models that name it
            logger.warning("runtime %s cannot tell whether it reads %s: %s", name, uri, error)
    return claiming[0] if len(claiming) == 1 else ""


def local_path(uri: str) -> Path:
    """The local path of ``uri``, or a remote URI's path (which does not exist here: judged by its name)."""
    parts = urlsplit(uri)
    if parts.scheme in ("", "file"):
        return Path(parts.path if parts.scheme else uri)
    return Path(PurePosixPath(parts.path).name or parts.netloc)


def candidates_of(specs: Iterable[ModelFile], selection: PluginSelection) -> list[tuple[Predictor, PluginSource]]:
    """A predictor for each spec, made by its runtime; where none can be made, one that fails with why."""
    runtimes = installed_runtimes(selection)
    return [predictor_of(spec, runtimes) for spec in specs]


def predictor_of(spec: ModelFile, runtimes: dict[str, EntryPoint]) -> tuple[Predictor, PluginSource]:
    declared = PluginSource(entry_point=f"[models.{spec.name}] uri = {spec.shown}", group=RUNTIMES_GROUP)
    if not spec.runtime:
        return Unreadable(spec, no_runtime_reason(spec, runtimes)), declared
    entry_point = runtimes.get(spec.runtime)
    if entry_point is None:
        return Unreadable(spec, missing_runtime_reason(spec, runtimes)), declared
    source = PluginSource.of(entry_point)
    try:
        predictor = entry_point.load()(spec)
    except Exception as error:  # one broken runtime must not hide the other models
        logger.error("runtime %s failed to make model %s: %s", spec.runtime, spec.name, error, exc_info=error)
        return Unreadable(spec, f"runtime {spec.runtime!r}: {type(error).__name__}: {error}"), source
    if not isinstance(predictor, Predictor):
        reason = f"runtime {spec.runtime!r} gave a {type(predictor).__name__}, not a Predictor"
        return Unreadable(spec, reason), source
    return predictor, source


def no_runtime_reason(spec: ModelFile, runtimes: dict[str, Any]) -> str:
    installed = ", ".join(sorted(runtimes)) or "none"
    return (
        f"no runtime claims {spec.shown} (installed runtimes: {installed}): name one with "
        f"`runtime = ...` in [models.{spec.name}] or --model {spec.name}=RUNTIME:URI"
    )


def missing_runtime_reason(spec: ModelFile, runtimes: dict[str, Any]) -> str:
    installed = ", ".join(sorted(runtimes)) or "none"
    return (
        f"runtime {spec.runtime!r} is not installed or not selected (installed runtimes: {installed}): "
        f"pip install stevedore-runtime-{spec.runtime}"
    )


class Unreadable(FilePredictor):
    """A model file no runtime can make a predictor of: it fails to load, with why."""

    def __init__(self, spec: ModelFile, reason: str) -> None:
        super().__init__(spec)
        self.reason = reason

    def opened(self) -> Derived:
        raise PluginError(self.reason)


def read_here() -> None:
    """``plugins.probe``'s child: read the spec on stdin, make the predictor, read its file and predict on the
    fixture (a crash or a hang here fails the model, not the server)."""
    spec = ModelFile.of_json(orjson.loads(sys.stdin.buffer.read()))
    predictor, _source = predictor_of(spec, installed_runtimes(PluginSelection()))
    predictor.load()
    predictor.predict(predictor.resolved_fixture("predict"))


if __name__ == "__main__":
    read_here()
