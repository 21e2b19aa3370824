"""The XGBoost runtime of stevedore-server: XGBoost models served from their JSON and UBJ files with no code.

The ``xgboost`` entry point of the ``stevedore.runtimes`` group names ``XGBoostRuntime``; ``files`` says which
files are XGBoost models, ``runtime`` loads and serves them.
"""

from __future__ import annotations

from .runtime import XGBoostRuntime

__all__ = ["XGBoostRuntime"]
