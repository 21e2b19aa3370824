"""A model of four tensors of four datatypes; each output is a simple function of its input, row by row."""

from __future__ import annotations

from typing import Any

import numpy as np

from stevedore_server import Predictor


class Mixed(Predictor):
    name = "mixed"
    numpy_input = True
    tensor_inputs = [
        {"name": "floats", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "counts", "datatype": "INT64", "shape": [-1]},
        {"name": "flags", "datatype": "BOOL", "shape": [-1]},
        {"name": "words", "datatype": "BYTES", "shape": [-1]},
    ]
    tensor_outputs = [
        {"name": "doubled", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "next", "datatype": "INT64", "shape": [-1]},
        {"name": "negated", "datatype": "BOOL", "shape": [-1]},
        {"name": "shouted", "datatype": "BYTES", "shape": [-1]},
    ]
    predict_schema = {
        "type": "object",
        "required": ["floats", "counts", "flags", "words"],
        "properties": {
            "floats": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
            "counts": {"type": "array", "items": {"type": "integer", "maximum": 2**62}},
            "flags": {"type": "array", "items": {"type": "boolean"}},
            "words": {"type": "array", "items": {"type": "string"}},
        },
    }
    predict_fixture = {"floats": [[1.0, 2.0, 3.0]], "counts": [1], "flags": [True], "words": ["a"]}
    row_aligned = False

    def run_predict(self, tensors: dict[str, Any]) -> dict[str, Any]:
        return {
            "doubled": np.asarray(tensors["floats"], dtype=np.float32) * 2,
            "next": np.asarray(tensors["counts"], dtype=np.int64) + 1,
            "negated": ~np.asarray(tensors["flags"], dtype=bool),
            "shouted": [str(word).upper() for word in tensors["words"]],
        }
