"""Runtimes of the model-file tests: a model file format of the tests' own, read with no framework.

A ``*.weights`` file is a JSON list of numbers: the model answers each row's dot product with them. A
``*.pickled`` file is a pickle of the same list: a format that runs code when read, so it needs trust.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stevedore_server.model_files import Derived, FilePredictor, rows_schema


class Weights(FilePredictor):
    patterns = ("*.weights",)

    def open(self, path: Path) -> Any:
        return np.asarray(orjson.loads(self.artifact_in(path).read_bytes()), dtype=np.float64)

    def derive(self) -> Derived:
        width = len(self.model)
        return Derived(predict_schema=rows_schema(width), predict_fixture=[[0.0] * width])

    def run_predict(self, X: Any) -> Any:
        return (np.asarray(X, dtype=np.float64) @ self.model).tolist()


class Pickled(Weights):
    patterns = ("*.pickled",)

    def open(self, path: Path) -> Any:
        self.require_trust("a pickle file")
        return np.asarray(pickle.loads(self.artifact_in(path).read_bytes()), dtype=np.float64)


class Opaque(Weights):
    """Reads ``*.opaque`` files, which say nothing of their input: the settings must give a schema and fixture."""

    patterns = ("*.opaque",)

    def derive(self) -> Derived:
        return Derived()


class Broken(FilePredictor):
    """A runtime that cannot make a predictor at all."""

    patterns = ("*.broken",)

    def __init__(self, spec: Any) -> None:
        raise RuntimeError("this runtime is broken")


class TwoOutputs(Weights):
    """Two V2 outputs, ``dot`` (the default) and ``double`` (twice it), each computed only when asked for."""

    patterns = ("*.two",)

    def derive(self) -> Derived:
        derived = super().derive()
        outputs = [{"name": name, "datatype": "FP64", "shape": [-1]} for name in ("dot", "double")]
        return Derived(derived.predict_schema, derived.predict_fixture, tensor_outputs=outputs, default_outputs=["dot"])

    def predict_outputs(self, payload: Any, names: tuple[str, ...]) -> dict[str, Any]:
        dot = np.asarray(self.run_predict(payload))
        return {name: dot * 2 if name == "double" else dot for name in names}


class Crashes(Weights):
    """A native parser that a damaged file crashes: reading a ``*.crash`` file aborts the process."""

    patterns = ("*.crash",)
    read_aside_first = True

    def open(self, path: Path) -> Any:
        os.abort()
