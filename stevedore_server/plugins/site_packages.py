"""What was installed while the process runs: the ``.pth`` files of site-packages read since it started.

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
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger("stevedore.plugins")


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
