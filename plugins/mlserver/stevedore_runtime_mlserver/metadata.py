"""A model-settings file's ``inputs`` and ``outputs`` metadata as stevedore's V2 tensors, and the predict schema
and fixture its inputs describe (a fixture of zeros: a model that cannot take them needs ``predict_fixture``)."""

from __future__ import annotations

from typing import Any

from stevedore_server.base.errors import PluginError
from stevedore_server.core.content_types import ELEMENT_TYPES
from stevedore_server.model_files import tensor_schema

#: JSON Schema types of the protocol's datatypes.
LEAVES = {"BOOL": "boolean", "BYTES": "string"} | {
    name: "integer" for name in ("UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64")
}
ZEROS = {"boolean": False, "string": "", "integer": 0, "number": 0.0}


def tensors(metadata: Any, which: str) -> list[dict[str, Any]] | None:
    """The ``inputs`` or ``outputs`` metadata as tensor declarations (None where the file gives none)."""
    if not metadata:
        return None
    if not isinstance(metadata, list) or not all(isinstance(item, dict) for item in metadata):
        raise PluginError(f"model-settings {which} must be a list of tensors (name, datatype, shape)")
    return [tensor(item, which) for item in metadata]


def tensor(item: dict[str, Any], which: str) -> dict[str, Any]:
    if not isinstance(item.get("name"), str) or not isinstance(item.get("datatype"), str):
        raise PluginError(f"model-settings {which}: each tensor needs a name and a datatype, not {item!r}")
    shape = item.get("shape", [-1])
    declared: dict[str, Any] = {"name": item["name"], "datatype": item["datatype"], "shape": shape}
    content_type = (item.get("parameters") or {}).get("content_type")
    if content_type in ELEMENT_TYPES:  # MLServer's others (pd is a request's) are its codecs' business
        declared["content_type"] = content_type
    return declared


def schema_of(inputs: list[dict[str, Any]]) -> dict[str, Any]:
    """The predict payload the inputs take: one input's array, or an object of several by name."""
    if len(inputs) == 1:
        return array_schema(inputs[0])
    properties = {item["name"]: array_schema(item) for item in inputs}
    return {"type": "object", "required": list(properties), "additionalProperties": False, "properties": properties}


def array_schema(item: dict[str, Any]) -> dict[str, Any]:
    return tensor_schema(item["shape"], LEAVES.get(item["datatype"], "number"))


def fixture_of(inputs: list[dict[str, Any]]) -> Any:
    """A payload of zeros (one row where the batch is variable)."""
    if len(inputs) == 1:
        return zeros(inputs[0])
    return {item["name"]: zeros(item) for item in inputs}


def zeros(item: dict[str, Any]) -> Any:
    value: Any = ZEROS[LEAVES.get(item["datatype"], "number")]
    for dim in reversed(item["shape"]):
        value = [value] * (dim if dim >= 0 else 1)
    return value
