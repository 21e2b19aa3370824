"""An ONNX model's inputs and outputs as stevedore serves them: V2 tensors (ONNX element types as V2
datatypes, symbolic dimensions as -1), and the stevedore predict payload's schema and fixture.

The payload of a model of one input is that input as nested arrays (rows of numbers for a 2D float input); of
a model of several inputs, an object of them by name, as V2 hands several inputs to the predictor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from stevedore_server.base.errors import PluginError
from stevedore_server.model_files import rows_schema

#: ONNX tensor element types: their V2 datatype, NumPy dtype and JSON Schema type.
ELEMENTS: dict[str, tuple[str, Any, str]] = {
    "float": ("FP32", np.float32, "number"),
    "double": ("FP64", np.float64, "number"),
    "float16": ("FP16", np.float16, "number"),
    "int8": ("INT8", np.int8, "integer"),
    "int16": ("INT16", np.int16, "integer"),
    "int32": ("INT32", np.int32, "integer"),
    "int64": ("INT64", np.int64, "integer"),
    "uint8": ("UINT8", np.uint8, "integer"),
    "uint16": ("UINT16", np.uint16, "integer"),
    "uint32": ("UINT32", np.uint32, "integer"),
    "uint64": ("UINT64", np.uint64, "integer"),
    "bool": ("BOOL", np.bool_, "boolean"),
    "string": ("BYTES", np.str_, "string"),
}
TENSOR = re.compile(r"\Atensor\((\w+)\)\Z")
#: skl2onnx's ZipMap: a classifier's probabilities as one ``{class: probability}`` map a row.
ZIPMAP = re.compile(r"\Aseq\(map\((int64|string),tensor\((float|double)\)\)\)\Z")
FIXTURE_LEAVES: dict[str, Any] = {"number": 0.0, "integer": 0, "boolean": False, "string": ""}


@dataclass(frozen=True)
class Tensor:
    """One input or output of the session."""

    name: str
    element: str
    #: -1 for a symbolic or unknown dimension.
    shape: tuple[int, ...]
    #: Output only: a ZipMap, served as rows of probabilities (one column a class, in the map's order).
    zipmap: bool = False

    @classmethod
    def of(cls, node: Any, kind: str) -> Tensor:
        """The tensor of a session's ``NodeArg``; PluginError for a type stevedore cannot serve."""
        shape = tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in node.shape or ())
        match = TENSOR.match(node.type)
        if match is not None and match.group(1) in ELEMENTS:
            return cls(node.name, match.group(1), shape)
        zipmap = ZIPMAP.match(node.type)
        if kind == "output" and zipmap is not None:
            return cls(node.name, "float" if zipmap.group(2) == "float" else "double", (-1, -1), zipmap=True)
        raise PluginError(
            f"the model's {kind} {node.name!r} is a {node.type}, which stevedore cannot serve: only tensors of "
            f"{', '.join(ELEMENTS)} (and skl2onnx's ZipMap of probabilities as an output); convert the model "
            f"without it (skl2onnx: options={{'zipmap': False}})"
        )

    @property
    def datatype(self) -> str:
        return ELEMENTS[self.element][0]

    @property
    def dtype(self) -> Any:
        return ELEMENTS[self.element][1]

    def v2(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def schema(self) -> dict[str, Any]:
        """Nested arrays of this tensor's shape (rows of numbers for a 2D float input)."""
        leaf = {"type": ELEMENTS[self.element][2]}
        if len(self.shape) == 2:
            rows, width = self.shape
            fixed = {"minItems": rows, "maxItems": rows} if rows >= 0 else {}
            return rows_schema(width if width >= 0 else None, leaf) | fixed
        schema: dict[str, Any] = leaf
        for dim in reversed(self.shape):
            schema = {"type": "array", "items": schema} | ({"minItems": dim, "maxItems": dim} if dim >= 0 else {})
        return schema

    def fixture(self) -> Any:
        """A valid value: zeros, one along each symbolic dimension."""
        value: Any = FIXTURE_LEAVES[ELEMENTS[self.element][2]]
        for dim in reversed(self.shape):
            value = [value] * (dim if dim >= 0 else 1)
        return value

    def array(self, value: Any) -> Any:
        """``value`` (nested lists or a NumPy array) as the array ONNX Runtime takes for this input."""
        if self.element != "string":
            return np.asarray(value, dtype=self.dtype)
        array = np.asarray(value)
        if array.dtype.kind in "SO":  # V2 BYTES come as bytes: ONNX Runtime wants str
            array = np.vectorize(text, otypes=[np.str_])(array) if array.size else array.astype(np.str_)
        return array.astype(np.str_)


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def payload_schema(inputs: list[Tensor]) -> dict[str, Any]:
    """The stevedore predict payload: the one input, or an object of every input by name."""
    if len(inputs) == 1:
        return inputs[0].schema()
    return {
        "type": "object",
        "properties": {tensor.name: tensor.schema() for tensor in inputs},
        "required": [tensor.name for tensor in inputs],
        "additionalProperties": False,
    }


def payload_fixture(inputs: list[Tensor]) -> Any:
    if len(inputs) == 1:
        return inputs[0].fixture()
    return {tensor.name: tensor.fixture() for tensor in inputs}


def unzipped(result: list[dict[Any, float]], dtype: Any) -> Any:
    """A ZipMap's maps as rows of probabilities, one column a class in the maps' order (the classes')."""
    if not result:
        return np.zeros((0, 0), dtype=dtype)
    classes = list(result[0])
    return np.array([[row[label] for label in classes] for row in result], dtype=dtype)
