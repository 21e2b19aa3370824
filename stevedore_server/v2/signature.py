"""Which tensors a predictor takes and gives: declared by the plugin, or derived from its predict schema."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .tensors import DTYPES, TensorSpec, datatype_of

if TYPE_CHECKING:
    from ..registry import ModelEntry

ANNOTATIONS = {"$schema", "$id", "title", "description", "examples", "$comment"}
BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
ARRAY_KEYS = {"type", "items", "minItems", "maxItems"} | ANNOTATIONS
LEAF_DATATYPES = {"number": "FP64", "integer": "INT64", "boolean": "BOOL", "string": "BYTES"}
DEFAULT_INPUT = "input-0"
DEFAULT_OUTPUT = "output-0"


class NoTensorInterface(Exception):
    """Why a predictor has no V2 interface; its other routes still work."""


@dataclass(frozen=True)
class TensorCheck:
    """All a predict schema says about its one input, as checks on a decoded array.

    Decoding already enforces the shape and datatype; this adds the element
    bounds, and finiteness (JSON numbers are finite; binary floats need not be).
    """

    bounds: tuple[tuple[str, float], ...] = ()

    def problem(self, array: np.ndarray[Any, Any]) -> str | None:
        """Why the array would fail the schema, or None."""
        if array.size == 0:
            return None
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            return "holds NaN or infinity, which are not JSON numbers"
        low, high = array.min(), array.max()
        failed = {
            "minimum": low < self.limit("minimum"),
            "maximum": high > self.limit("maximum"),
            "exclusiveMinimum": low <= self.limit("exclusiveMinimum"),
            "exclusiveMaximum": high >= self.limit("exclusiveMaximum"),
        }
        for keyword, bound in self.bounds:
            if failed[keyword]:
                return f"has values outside the schema's {keyword} of {bound:g}"
        return None

    def limit(self, keyword: str) -> float:
        default = -np.inf if "inimum" in keyword else np.inf
        return dict(self.bounds).get(keyword, default)


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    #: Where the predict schema says nothing a tensor check cannot, the check; else None (validate the JSON).
    tensor_check: TensorCheck | None = None


def signature_of(entry: ModelEntry) -> Signature:
    """The entry's tensors; raises NoTensorInterface with the reason where there can be none."""
    predictor = entry.predictor
    schema = entry.predict_validator.schema if entry.predict_validator else {}
    if predictor.tensor_inputs:
        inputs = tuple(declared(spec, "tensor_inputs") for spec in predictor.tensor_inputs)
        check = None
    else:
        spec, check = input_from_schema(schema)
        inputs = (spec,)
    if predictor.tensor_outputs:
        outputs = tuple(declared(spec, "tensor_outputs") for spec in predictor.tensor_outputs)
    else:
        outputs = (output_from_result(entry.predict_fixture, entry.fixture_output),)
    return Signature(inputs, outputs, check)


def declared(spec: Any, attribute: str) -> TensorSpec:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise NoTensorInterface(f"{attribute}: each entry must be a dict with a name, datatype and shape")
    if not isinstance(spec.get("datatype"), str) or spec["datatype"] not in DTYPES:
        raise NoTensorInterface(f"{attribute}: datatype {spec.get('datatype')!r} is not one of {', '.join(DTYPES)}")
    shape = spec.get("shape")
    if not isinstance(shape, (list, tuple)) or not all(type(dim) is int and dim >= -1 for dim in shape):
        raise NoTensorInterface(f"{attribute}: shape {shape!r} must be a list of integers >= -1")
    return TensorSpec(spec["name"], spec["datatype"], tuple(shape))


def input_from_schema(schema: dict[str, Any]) -> tuple[TensorSpec, TensorCheck | None]:
    """The one input an array (of arrays) schema describes, and its tensor check if it says no more than that."""
    dims: list[int] = []
    shape_only = True
    node = schema
    while isinstance(node, dict) and node.get("type") == "array":
        items = node.get("items")
        if not isinstance(items, dict):
            raise NoTensorInterface("the predict schema's array has no single 'items' schema, so no tensor shape")
        low, high = node.get("minItems"), node.get("maxItems")
        fixed = low is not None and low == high
        dims.append(high if fixed and isinstance(high, int) else -1)
        # A range of item counts is more than a tensor shape says: such a schema must still validate.
        shape_only = shape_only and set(node) <= ARRAY_KEYS and (fixed or (low is None and high is None))
        node = items
    if not dims:
        raise NoTensorInterface("the predict schema is not an array (of arrays), and no tensor_inputs are declared")
    leaf = node.get("type") if isinstance(node, dict) else None
    if not isinstance(leaf, str) or leaf not in LEAF_DATATYPES:
        raise NoTensorInterface(
            f"the predict schema's elements are {leaf or 'untyped'}, not numbers, integers, booleans or strings"
        )
    bounds = tuple((keyword, node[keyword]) for keyword in BOUNDS if keyword in node)
    numeric_bounds = all(type(bound) in (int, float) for _, bound in bounds) and leaf in ("number", "integer")
    shape_only = shape_only and set(node) <= {"type", *BOUNDS} | ANNOTATIONS and (numeric_bounds or not bounds)
    spec = TensorSpec(DEFAULT_INPUT, LEAF_DATATYPES[leaf], tuple(dims))
    return spec, TensorCheck(tuple((keyword, float(bound)) for keyword, bound in bounds)) if shape_only else None


def output_from_result(fixture: Any, result: Any) -> TensorSpec:
    """The output tensor the self-test's result shows; the batch dimension is variable."""
    try:
        array = np.asarray(result)
        datatype = datatype_of(array)
    except (TypeError, ValueError) as error:
        raise NoTensorInterface(f"the predict output on the fixture is not a tensor: {error}") from None
    shape = list(array.shape)
    if shape and isinstance(fixture, list) and shape[0] == len(fixture):
        shape[0] = -1  # one output row per input row
    return TensorSpec(DEFAULT_OUTPUT, datatype, tuple(shape))
