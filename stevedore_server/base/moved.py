"""Old module paths kept working: a module that moved leaves behind a thin one that warns and redirects."""

from __future__ import annotations

import importlib
import sys
import warnings


def redirect(old: str, new: str) -> None:
    """Make the module ``old`` (being imported) the module ``new``, with a ``DeprecationWarning`` naming both:
    the same classes and functions, so ``isinstance`` and ``monkeypatch`` see one module."""
    warnings.warn(f"{old} is deprecated: import {new} instead", DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
