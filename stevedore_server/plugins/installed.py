"""What is installed: the plugins' entry points in a deterministic order, and a selection (``--plugins``,
``--disable-plugins``) checked against them (what was installed while the process runs: ``site_packages``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from importlib.metadata import EntryPoint, entry_points

from packaging.utils import canonicalize_name

from stevedore_server.base.errors import UnknownPlugins
from stevedore_server.base.sources import HOOKS_GROUP, PREDICTORS_GROUP, PluginSelection, PluginSource
from stevedore_server.model_files import RUNTIMES_GROUP

#: What ``--plugins`` names to select no plugin (a server of its built-in routes only, as some tests make).
NO_PLUGIN = "none"
#: The entry point groups that make a distribution a plugin.
PLUGIN_GROUPS = (PREDICTORS_GROUP, HOOKS_GROUP, RUNTIMES_GROUP)


def iter_entry_points(group: str) -> Iterator[EntryPoint]:
    """Entry points of ``group`` in a deterministic order: distribution, then name."""

    def key(entry_point: EntryPoint) -> tuple[str, str, str]:
        dist_name = entry_point.dist.name if entry_point.dist else ""
        return (canonicalize_name(dist_name), entry_point.name, entry_point.value)

    # Installed twice on sys.path (say, a wheel and an editable copy) shows the same entry point twice.
    unique = {(ep.dist.name if ep.dist else "", ep.name, ep.value): ep for ep in entry_points(group=group)}
    yield from sorted(unique.values(), key=key)


def installed_plugins(groups: Sequence[str] = PLUGIN_GROUPS) -> list[PluginSource]:
    """Where each entry point of ``groups`` installed here comes from, selected or not."""
    return [PluginSource.of(entry_point) for group in groups for entry_point in iter_entry_points(group)]


def plugin_names(sources: Iterable[PluginSource]) -> set[str]:
    """The names a selection may give these plugins by: entry points' and distributions', canonical."""
    names: set[str] = set()
    for source in sources:
        names.add(canonicalize_name(source.entry_point))
        if source.distribution:
            names.add(canonicalize_name(source.distribution))
    return names


def listed_plugins(sources: Iterable[PluginSource]) -> str:
    """The plugin distributions of ``sources``, for a message: "stevedore-a, stevedore-b", or "none"."""
    names = {source.distribution or f"entry point {source.entry_point!r}" for source in sources}
    return ", ".join(sorted(names, key=canonicalize_name)) or "none"


def selection_flags(selection: PluginSelection) -> str:
    """The selection as the flags that made it: "--plugins a,b --disable-plugins c" (empty for all)."""
    flags = []
    if selection.only is not None:
        flags.append("--plugins " + ",".join(sorted(selection.only)))
    if selection.disabled:
        flags.append("--disable-plugins " + ",".join(sorted(selection.disabled)))
    return " ".join(flags)


def check_selection(selection: PluginSelection, also: Iterable[PluginSource] = ()) -> None:
    """``UnknownPlugins`` if ``--plugins`` or ``--disable-plugins`` names a plugin installed nowhere: here, or
    among ``also`` (the plugins of models' own environments). ``--plugins none`` selects none, knowingly."""
    sources = [*installed_plugins(), *also]
    known = plugin_names(sources) | {NO_PLUGIN}
    wrong = [
        f"{flag} {', '.join(sorted(names - known))}"
        for flag, names in (("--plugins", selection.only or frozenset()), ("--disable-plugins", selection.disabled))
        if names - known
    ]
    if wrong:
        raise UnknownPlugins(
            f"{' and '.join(wrong)}: no installed plugin has this name; the installed plugins are "
            f"{listed_plugins(sources)} (--plugins and --disable-plugins take distribution or entry point names)"
        )
