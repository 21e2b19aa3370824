"""Reading the files scikit-learn models are saved in: skops (safe), joblib and pickle (which run code when read).

joblib and pickle are read only once the runtime's ``require_trust`` let them; a skops file is read with the
types skops trusts by default, and with the ones it lists as untrusted only where the model is trusted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import skops.io

from stevedore_server.base.errors import PluginError, UnsafeFormat

logger = logging.getLogger("stevedore.runtime.sklearn")

JOBLIB_PATTERNS = ("*.joblib",)
PICKLE_PATTERNS = ("*.pkl", "*.pickle")
SKOPS_PATTERNS = ("*.skops",)
#: Every file the runtime reads.
PATTERNS = (*JOBLIB_PATTERNS, *PICKLE_PATTERNS, *SKOPS_PATTERNS)


def read_model(path: Path, trusted: bool, require_trust: Callable[[str], None], table: str) -> Any:
    """The estimator saved in the file ``path``; ``table`` is the model's settings table, named in errors."""
    if path.suffix.lower() == ".skops":
        return read_skops(path, trusted, table)
    # joblib reads plain pickles too (as MLServer's runtime does); any other name is taken for a pickle.
    what = "a joblib file" if path.suffix.lower() == ".joblib" else "a pickle file"
    require_trust(what)
    return read_joblib(path, what)


def read_joblib(path: Path, what: str) -> Any:
    try:
        return joblib.load(path)
    except Exception as error:  # unpickling a damaged file raises anything: EOFError, UnpicklingError, KeyError
        raise unreadable(path, what, error) from error


def read_skops(path: Path, trusted: bool, table: str) -> Any:
    """The skops file's estimator; UnsafeFormat where it holds types skops does not trust and the model is
    not trusted."""
    try:
        untrusted = skops.io.get_untrusted_types(file=path)
    except Exception as error:  # a damaged zip or schema: whatever skops raises, it is not a model
        raise unreadable(path, "a skops file", error) from error
    if untrusted and not trusted:
        raise UnsafeFormat(
            f"{path.name} holds types skops does not trust by default: {', '.join(untrusted)}; if you trust them, "
            f'set `trust = true` or pin the file with `sha256 = "..."` in {table}, or start the server with '
            f"--allow-pickle"
        )
    if untrusted:
        logger.info("%s: trusting the types %s (the model is trusted)", path.name, ", ".join(untrusted))
    try:
        return skops.io.load(path, trusted=untrusted)
    except Exception as error:
        raise unreadable(path, "a skops file", error) from error


def unreadable(path: Path, what: str, error: Exception) -> PluginError:
    size = path.stat().st_size if path.exists() else 0
    return PluginError(f"{path} ({size} bytes) cannot be read as {what}: {type(error).__name__}: {error}")
