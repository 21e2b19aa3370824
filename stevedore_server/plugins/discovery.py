"""Finding predictors: the ``stevedore.predictors`` entry points and the registration hook, each predictor's
name and version checked, a name and version given twice a startup error."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pluggy
from packaging.utils import canonicalize_name

from stevedore_server.base.errors import StartupError
from stevedore_server.base.settings.pipelines import read_pipelines
from stevedore_server.base.sources import (
    PIPELINES_GROUP,
    PREDICTORS_GROUP,
    PluginFailure,
    PluginSelection,
    PluginSource,
    failure,
)
from stevedore_server.model_files import ModelFile
from stevedore_server.predictor import NAME_PATTERN, Predictor

from .hooks import Hooks
from .installed import iter_entry_points
from .manager import check_hooks, get_plugin_manager, hook_sources
from .model_files import candidates_of

logger = logging.getLogger("stevedore.discovery")


@dataclass(frozen=True)
class Candidate:
    """A constructed predictor, not yet loaded or tested, with where it came from."""

    predictor: Predictor
    source: PluginSource


def predictors_from(target: Any, call: bool = True) -> list[Predictor]:
    """The predictors an entry point names.

    A Predictor subclass (instantiated with no arguments), an instance, an
    iterable of either, or a callable returning any of these.
    """
    if isinstance(target, Predictor):
        return [target]
    if inspect.isclass(target):
        if issubclass(target, Predictor):
            return [target()]
        raise TypeError(f"{target.__qualname__} is not a stevedore_server.Predictor subclass")
    if callable(target) and call:
        return predictors_from(target(), call=False)
    if isinstance(target, Iterable) and not isinstance(target, (str, bytes, dict)):
        return [predictor for item in target for predictor in predictors_from(item, call=False)]
    raise TypeError(
        f"expected a Predictor, a Predictor subclass, an iterable or a callable, got {type(target).__name__}"
    )


def discover(
    hooks: Hooks, selection: PluginSelection, entry_points: bool = True, files: Sequence[ModelFile] = ()
) -> tuple[list[Candidate], list[PluginFailure]]:
    """Every selected predictor, in a deterministic order, and the plugins that failed to give theirs; then a
    predictor for each model file of ``files``, made by its runtime.

    ``entry_points=False`` takes the predictors of the hooks only.
    """
    candidates: list[Candidate] = []
    failures: list[PluginFailure] = []
    for entry_point in iter_entry_points(PREDICTORS_GROUP) if entry_points else ():
        source = PluginSource.of(entry_point)
        if not selection.allows(source):
            logger.info("predictor plugin not selected: %s", source.describe())
            continue
        try:
            candidates += [Candidate(p, source) for p in predictors_from(entry_point.load())]
        except Exception as error:  # one broken plugin must not hide the others
            failures.append(failure(source, error))
    registered, hook_failures = hooks.register_predictors()
    candidates += [Candidate(predictor, source) for predictor, source in registered]
    candidates += [Candidate(predictor, source) for predictor, source in candidates_of(files, selection)]
    return candidates, failures + hook_failures


def find_installed(
    selection: PluginSelection, manager: pluggy.PluginManager | None = None, files: Sequence[ModelFile] = ()
) -> tuple[list[Candidate], list[PluginFailure], Hooks]:
    """The predictors of the selected plugins installed here (or of ``manager``'s plugins, which then replace
    the entry points) and of the model files ``files``, not loaded, with the plugins that failed and the hooks."""
    failures: list[PluginFailure] = []
    from_entry_points = manager is None
    if manager is None:
        manager, failures = get_plugin_manager(selection)
    check_hooks(manager)  # a given manager may have had plugins registered since it was made
    hooks = Hooks(manager, hook_sources() if from_entry_points else {})
    candidates, discovery_failures = discover(hooks, selection, entry_points=from_entry_points, files=files)
    return candidates, failures + discovery_failures, hooks


#: Pipelines by name, as plain tables, with the plugin that shipped each.
PluginPipelines = dict[str, tuple[dict[str, Any], PluginSource]]


def plugin_pipelines(selection: PluginSelection) -> tuple[PluginPipelines, list[PluginFailure]]:
    """The pipelines the selected plugins ship (``stevedore.pipelines`` entry points), checked for their shape:
    a plugin whose tables are wrong is a failed plugin; a name two plugins ship, the first one's (logged)."""
    found: PluginPipelines = {}
    failures: list[PluginFailure] = []
    for entry_point in iter_entry_points(PIPELINES_GROUP):
        source = PluginSource.of(entry_point)
        if not selection.allows(source):
            continue
        try:
            target = entry_point.load()
            tables = read_pipelines(source.describe(), target() if callable(target) else target)
        except Exception as error:  # one broken plugin must not hide the others
            failures.append(failure(source, error))
            continue
        for name, table in tables.items():
            if name in found:
                logger.warning("pipeline %s shipped twice: %s's kept, not %s's", name, found[name][1].describe(),
                               source.describe())  # fmt: skip
                continue
            found[name] = (table, source)
    return found, failures


def accepted(candidates: Iterable[Candidate], failures: list[PluginFailure]) -> list[Candidate]:
    """The candidates of a valid name and version (the others added to ``failures``); a name and version given
    twice is a ``StartupError`` naming both sources."""
    chosen: dict[tuple[str, str], Candidate] = {}
    for candidate in candidates:
        problem = identity_problem(candidate.predictor)
        if problem:
            failures.append(PluginFailure(candidate.source, problem))
            logger.error("plugin failed: %s: %s", candidate.source.describe(), problem)
            continue
        key = (candidate.predictor.name, candidate.predictor.version)
        if key in chosen:
            raise StartupError(
                f"model {key[0]!r} version {key[1]!r} is provided twice: "
                f"by {chosen[key].source.describe()} and by {candidate.source.describe()}"
            )
        chosen[key] = candidate
    return list(chosen.values())


def identity_problem(predictor: Predictor) -> str | None:
    for attribute in ("name", "version"):
        value = getattr(predictor, attribute)
        if not isinstance(value, str) or not NAME_PATTERN.match(value):
            return (
                f"{type(predictor).__qualname__}.{attribute} = {value!r}: "
                "must be a non-empty string of letters, digits, '.', '_' or '-'"
            )
    return None


def failed_plugins_of(name: str | None, failures: Iterable[PluginFailure]) -> list[str]:
    """Each plugin of ``failures`` whose ``stevedore.predictors`` entry point bears the model's name ``name``
    (as a plugin made by ``new-plugin`` does; None: every one), as "plugin stevedore-x (entry point x =
    x.predictor:X) failed to import: ModuleNotFoundError: ...": the plugins that would have provided it."""
    values = {(ep.name, ep.dist.name if ep.dist else None): ep.value for ep in iter_entry_points(PREDICTORS_GROUP)}
    described = []
    for failed in failures:
        source = failed.source
        if source.group != PREDICTORS_GROUP:
            continue
        if name is not None and canonicalize_name(source.entry_point) != canonicalize_name(name):
            continue
        value = values.get((source.entry_point, source.distribution))
        entry_point = f"{source.entry_point} = {value}" if value else source.entry_point
        how = "import" if failed.error.startswith(("ModuleNotFoundError:", "ImportError:", "SyntaxError:")) else "load"
        plugin = f"plugin {source.distribution}" if source.distribution else "plugin"
        described.append(f"{plugin} (entry point {entry_point}) failed to {how}: {failed.error}")
    return described
