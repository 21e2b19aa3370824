"""stevedore-server: a plugin-based model server."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("stevedore-server")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

from .hookspecs import hookimpl
from .predictor import Predictor

__all__ = ["Predictor", "__version__", "hookimpl"]
