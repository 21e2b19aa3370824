"""The Open Inference Protocol's inference messages as arrays and back, for both transports: the REST body (a
JSON header, and binary tensor data after it) decoded and an answer encoded, and what gRPC's codec shares with
it (the answer's outputs, the protocol extensions). Nothing here knows HTTP or gRPC."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stevedore_server.base.errors import BadRequest, ModelFailure
from stevedore_server.base.serialization import dumps, loads
from stevedore_server.core.content_types import ContentPlan, checked, plan_of
from stevedore_server.core.inference import Answer, Tensors
from stevedore_server.core.signature import Signature
from stevedore_server.core.tensors import (
    TensorSpec,
    decode_binary_data,
    decode_json_data,
    element_count,
    encode_output,
    input_spec,
    model_input,
)

#: Extensions of both transports (the last two: ``extensions``); REST also has the generate extension.
EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics", "model_configuration"]
HEADER_LENGTH = "inference-header-content-length"


#: The answer's parameter naming the input a single-input model took under another name (``renamed_input``).
RENAMED_INPUT = "renamed_input"


@dataclass(frozen=True)
class Decoded:
    """A decoded inference request: its JSON header, its input arrays (by the model's names), what they become
    for the predictor, the outputs it wants, and the name it gave its one input where the model took it as its
    only input under another name."""

    header: dict[str, Any]
    arrays: dict[str, np.ndarray[Any, Any]]
    content: ContentPlan
    selected: list[str]
    renamed: str | None = None

    def tensors(self) -> Tensors:
        """The request as the inference core takes it."""
        return Tensors(self.arrays, self.content, self.selected, self.renamed)


def decode_request(signature: Signature, header_length: str | None, body: bytes, max_depth: int) -> Decoded:
    header, binary = split_body(body, header_length, max_depth)
    renamed = signature.renamed_input(input_names(header)) if len(signature.inputs) == 1 else None
    arrays = decode_inputs(header, binary, signature, renamed)
    content = content_plan(header, signature, renamed)
    return Decoded(header, arrays, content, requested_outputs(header, signature), renamed)


def input_names(header: dict[str, Any]) -> list[Any]:
    """The names the request gives its inputs (whatever they are: ``decode_inputs`` checks them)."""
    tensors = header.get("inputs")
    if not isinstance(tensors, list):
        return []
    return [tensor.get("name") if type(tensor) is dict else None for tensor in tensors]


def content_plan(header: dict[str, Any], signature: Signature, renamed: str | None = None) -> ContentPlan:
    """What the request's inputs become for the predictor, from the content types it and the model name."""
    request_type = checked(parameters(header, "the request").get("content_type"), "the request")
    input_types = {
        tensor["name"]: checked(parameters(tensor, f"input {tensor['name']!r}").get("content_type"), tensor["name"])
        for tensor in header["inputs"]
    }
    if renamed is not None:  # the model's own name for it
        input_types = {signature.inputs[0].name: input_types[renamed]}
    return plan_of(request_type, input_types, signature.declared_content(), signature.content_type)


def split_body(body: bytes, declared: str | None, max_depth: int) -> tuple[dict[str, Any], bytes]:
    """The JSON inference header and the binary tensor data after it (binary tensor data extension)."""
    binary = b""
    if declared is not None:
        if not (declared.isascii() and declared.strip().isdigit()) or int(declared) > len(body):
            raise BadRequest(f"{HEADER_LENGTH} {declared!r} is not a length within the {len(body)}-byte body")
        body, binary = body[: int(declared)], body[int(declared) :]
    header = loads(body, max_depth)
    if not isinstance(header, dict):
        raise BadRequest("the inference request must be a JSON object")
    parameters(header, "the request")
    return header, binary


def parameters(holder: dict[str, Any], what: str) -> dict[str, Any]:
    found = holder.get("parameters", {})
    if not isinstance(found, dict):
        raise BadRequest(f"{what}: parameters must be an object")
    return found


def decode_inputs(
    header: dict[str, Any], binary: bytes, signature: Signature, renamed: str | None = None
) -> dict[str, np.ndarray[Any, Any]]:
    """The request's inputs by the model's input names (``renamed``: the name the request gave the only one)."""
    tensors = header.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise BadRequest("inputs must be a non-empty list of tensors")
    specs = signature.input_specs(renamed)
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    offset = 0
    for tensor in tensors:
        name, array, used = decode_tensor(tensor, binary, offset, specs)
        if name in arrays:
            raise BadRequest(f"input {name!r} is given twice")
        arrays[name] = array
        offset += used
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data belong to no input")
    missing = [spec.name for spec in signature.inputs if spec.name not in arrays]
    if missing:
        raise BadRequest(f"missing inputs: {', '.join(missing)}")
    return arrays


def decode_tensor(
    tensor: Any, binary: bytes, offset: int, specs: dict[str, TensorSpec]
) -> tuple[str, np.ndarray[Any, Any], int]:
    """One input (by the model's name for it) as the model's datatype and shape, and how many binary bytes it
    used."""
    if not isinstance(tensor, dict):
        raise BadRequest("each input must be an object with name, shape, datatype and data")
    datatype: Any = tensor.get("datatype")  # checked by input_spec
    shape: Any = tensor.get("shape")
    spec = input_spec(tensor.get("name"), datatype, shape, specs)
    name = tensor["name"]  # the request's: its errors name what it sent
    size = parameters(tensor, f"input {name!r}").get("binary_data_size")
    if size is None:
        if "data" not in tensor:
            raise BadRequest(f"input {name!r} has no data")
        flat, used = decode_json_data(name, datatype, tensor["data"], shape), 0
    else:
        if type(size) is not int or size < 0 or offset + size > len(binary) or "data" in tensor:
            raise BadRequest(f"input {name!r}: binary_data_size {size!r} does not fit the binary data")
        flat = decode_binary_data(name, datatype, binary[offset : offset + size], element_count(shape))
        used = size
    return spec.name, model_input(spec, flat, datatype, shape), used


def requested_outputs(header: dict[str, Any], signature: Signature) -> list[str]:
    requested = header.get("outputs")
    if requested is None:
        return signature.select_outputs([])
    if not isinstance(requested, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
    ):
        raise BadRequest("outputs must be a list of objects with a name")
    for output in requested:
        parameters(output, f"output {output['name']!r}")
    return signature.select_outputs([o["name"] for o in requested])


def outputs_of(answer: Answer) -> dict[str, Any]:
    """The answer's result by output name; ModelFailure for a result that does not fit the model's outputs."""
    model = answer.model
    try:
        if model.signature is None:  # the model answered tensors, so it has a signature
            raise TypeError("the model has no tensor outputs")
        return model.signature.results_by_output(answer.result, answer.outputs)
    except TypeError as error:
        raise ModelFailure(model.name, model.version, "predict", error) from error


def encode_response(
    answer: Answer,
    header: dict[str, Any],
    selected: list[str],
    renamed: str | None = None,
    named: tuple[str, str] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The inference response (body and headers): the selected outputs, JSON or binary as asked; its
    ``parameters`` name the input ``renamed`` where the model took the request's one input under another name.
    ``named``: the name and version it gives instead of the model's (a pipeline's)."""
    entry = answer.model
    results = outputs_of(answer)
    signature = entry.signature
    binary_default = parameters(header, "the request").get("binary_data_output") is True
    wanted = {o["name"]: o.get("parameters", {}) for o in header.get("outputs") or []}
    tensors, chunks = [], []
    for name in selected:
        binary = wanted.get(name, {}).get("binary_data", binary_default) is True
        try:
            declared = signature.output_content_type(name) if signature else None
            tensor, raw = encode_output(name, results[name], binary, declared)
        except (TypeError, ValueError) as error:
            raise ModelFailure(entry.name, entry.version, "predict", error) from error
        tensors.append(tensor)
        if raw is not None:
            chunks.append(raw)
    name, version = named or (entry.name, entry.version)
    body: dict[str, Any] = {"model_name": name, "model_version": version, "outputs": tensors}
    if isinstance(header.get("id"), str):
        body["id"] = header["id"]
    if renamed is not None:
        body["parameters"] = {RENAMED_INPUT: renamed}
    json_part = dumps(body)
    if not chunks:
        return json_part, {}
    return json_part + b"".join(chunks), {HEADER_LENGTH: str(len(json_part))}
