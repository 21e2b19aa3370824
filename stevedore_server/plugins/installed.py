"""What is installed: the plugins' entry points in a deterministic order, a selection (``--plugins``,
``--disable-plugins``) checked against them, and what was installed while the process runs.

``pip install`` of a wheel only adds files under site-packages: fresh metadata
and cleared import caches are enough to find it. ``pip install -e`` also adds a
``.pth`` file, which Python reads only at startup: a path to add to ``sys.path``,
or an ``import`` line that installs an import finder (setuptools' editable
installs). Until it is read, the entry point is listed and its module cannot be
imported. ``SitePackages.refresh`` reads each ``.pth`` file that appeared since
it was made, once, as ``site`` would have at startup.
"""

from __future__ import annotations

import importlib
import logging
import site
from collections.abc import Iterable, Iterator, Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from packaging.utils import canonicalize_name

from stevedore_server.base.errors import UnknownPlugins
from stevedore_server.base.sources import HOOKS_GROUP, PREDICTORS_GROUP, PluginSelection, PluginSource
from stevedore_server.model_files import RUNTIMES_GROUP

logger = logging.getLogger("stevedore.plugins")

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


# -- installed since the process started ---------------------------------------


def site_directories() -> list[Path]:
    """The folders whose ``.pth`` files Python reads at startup: site-packages, and the user's where enabled."""
    folders = [Path(folder) for folder in site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        folders.append(Path(site.getusersitepackages()))
    return folders


def pth_files() -> Iterator[Path]:
    """Every ``.pth`` file of the site folders, in the order ``site`` reads them (by name)."""
    for folder in site_directories():
        try:
            yield from sorted(folder.glob("*.pth"))
        except OSError as error:  # a folder that went away or cannot be read holds nothing to read
            logger.warning("cannot list %s: %s", folder, error)


class SitePackages:
    """The ``.pth`` files this process has read: those there when it was made (Python read them at startup),
    and those ``refresh`` read since."""

    def __init__(self) -> None:
        self.read: set[Path] = set(pth_files())

    def refresh(self) -> list[Path]:
        """Read the ``.pth`` files installed since, each once (its ``import`` lines are not run twice), and clear
        the import caches, so that fresh metadata and modules are found; returns the files read."""
        importlib.invalidate_caches()
        fresh = [path for path in pth_files() if path not in self.read]
        for path in fresh:
            self.read.add(path)
            logger.info("reading %s, installed since the server started", path)
            # What ``site`` does at startup for each .pth file: a path line added to sys.path once, an import
            # line run (errors printed to stderr, as at startup; the plugin's import then fails with why).
            site.addpackage(str(path.parent), path.name, None)
        if fresh:
            importlib.invalidate_caches()  # a finder or path added by the files starts with clear caches
        return fresh
