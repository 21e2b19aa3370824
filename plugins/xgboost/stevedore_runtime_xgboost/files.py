"""Which files are XGBoost models: by their content where they are here, by their names where they are not
(the last segment of a remote URI).

A ``.json`` file is XGBoost's only where it holds a ``learner`` (a folder's ``schema.json`` or a settings file
is not); ``.bst`` is also LightGBM's name in KServe's folders, so a ``.bst`` holding a LightGBM text model is
left to that runtime.
"""

from __future__ import annotations

import re
from pathlib import Path

#: The names XGBoost models are saved under: JSON and UBJ (``save_model`` picks by the extension), and the
#: older names (``model.bst`` in KServe's and MLServer's folders), which XGBoost now saves as UBJ.
PATTERNS = ("*.json", "*.ubj", "*.bst", "*.model")
#: How XGBoost's JSON models begin: an object whose first key is ``learner``.
JSON_START = re.compile(rb'\A\s*\{\s*"learner"\s*:')
#: How a LightGBM text model begins.
LIGHTGBM_START = b"tree\n"
#: Bytes read to tell (every signature above lies in them).
HEAD = 64


def recognizes(path: Path) -> bool:
    """Whether ``path`` (matching ``PATTERNS``) holds an XGBoost model, or by its name may hold one."""
    suffix = path.suffix.lower()
    if not path.is_file():
        return suffix != ".json" or named_for_xgboost(path.name)
    head = read_head(path)
    if suffix == ".json":
        return JSON_START.match(head) is not None
    if suffix == ".ubj":
        return True  # no other library writes .ubj: a damaged one fails with XGBoost's own reason
    return not head.startswith(LIGHTGBM_START)


def named_for_xgboost(name: str) -> bool:
    """A remote ``.json`` is taken for a model only by a telling name: ``model.json``, ``*xgb*.json``."""
    lowered = name.lower()
    return lowered == "model.json" or "xgb" in lowered


def read_head(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            return file.read(HEAD)
    except OSError:  # unreadable here: judged by its name, and reading it will then say why
        return b""
