"""The scikit-learn runtime of stevedore-server: joblib, pickle and skops files served with no code.

The ``sklearn`` entry point of the ``stevedore.runtimes`` group names ``SklearnRuntime``; ``formats`` reads the
files, ``outputs`` says which of the estimator's methods are its outputs and ``inputs`` what it takes.
"""

from __future__ import annotations

from .runtime import SklearnRuntime

__all__ = ["SklearnRuntime"]
