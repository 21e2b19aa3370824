"""Finding predictors: the ``stevedore.predictors`` entry points and the registration hook."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from stevedore_server.base.sources import PREDICTORS_GROUP, PluginFailure, PluginSelection, PluginSource, failure
from stevedore_server.predictor import Predictor

from .hooks import Hooks
from .manager import iter_entry_points

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
    hooks: Hooks, selection: PluginSelection, entry_points: bool = True
) -> tuple[list[Candidate], list[PluginFailure]]:
    """Every selected predictor, in a deterministic order, and the plugins that failed to give theirs.

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
    return candidates, failures + hook_failures
