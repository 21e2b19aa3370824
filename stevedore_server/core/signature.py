"""Which tensors a predictor takes and gives: declared by the plugin, or derived from its predict schema."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stevedore_server.base.errors import BadRequest, NoTensorInterface
from stevedore_server.base.validation import ArrayCheck

from .content_types import CONTENT_TYPES, ELEMENT_TYPES, encode_elements
from .tensors import DTYPES, TensorSpec, as_array, datatype_of

if TYPE_CHECKING:
    from stevedore_server.plugins.loading import LoadedModel

LEAF_DATATYPES = {"number": "FP64", "integer": "INT64", "boolean": "BOOL", "string": "BYTES"}
DEFAULT_INPUT = "input-0"
DEFAULT_OUTPUT = "output-0"


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    #: Where the predict schema says nothing an array check cannot, the check; else None (validate the JSON).
    tensor_check: ArrayCheck | None = None
    #: The content type the predictor asks for where a request names none (None: ``np``).
    content_type: str | None = None
    #: The outputs a request that names none gets (None: every output).
    default_outputs: tuple[str, ...] | None = None

    def renamed_input(self, given: Sequence[Any]) -> str | None:
        """The name a request ``given`` its one input where this single-input model takes it as its only input
        under another name, as MLServer and KServe do (MLServer's ``NumpyRequestCodec`` names it ``input-1``);
        None where the request uses the model's names (or names that ``input_spec`` refuses)."""
        if len(given) != 1 or len(self.inputs) != 1:
            return None
        name = given[0]
        if not isinstance(name, str) or not name or name == self.inputs[0].name:
            return None
        return name

    def input_specs(self, renamed: str | None = None) -> dict[str, TensorSpec]:
        """The model's inputs by the names a request gives them: theirs, or ``renamed`` for the only one."""
        if renamed is not None:
            return {renamed: self.inputs[0]}
        return self.inputs_by_name

    @functools.cached_property
    def inputs_by_name(self) -> dict[str, TensorSpec]:
        return {spec.name: spec for spec in self.inputs}

    def declared_content(self) -> dict[str, tuple[str, str | None]]:
        """Each input's datatype and declared content type, by input name."""
        return {spec.name: (spec.datatype, spec.content_type) for spec in self.inputs}

    def output_content_type(self, name: str) -> str | None:
        return next((spec.content_type for spec in self.outputs if spec.name == name), None)

    def select_outputs(self, requested: list[str]) -> list[str]:
        """The outputs a request asks for by name (none named: the model's default outputs, else every output);
        BadRequest for an unknown one."""
        names = [spec.name for spec in self.outputs]
        unknown = [name for name in requested if name not in names]
        if unknown:
            raise BadRequest(f"unknown outputs: {', '.join(unknown)}; the model's outputs are: {', '.join(names)}")
        if requested:
            return requested
        return list(self.default_outputs) if self.default_outputs is not None else names

    def output_names(self, selected: Sequence[str]) -> tuple[str, ...]:
        """The ``selected`` outputs as ``Predictor.predict_outputs`` receives them: each once, in the model's
        order (so that requests asking for the same outputs share a batch whatever order they name them in)."""
        return tuple(spec.name for spec in self.outputs if spec.name in selected)

    def results_by_output(self, result: Any, asked: tuple[str, ...] | None = None) -> dict[str, Any]:
        """A model's result by output name: ``predict``'s (a model with several outputs returns a dict of them),
        or, where the outputs ``asked`` were given to ``predict_outputs``, its dict holding at least those;
        TypeError for a result that is not so."""
        if asked is not None:
            if not isinstance(result, dict) or not set(asked) <= set(result):
                raise TypeError(f"predict_outputs asked for {list(asked)} must return a dict with those keys")
            return result
        if len(self.outputs) == 1:
            return {self.outputs[0].name: result}
        names = [spec.name for spec in self.outputs]
        if not isinstance(result, dict) or set(result) != set(names):
            raise TypeError(f"a model with outputs {names} must return a dict with those keys")
        return result


def signature_of(model: LoadedModel) -> Signature:
    """The model's tensors; raises NoTensorInterface with the reason where there can be none."""
    predictor = model.predictor
    schema = model.predict_validator.schema if model.predict_validator else {}
    if predictor.tensor_inputs:
        inputs = tuple(declared(spec, "tensor_inputs") for spec in predictor.tensor_inputs)
        check = None
    else:
        spec, check = input_from_schema(schema)
        inputs = (spec,)
    if predictor.tensor_outputs:
        outputs = tuple(declared(spec, "tensor_outputs") for spec in predictor.tensor_outputs)
    else:
        outputs = (output_from_result(model.predict_fixture, model.fixture_output),)
    content_type = predictor.content_type
    if content_type is not None and content_type not in CONTENT_TYPES:
        raise NoTensorInterface(f"content_type {content_type!r} is not one of {', '.join(CONTENT_TYPES)}")
    return Signature(inputs, outputs, check, content_type, default_outputs(predictor.default_outputs, outputs))


def default_outputs(declared: Any, outputs: tuple[TensorSpec, ...]) -> tuple[str, ...] | None:
    """The predictor's ``default_outputs``, checked: a non-empty list of names of its outputs, or None."""
    if declared is None:
        return None
    names = [spec.name for spec in outputs]
    if not isinstance(declared, (list, tuple)) or not declared or not all(isinstance(n, str) for n in declared):
        raise NoTensorInterface(f"default_outputs must be a non-empty list of output names, not {declared!r}")
    unknown = [name for name in declared if name not in names]
    if unknown:
        raise NoTensorInterface(f"default_outputs names {', '.join(unknown)}; the outputs are: {', '.join(names)}")
    return tuple(declared)


def declared(spec: Any, attribute: str) -> TensorSpec:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise NoTensorInterface(f"{attribute}: each entry must be a dict with a name, datatype and shape")
    if not isinstance(spec.get("datatype"), str) or spec["datatype"] not in DTYPES:
        raise NoTensorInterface(f"{attribute}: datatype {spec.get('datatype')!r} is not one of {', '.join(DTYPES)}")
    shape = spec.get("shape")
    if not isinstance(shape, (list, tuple)) or not all(type(dim) is int and dim >= -1 for dim in shape):
        raise NoTensorInterface(f"{attribute}: shape {shape!r} must be a list of integers >= -1")
    content_type = spec.get("content_type")
    if content_type is not None and content_type not in ELEMENT_TYPES:
        raise NoTensorInterface(f"{attribute}: content_type {content_type!r} is not one of {', '.join(ELEMENT_TYPES)}")
    return TensorSpec(spec["name"], spec["datatype"], tuple(shape), content_type)


def input_from_schema(schema: dict[str, Any]) -> tuple[TensorSpec, ArrayCheck | None]:
    """The one input an array (of arrays) schema describes, and the schema as an array check if it can be one."""
    dims: list[int] = []
    node = schema
    while isinstance(node, dict) and node.get("type") == "array":
        items = node.get("items")
        if not isinstance(items, dict):
            raise NoTensorInterface("the predict schema's array has no single 'items' schema, so no tensor shape")
        low, high = node.get("minItems"), node.get("maxItems")
        dims.append(high if low is not None and low == high and isinstance(high, int) else -1)
        node = items
    if not dims:
        raise NoTensorInterface("the predict schema is not an array (of arrays), and no tensor_inputs are declared")
    leaf = node.get("type") if isinstance(node, dict) else None
    if not isinstance(leaf, str) or leaf not in LEAF_DATATYPES:
        raise NoTensorInterface(
            f"the predict schema's elements are {leaf or 'untyped'}, not numbers, integers, booleans or strings"
        )
    return TensorSpec(DEFAULT_INPUT, LEAF_DATATYPES[leaf], tuple(dims)), ArrayCheck.of(schema)


def output_from_result(fixture: Any, result: Any) -> TensorSpec:
    """The output tensor the self-test's result shows; the batch dimension is variable."""
    try:
        array, _ = encode_elements(as_array(result), None)
        datatype = datatype_of(array)
    except (TypeError, ValueError) as error:
        raise NoTensorInterface(f"the predict output on the fixture is not a tensor: {error}") from None
    shape = list(array.shape)
    if shape and isinstance(fixture, list) and shape[0] == len(fixture):
        shape[0] = -1  # one output row per input row
    return TensorSpec(DEFAULT_OUTPUT, datatype, tuple(shape))
