"""The Open Inference Protocol's messages as the payload log records them: its JSON form, for both transports.

A REST body without binary data is its JSON as sent. With binary tensor data
(``Inference-Header-Content-Length``), and for gRPC messages, each tensor
becomes the JSON the protocol would carry: ``name``, ``datatype``, ``shape``
and its elements as a flat ``data`` list (``BYTES`` elements as text), with the
``binary_data_size`` parameter left out. These run on the payload log's
thread, never on the request path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stevedore_server.base.errors import StevedoreError
from stevedore_server.base.redaction import Unparsed
from stevedore_server.base.serialization import loads
from stevedore_server.core.tensors import decode_binary_data, element_count

from .grpc_codec import CONTENTS_FIELD


def rest_body(body: bytes, header_length: str | None) -> Any:
    """A REST inference request or response (its JSON header, and binary data after it if any) as JSON; a body
    the route refused as malformed, as its text (``Unparsed``: withheld when fields are redacted)."""
    try:
        return rest_json(body, header_length)
    except (StevedoreError, ValueError, TypeError, KeyError, AttributeError):
        return Unparsed(body.decode("utf-8", "replace"))


def rest_json(body: bytes, header_length: str | None) -> Any:
    if header_length is None:
        return loads(body)
    size = int(header_length)
    header = loads(body[:size])
    offset = size
    for key in ("inputs", "outputs"):
        for tensor in header.get(key) or []:
            offset += with_binary_data(tensor, body, offset)
    return header


def with_binary_data(tensor: dict[str, Any], body: bytes, offset: int) -> int:
    """``tensor``'s binary data from ``body`` at ``offset`` put in its ``data``; how many bytes it took."""
    parameters = tensor.get("parameters") or {}
    size = parameters.pop("binary_data_size", None)
    if size is None:
        return 0
    if not parameters:
        tensor.pop("parameters", None)
    raw = body[offset : offset + size]
    tensor["data"] = elements(
        decode_binary_data(tensor["name"], tensor["datatype"], raw, element_count(tensor["shape"]))
    )
    return int(size)


def grpc_request(message: Any) -> dict[str, Any]:
    """A ``ModelInferRequest`` as the REST request it stands for."""
    body = common(message)
    raw = list(message.raw_input_contents)
    body["inputs"] = [tensor(item, raw[index] if raw else None) for index, item in enumerate(message.inputs)]
    if message.outputs:
        body["outputs"] = [{"name": output.name} for output in message.outputs]
    return body


def grpc_response(message: Any) -> dict[str, Any]:
    """A ``ModelInferResponse`` as the REST response it stands for."""
    body = common(message)
    raw = list(message.raw_output_contents)
    body["outputs"] = [tensor(item, raw[index] if raw else None) for index, item in enumerate(message.outputs)]
    return body


def common(message: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model_name": message.model_name}
    if message.model_version:
        body["model_version"] = message.model_version
    if message.id:
        body["id"] = message.id
    if message.parameters:
        body["parameters"] = parameters_of(message.parameters)
    return body


def tensor(message: Any, raw: bytes | None) -> dict[str, Any]:
    shape = list(message.shape)
    body: dict[str, Any] = {"name": message.name, "datatype": message.datatype, "shape": shape}
    kept = {key: value for key, value in parameters_of(message.parameters).items() if key != "binary_data_size"}
    if kept:
        body["parameters"] = kept
    try:
        body["data"] = data_of(message, raw, shape)
    except (StevedoreError, ValueError):  # contents the route refused as malformed: the tensor without them
        pass
    return body


def data_of(message: Any, raw: bytes | None, shape: list[int]) -> list[Any]:
    if raw is not None:
        return elements(decode_binary_data(message.name, message.datatype, raw, element_count(shape)))
    field = CONTENTS_FIELD.get(message.datatype)
    values = list(getattr(message.contents, field)) if field else []
    return [text(value) for value in values] if field == "bytes_contents" else values


def parameters_of(parameters: Any) -> dict[str, Any]:
    """gRPC's ``InferParameter`` map as JSON values."""
    return {
        key: getattr(value, value.WhichOneof("parameter_choice") or "string_param") for key, value in parameters.items()
    }


def elements(array: np.ndarray[Any, Any]) -> list[Any]:
    flat = array.ravel()
    if flat.dtype == object:
        return [text(item) for item in flat]
    values: list[Any] = flat.tolist()
    return values


def text(item: Any) -> Any:
    return item.decode("utf-8", "replace") if isinstance(item, bytes) else item
