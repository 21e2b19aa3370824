"""The ONNX runtime of stevedore-server: ONNX models served by ONNX Runtime (CPU) with no code.

The ``onnx`` entry point of the ``stevedore.runtimes`` group names ``OnnxRuntime``; ``tensors`` says what the
model's inputs and outputs are (V2 tensors, the stevedore payload's schema and fixture), ``runtime`` loads and
serves it.
"""

from __future__ import annotations

from .runtime import OnnxRuntime

__all__ = ["OnnxRuntime"]
