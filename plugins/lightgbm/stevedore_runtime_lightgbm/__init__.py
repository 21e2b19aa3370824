"""The LightGBM runtime of stevedore-server: LightGBM models served from their text model files with no code.

The ``lightgbm`` entry point of the ``stevedore.runtimes`` group names ``LightGBMRuntime``; ``files`` says which
files are LightGBM text models and checks that one is whole, ``runtime`` loads and serves them.
"""

from __future__ import annotations

from .runtime import LightGBMRuntime

__all__ = ["LightGBMRuntime"]
