"""A model named after the major version of toolz installed with it (``toolz-0``, ``toolz-1``), answering the
version it sees and the environment it runs in."""

from __future__ import annotations

import sys
from typing import Any

import toolz

from stevedore_server import Predictor


class Pinned(Predictor):
    name = "toolz-" + toolz.__version__.split(".")[0]
    predict_schema = {"type": "array", "items": {"type": "number"}}
    predict_fixture = [1]

    def run_predict(self, rows: list[float]) -> list[dict[str, Any]]:
        return [{"toolz": toolz.__version__, "prefix": sys.prefix} for _ in rows]
