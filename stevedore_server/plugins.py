"""Building the plugin manager and reading the entry points of installed distributions."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy
from packaging.utils import canonicalize_name

from . import hookspecs
from .errors import StartupError

logger = logging.getLogger("stevedore.plugins")

PREDICTORS_GROUP = "stevedore.predictors"
HOOKS_GROUP = "stevedore.hooks"


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
    """A plugin that failed to import, construct or register; reported, never silently dropped."""

    source: PluginSource
    error: str
    traceback: str = ""

    def as_dict(self) -> dict[str, str | None]:
        return {
            "entry_point": self.source.entry_point,
            "group": self.source.group,
            "distribution": self.source.distribution,
            "distribution_version": self.source.distribution_version,
            "error": self.error,
        }


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


def iter_entry_points(group: str) -> Iterator[EntryPoint]:
    """Entry points of ``group`` in a deterministic order: distribution, then name."""

    def key(entry_point: EntryPoint) -> tuple[str, str, str]:
        dist_name = entry_point.dist.name if entry_point.dist else ""
        return (canonicalize_name(dist_name), entry_point.name, entry_point.value)

    # Installed twice on sys.path (say, a wheel and an editable copy) shows the same entry point twice.
    unique = {(ep.dist.name if ep.dist else "", ep.name, ep.value): ep for ep in entry_points(group=group)}
    yield from sorted(unique.values(), key=key)


def failure(source: PluginSource, error: BaseException) -> PluginFailure:
    """Record and log a plugin failure with its traceback."""
    logger.error("plugin failed: %s: %s", source.describe(), error, exc_info=error)
    formatted = "".join(traceback.format_exception(error))
    return PluginFailure(source, f"{type(error).__name__}: {error}", formatted)


def call_each(
    manager: pluggy.PluginManager, hook_name: str, **kwargs: Any
) -> Iterator[tuple[str, Any, BaseException | None]]:
    """Call each implementation of a hook on its own, in pluggy's call order.

    Yields ``(plugin name, result, error)``, so a failure is pinned on its plugin
    and the other plugins' results are kept.
    """
    for impl in reversed(getattr(manager.hook, hook_name).get_hookimpls()):
        try:
            yield impl.plugin_name, impl.function(*[kwargs[name] for name in impl.argnames]), None
        except Exception as error:
            yield impl.plugin_name, None, error


def get_plugin_manager(
    selection: PluginSelection | None = None,
    default_plugins: Iterable[tuple[str, object]] = (),
    load_entry_points: bool = True,
) -> tuple[pluggy.PluginManager, list[PluginFailure]]:
    """A fresh plugin manager with the built-in plugins and the selected ``stevedore.hooks`` entry points.

    Returns the manager and the hook plugins that failed to load. Hook
    implementations that match no specification are a ``StartupError``.
    """
    selection = selection or PluginSelection()
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    for name, plugin in default_plugins:
        manager.register(plugin, name=name)
    failures = _load_hook_entry_points(manager, selection) if load_entry_points else []
    check_hooks(manager)
    return manager, failures


def check_hooks(manager: pluggy.PluginManager) -> None:
    """Reject hook implementations that match no specification, naming the plugin."""
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as error:
        name = manager.get_name(error.plugin) or repr(error.plugin)
        known = ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("stevedore_")))
        raise StartupError(f"plugin {name!r} implements an unknown hook ({error}); the hooks are: {known}") from None


def _load_hook_entry_points(manager: pluggy.PluginManager, selection: PluginSelection) -> list[PluginFailure]:
    failures = []
    for entry_point in iter_entry_points(HOOKS_GROUP):
        source = PluginSource.of(entry_point)
        if not selection.allows(source):
            manager.set_blocked(entry_point.name)
            logger.info("hook plugin not selected: %s", source.describe())
            continue
        try:
            manager.register(entry_point.load(), name=entry_point.name)
        except pluggy.PluginValidationError as error:
            raise StartupError(f"{source.describe()}: {error}") from None
        except Exception as error:  # a broken plugin must not take the server down
            failures.append(failure(source, error))
    return failures
