"""stevedore predict payloads as MLServer ``InferenceRequest``s, and MLServer's responses as stevedore results.

What reaches the model is what MLServer's own codecs would have sent it: each input under the model's name for
it, with its datatype, shape and the content type stevedore decoded it by (``str``, ``base64``, ``datetime``,
``np``), re-encoded by MLServer's codecs; a ``pd`` request as ``PandasCodec`` encodes a DataFrame. A V2 request
reaches the server's core decoded (validated and batched there): this is its faithful re-encoding.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Mapping
from typing import Any

import numpy as np
from mlserver.codecs import NumpyCodec, PandasCodec
from mlserver.types import InferenceRequest, InferenceResponse, Parameters, RequestInput, ResponseOutput

from stevedore_server.base.errors import PluginError


def request_of(payload: Any, inputs: list[dict[str, Any]], content_type: str | None) -> InferenceRequest:
    """The request MLServer would have handed the model for ``payload``: a DataFrame, an object of inputs by
    name, or one input's array (or JSON lists, as the self-test and the stevedore routes give it)."""
    if type(payload).__name__ == "DataFrame":
        return PandasCodec.encode_request(payload)
    declared = {item["name"]: item for item in inputs}
    if isinstance(payload, Mapping):
        encoded = [input_of(name, value, declared.get(name), content_type) for name, value in payload.items()]
    else:
        encoded = [input_of(inputs[0]["name"], payload, inputs[0], content_type)]
    parameters = Parameters(content_type=content_type) if content_type else None
    return InferenceRequest(inputs=encoded, parameters=parameters)


def input_of(name: str, value: Any, declared: dict[str, Any] | None, default: str | None) -> RequestInput:
    array = value if isinstance(value, np.ndarray) else np.asarray(value, dtype=object if texts(value) else None)
    content_type = (declared or {}).get("content_type") or element_type(array) or default
    if array.dtype.kind not in "OUS":
        return NumpyCodec.encode_input(name, as_datatype(array, declared))
    data = [encoded_element(element, content_type) for element in array.ravel().tolist()]
    parameters = Parameters(content_type=content_type) if content_type and content_type != "pd" else None
    return RequestInput(name=name, datatype="BYTES", shape=list(array.shape), data=data, parameters=parameters)


def texts(value: Any) -> bool:
    """Whether JSON lists hold text (NumPy would make fixed-width strings of them, which drop trailing NULs)."""
    while isinstance(value, list) and value:
        value = value[0]
    return isinstance(value, (str, bytes))


def as_datatype(array: np.ndarray[Any, Any], declared: dict[str, Any] | None) -> np.ndarray[Any, Any]:
    """JSON numbers as the input's declared datatype (the V2 path gives that datatype already)."""
    if declared is None:
        return array
    from stevedore_server.core.tensors import DTYPES

    dtype = DTYPES.get(declared["datatype"])
    return array if dtype is None or dtype.kind == "O" else array.astype(dtype)


def element_type(array: np.ndarray[Any, Any]) -> str | None:
    """What stevedore decoded text elements into, told by their type: bytes (``base64``), datetimes."""
    if array.dtype.kind != "O" or not array.size:
        return None
    first = array.flat[0]
    if isinstance(first, bytes):
        return "base64"
    if isinstance(first, datetime.datetime):
        return "datetime"
    return None


def encoded_element(element: Any, content_type: str | None) -> Any:
    if isinstance(element, bytes):
        return base64.b64encode(element).decode("ascii") if content_type == "base64" else element
    if isinstance(element, datetime.datetime):
        return element.isoformat()
    return element


def result_of(response: Any) -> Any:
    """The model's outputs: one output's array, or a dict of arrays by output name."""
    if not isinstance(response, InferenceResponse):
        raise PluginError(f"predict() returned a {type(response).__name__}, not an InferenceResponse")
    outputs = {output.name: output_array(output) for output in response.outputs}
    if len(outputs) == 1:
        return next(iter(outputs.values()))
    return outputs


def output_array(output: ResponseOutput) -> Any:
    """An output's elements in its shape: an array of numbers, or nested lists of text (which the server writes
    as JSON, where an array of objects is not)."""
    if output.datatype != "BYTES":
        return np.asarray(NumpyCodec.decode_output(output))
    elements = [text_of(element) for element in np.asarray(output.data.root, dtype=object).ravel()]
    return np.array(elements, dtype=object).reshape(output.shape).tolist()


def text_of(element: Any) -> Any:
    if isinstance(element, bytes):
        try:
            return element.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(element).decode("ascii")
    return element


def outputs_metadata(response: Any) -> list[dict[str, Any]]:
    """The tensors a response holds, its first dimension variable: the model's outputs when it declares none."""
    if not isinstance(response, InferenceResponse):
        raise PluginError(f"predict() returned a {type(response).__name__}, not an InferenceResponse")
    declared = []
    for output in response.outputs:
        tensor: dict[str, Any] = {"name": output.name, "datatype": output.datatype, "shape": [-1, *output.shape[1:]]}
        content_type = output.parameters.content_type if output.parameters else None
        if content_type in ("str", "base64", "datetime"):
            tensor["content_type"] = content_type
        declared.append(tensor)
    return declared
