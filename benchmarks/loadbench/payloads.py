"""Request bodies in each server's format, and the predictions read back from its answers.

Every format carries the same iris rows; ``precision`` says which of the
model's own predictions (for float64 or float32 rows) the answers must equal.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any, Protocol

from .client import Answer

Rows = list[list[float]]
HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_HEADERS = {"Content-Type": "application/json"}
#: The binary tensor datatypes used here: struct format letters of one element.
STRUCT_CODES = {"FP64": "d", "FP32": "f", "INT64": "q", "INT32": "i"}


class UnreadableAnswer(Exception):
    """An answer that holds no predictions in the expected shape."""


@dataclass(frozen=True)
class Request:
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON_HEADERS))


class Payload(Protocol):
    @property
    def precision(self) -> str: ...

    def request(self, rows: Rows) -> Request: ...

    def predictions(self, answer: Answer) -> list[Any]: ...


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def read_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as error:
        raise UnreadableAnswer(f"not JSON ({error}): {body[:200]!r}") from None


def key_path(document: Any, *keys: str | int) -> Any:
    """document[k1][k2]...; an answer without that path is unreadable, not a crash."""
    try:
        for key in keys:
            document = document[key]
    except (KeyError, IndexError, TypeError):
        raise UnreadableAnswer(f"no {'/'.join(map(str, keys))} in {str(document)[:200]}") from None
    return document


@dataclass(frozen=True)
class RowsPayload:
    """A JSON list of rows, answered with ``{"predictions": [...]}``: stevedore's own route and the floor."""

    precision: str = "FP64"

    def request(self, rows: Rows) -> Request:
        return Request(dumps(rows))

    def predictions(self, answer: Answer) -> list[Any]:
        return list(key_path(read_json(answer.body), "predictions"))


@dataclass(frozen=True)
class V1Payload:
    """KServe's V1 protocol: ``{"instances": rows}`` answered with ``{"predictions": [...]}``."""

    precision: str = "FP64"

    def request(self, rows: Rows) -> Request:
        return Request(dumps({"instances": rows}))

    def predictions(self, answer: Answer) -> list[Any]:
        return list(key_path(read_json(answer.body), "predictions"))


def v2_input(rows: Rows, datatype: str) -> dict[str, Any]:
    return {"name": "input-0", "shape": [len(rows), len(rows[0])], "datatype": datatype}


@dataclass(frozen=True)
class V2JsonPayload:
    """The Open Inference Protocol with the tensor data in JSON."""

    precision: str = "FP64"

    def request(self, rows: Rows) -> Request:
        tensor = v2_input(rows, self.precision) | {"data": [value for row in rows for value in row]}
        return Request(dumps({"inputs": [tensor]}))

    def predictions(self, answer: Answer) -> list[Any]:
        return list(key_path(read_json(answer.body), "outputs", 0, "data"))


@dataclass(frozen=True)
class V2BinaryPayload:
    """The Open Inference Protocol's binary tensor extension, for the input and the output.

    The body is a JSON header, then the raw little-endian tensor bytes; the
    ``Inference-Header-Content-Length`` header says where the JSON ends.
    """

    precision: str = "FP64"

    def request(self, rows: Rows) -> Request:
        flat = [value for row in rows for value in row]
        raw = struct.pack(f"<{len(flat)}{STRUCT_CODES[self.precision]}", *flat)
        tensor = v2_input(rows, self.precision) | {"parameters": {"binary_data_size": len(raw)}}
        header = dumps({"inputs": [tensor], "outputs": [{"name": "output-0", "parameters": {"binary_data": True}}]})
        headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
        return Request(header + raw, headers)

    def predictions(self, answer: Answer) -> list[Any]:
        length = answer.headers.get(HEADER_LENGTH)
        if length is None or not length.isdigit():
            raise UnreadableAnswer(f"no {HEADER_LENGTH} header in an answer of {len(answer.body)} bytes")
        output = key_path(read_json(answer.body[: int(length)]), "outputs", 0)
        code = STRUCT_CODES.get(key_path(output, "datatype"))
        size = key_path(output, "parameters", "binary_data_size")
        raw = answer.body[int(length) : int(length) + size]
        if code is None or len(raw) != size or size % struct.calcsize(code):
            raise UnreadableAnswer(f"cannot read output {str(output)[:200]} from {len(raw)} bytes")
        return list(struct.unpack(f"<{size // struct.calcsize(code)}{code}", raw))
