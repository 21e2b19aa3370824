"""``iris-gil``: the example plugin's iris model, each call first spending about 5 ms in a pure-Python loop.

The loop never releases the GIL, as the Python code of many models does not: on threads, calls of this model
run one at a time whatever the threads; in worker processes (``[models.iris-gil] processes = 2``), one a
process. Its predictions are the iris model's, so the benchmark checks them as for every target.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import stevedore_sklearn_logreg.predictor as example
from stevedore_sklearn_logreg.predictor import LogReg

#: Iterations of the loop: about 5 ms of one core on the benchmark machine.
SPIN = int(os.environ.get("IRIS_GIL_SPIN", "50000"))


class IrisGil(LogReg):
    name = "iris-gil"
    description = "The iris model behind about 5 ms of pure Python a call (it holds the GIL)."
    inline = False

    def resource_path(self, relative: str | os.PathLike[str]) -> Path:
        return Path(example.__file__).resolve().parent / relative  # the example plugin's model file

    def run_predict(self, X: Any) -> Any:
        spin(SPIN)
        return super().run_predict(X)


def spin(iterations: int) -> int:
    total = 0
    for step in range(iterations):
        total = (total + step * step) % 1_000_003
    return total
