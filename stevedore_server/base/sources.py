"""Where a predictor or hook implementation came from, which plugins are selected, and how a plugin failed."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint

from packaging.utils import canonicalize_name

logger = logging.getLogger("stevedore.plugins")

PREDICTORS_GROUP = "stevedore.predictors"
HOOKS_GROUP = "stevedore.hooks"
#: Pipelines shipped by plugins: each entry point a mapping ``{name: table}`` (or a callable returning one) of
#: the settings file's ``[pipelines.NAME]`` shape.
PIPELINES_GROUP = "stevedore.pipelines"


@dataclass(frozen=True)
class PluginSource:
    """Where a predictor or hook implementation came from."""

    entry_point: str
    distribution: str | None = None
    distribution_version: str | None = None
    group: str = PREDICTORS_GROUP

    @classmethod
    def of(cls, entry_point: EntryPoint) -> PluginSource:
        dist = entry_point.dist
        return cls(
            entry_point=entry_point.name,
            distribution=dist.name if dist else None,
            distribution_version=dist.version if dist else None,
            group=entry_point.group,
        )

    def describe(self) -> str:
        where = f"{self.distribution} {self.distribution_version}" if self.distribution else "no distribution"
        return f"entry point {self.entry_point!r} ({self.group}) of {where}"


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that failed to import, construct, register or answer a hook; reported, never silently dropped."""

    source: PluginSource
    error: str
    traceback: str = ""
    #: Found by a repository load while serving, not at startup: reported, but what is served is as it was, so
    #: the server stays ready.
    found_by_load: bool = False

    def as_dict(self) -> dict[str, str | None]:
        return {
            "entry_point": self.source.entry_point,
            "group": self.source.group,
            "distribution": self.source.distribution,
            "distribution_version": self.source.distribution_version,
            "error": self.error,
        }


def failure(source: PluginSource, error: BaseException) -> PluginFailure:
    """Record and log a plugin failure with its traceback."""
    logger.error("plugin failed: %s: %s", source.describe(), error, exc_info=error)
    formatted = "".join(traceback.format_exception(error))
    return PluginFailure(source, f"{type(error).__name__}: {error}", formatted)


@dataclass(frozen=True)
class PluginSelection:
    """Which plugins to load: ``only`` (None for all) less ``disabled``.

    Names match an entry point's name or its distribution's name.
    """

    only: frozenset[str] | None = None
    disabled: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_names(cls, only: Iterable[str] | None, disabled: Iterable[str] = ()) -> PluginSelection:
        # An empty list selects nothing, which is never what a user means: it is "all".
        selected = frozenset(canonicalize_name(name) for name in only) if only else None
        return cls(selected, frozenset(canonicalize_name(name) for name in disabled))

    def allows(self, source: PluginSource) -> bool:
        names = {canonicalize_name(source.entry_point)}
        if source.distribution:
            names.add(canonicalize_name(source.distribution))
        if names & self.disabled:
            return False
        return self.only is None or bool(names & self.only)
