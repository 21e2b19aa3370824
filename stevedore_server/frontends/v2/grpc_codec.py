"""Open Inference Protocol tensors over gRPC: a ``ModelInferRequest``'s inputs as arrays, an answer as a
``ModelInferResponse``.

A request carries each input's elements either in its typed ``contents`` (the
repeated field of its datatype) or, for every input at once, in
``raw_input_contents`` (little-endian bytes, as the REST binary extension;
NVIDIA's client always sends these). The response mirrors the request: raw
outputs for raw inputs, typed contents for typed ones. Checks and conversions
are those of the REST front end (``core.tensors``), so both answer alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stevedore_server.base.errors import BadRequest, ModelFailure
from stevedore_server.core.content_types import ContentPlan, checked, plan_of
from stevedore_server.core.inference import Answer
from stevedore_server.core.signature import Signature
from stevedore_server.core.tensors import (
    DTYPES,
    bytes_of,
    cast_checked,
    decode_binary_data,
    element_count,
    input_spec,
    model_input,
    output_array,
    raw_bytes,
    text_of,
)

from .codec import RENAMED_INPUT, outputs_of
from .protocol import ModelInferResponse

#: The ``InferTensorContents`` field that holds each datatype's elements (FP16 has none: raw contents only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
#: What the typed fields hold before the cast to the datatype (their protobuf scalar type).
FIELD_DTYPE = {
    "bool_contents": np.dtype("?"),
    "int_contents": np.dtype("<i4"),
    "int64_contents": np.dtype("<i8"),
    "uint_contents": np.dtype("<u4"),
    "uint64_contents": np.dtype("<u8"),
    "fp32_contents": np.dtype("<f4"),
    "fp64_contents": np.dtype("<f8"),
}


def renamed_input(request: Any, signature: Signature) -> str | None:
    """The name the request gave its one input where the model takes it as its only input under another name."""
    return signature.renamed_input([tensor.name for tensor in request.inputs])


def decode_inputs(request: Any, signature: Signature, renamed: str | None = None) -> dict[str, np.ndarray[Any, Any]]:
    """The request's inputs as the model's datatypes and shapes, by the model's input names (``renamed``: the name
    the request gave the only one): BadRequest for anything the model cannot take."""
    if not request.inputs:
        raise BadRequest("inputs must be a non-empty list of tensors")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    specs = signature.input_specs(renamed)
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    for index, tensor in enumerate(request.inputs):
        shape = list(tensor.shape)
        spec = input_spec(tensor.name, tensor.datatype, shape, specs)
        name = tensor.name  # the request's: its errors name what it sent
        if spec.name in arrays:
            raise BadRequest(f"input {name!r} is given twice")
        if raw:
            if tensor.HasField("contents"):
                raise BadRequest(f"input {name!r} has contents as well as raw_input_contents")
            flat = decode_binary_data(name, tensor.datatype, raw[index], element_count(shape))
        else:
            flat = typed_contents(name, tensor.datatype, tensor.contents, element_count(shape))
        arrays[spec.name] = model_input(spec, flat, tensor.datatype, shape)
    missing = [spec.name for spec in signature.inputs if spec.name not in arrays]
    if missing:
        raise BadRequest(f"missing inputs: {', '.join(missing)}")
    return arrays


def content_plan(request: Any, signature: Signature, renamed: str | None = None) -> ContentPlan:
    """What the request's inputs become for the predictor, from the ``content_type`` string parameters of the
    request and its inputs and the content types the model declares."""
    input_types = {tensor.name: content_type_of(tensor.parameters, tensor.name) for tensor in request.inputs}
    if renamed is not None:  # the model's own name for it
        input_types = {signature.inputs[0].name: input_types[renamed]}
    request_type = content_type_of(request.parameters, "the request")
    return plan_of(request_type, input_types, signature.declared_content(), signature.content_type)


def content_type_of(parameters: Any, where: str) -> str | None:
    if "content_type" not in parameters:
        return None
    return checked(parameters["content_type"].string_param, where)


def typed_contents(name: str, datatype: str, contents: Any, count: int) -> np.ndarray[Any, Any]:
    """A flat array from an input's typed contents: only the field of its datatype may hold elements."""
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise BadRequest(f"input {name!r}: {datatype} has no typed contents; send raw_input_contents")
    used = [descriptor.name for descriptor, _ in contents.ListFields()]
    if any(other != field for other in used):
        raise BadRequest(f"input {name!r}: {datatype} elements go in contents.{field}, not {', '.join(used)}")
    values = getattr(contents, field)
    if len(values) != count:
        raise BadRequest(f"input {name!r}: shape holds {count} elements but contents has {len(values)}")
    if field == "bytes_contents":
        return np.array([text_of(item) for item in values], dtype=object)
    return cast_checked(name, np.array(values, dtype=FIELD_DTYPE[field]), DTYPES[datatype], datatype)


def requested_outputs(request: Any, signature: Signature) -> list[str]:
    return signature.select_outputs([output.name for output in request.outputs])


def encode_response(answer: Answer, request: Any, selected: list[str], renamed: str | None = None) -> Any:
    """The selected outputs, raw if the request was raw, else typed; its ``parameters`` name the input
    ``renamed`` where the model took the request's one input under another name."""
    model = answer.model
    results = outputs_of(answer)
    response = ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
    if renamed is not None:
        response.parameters[RENAMED_INPUT].string_param = renamed
    raw = bool(request.raw_input_contents)
    for name in selected:
        try:
            declared = model.signature.output_content_type(name) if model.signature else None
            tensor = output_array(results[name], declared)
            datatype, array = tensor.datatype, tensor.array
            output = response.outputs.add(name=name, datatype=datatype, shape=array.shape)
            output.parameters["content_type"].string_param = tensor.content_type
            if raw:
                response.raw_output_contents.append(raw_bytes(datatype, array))
            else:
                fill_contents(output.contents, datatype, array)
        except (TypeError, ValueError) as error:
            raise ModelFailure(model.name, model.version, "predict", error) from error
    return response


def fill_contents(contents: Any, datatype: str, array: np.ndarray[Any, Any]) -> None:
    field = CONTENTS_FIELD.get(datatype)
    if field is None:  # FP16: no typed field holds it
        raise ValueError(f"a {datatype} output has no typed contents; ask with raw_input_contents")
    flat = array.ravel()
    if field == "bytes_contents":
        contents.bytes_contents.extend(bytes_of(item) for item in flat)
    else:
        getattr(contents, field).extend(flat.tolist())
