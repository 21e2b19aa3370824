"""V2 tensors: datatypes, decoding request inputs (JSON or binary) and encoding outputs."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from stevedore_server.base.errors import BadRequest

from .content_types import encode_elements

#: The protocol's datatypes that NumPy can hold, little-endian as the binary extension defines.
DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
#: NumPy kinds that JSON data may have for each family of datatype.
JSON_KINDS = {"b": "b", "u": "iu", "i": "iu", "f": "iuf", "O": "US"}


def datatype_of(array: np.ndarray[Any, Any]) -> str:
    """The protocol datatype of a result array; raises TypeError for what no tensor can hold."""
    kind = array.dtype.kind
    if kind in "US" or (kind == "O" and all(isinstance(x, (str, bytes)) for x in array.flat)):
        return "BYTES"
    for name, dtype in DTYPES.items():
        if name != "BYTES" and dtype.kind == kind and dtype.itemsize == array.dtype.itemsize:
            return name
    raise TypeError(f"a result of NumPy dtype {array.dtype} is not a tensor")


@dataclass(frozen=True)
class TensorSpec:
    """Name, datatype and shape (-1 for a variable dimension) of one input or output, and the content type the
    predictor declares for it (None: none)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    content_type: str | None = None

    def as_dict(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}
        if self.content_type is not None:
            metadata["parameters"] = {"content_type": self.content_type}
        return metadata

    def accepts_shape(self, shape: list[int]) -> bool:
        if len(shape) != len(self.shape):
            return False
        return all(want in (-1, got) for want, got in zip(self.shape, shape, strict=True))


#: Largest dimension accepted: beyond it NumPy cannot even describe an empty array of that shape.
MAX_DIMENSION = 2**31 - 1


def input_spec(name: Any, datatype: Any, shape: Any, specs: dict[str, TensorSpec]) -> TensorSpec:
    """The model's input ``name``, for an input given as ``datatype`` in ``shape``: BadRequest for an unknown
    input or datatype, or a shape the model does not take."""
    if not isinstance(name, str) or not name:
        raise BadRequest("an input has no name")
    if name not in specs:
        raise BadRequest(f"unknown input {name!r}; the model's inputs are: {', '.join(specs)}")
    if datatype not in DTYPES:
        raise BadRequest(
            f"input {name!r}: unknown or unsupported datatype {datatype!r}; supported: {', '.join(DTYPES)}"
        )
    if not isinstance(shape, list) or not all(type(dim) is int and 0 <= dim <= MAX_DIMENSION for dim in shape):
        raise BadRequest(f"input {name!r}: shape must be a list of integers from 0 to {MAX_DIMENSION}, got {shape!r}")
    spec = specs[name]
    if not spec.accepts_shape(shape):
        raise BadRequest(f"input {name!r}: shape {shape} does not match the model's {list(spec.shape)}")
    return spec


def model_input(spec: TensorSpec, flat: np.ndarray[Any, Any], datatype: str, shape: list[int]) -> np.ndarray[Any, Any]:
    """A decoded input's flat elements (their count checked) as the model's datatype, in ``shape``."""
    try:
        return to_model_datatype(spec.name, flat, datatype, spec.datatype).reshape(shape)
    except ValueError as error:  # a shape NumPy cannot hold, however few its elements
        raise BadRequest(f"input {spec.name!r}: shape {shape} cannot be held: {error}") from None


def decode_json_data(name: str, datatype: str, data: Any, shape: list[int]) -> np.ndarray[Any, Any]:
    """A flat array from the ``data`` of a JSON tensor (flat, or nested as ``shape``), checked against ``datatype``."""
    if not isinstance(data, list):
        data = [data]
    array = json_strings(name, data) if datatype == "BYTES" else json_numbers(name, datatype, data)
    if array.ndim > 1 and list(array.shape) != shape:
        raise BadRequest(f"input {name!r}: nested data of shape {list(array.shape)} does not match shape {shape}")
    if array.size != element_count(shape):
        raise BadRequest(
            f"input {name!r}: shape {shape} holds {element_count(shape)} elements but data has {array.size}"
        )
    if datatype == "BYTES":
        return array.ravel()
    return cast_checked(name, array.ravel(), DTYPES[datatype], datatype)


def json_numbers(name: str, datatype: str, data: list[Any]) -> np.ndarray[Any, Any]:
    try:
        array = np.asarray(data)
    except ValueError:
        raise BadRequest(f"input {name!r}: data is not a rectangular array") from None
    if array.size == 0:
        return array.astype(DTYPES[datatype])
    if array.dtype.kind not in JSON_KINDS[DTYPES[datatype].kind]:
        raise BadRequest(f"input {name!r}: data of NumPy kind {array.dtype} cannot be {datatype}")
    return array


def json_strings(name: str, data: list[Any]) -> np.ndarray[Any, Any]:
    # An object array keeps each string whole (a fixed-width unicode array drops trailing NULs).
    try:
        array = np.array(data, dtype=object)
    except ValueError:
        raise BadRequest(f"input {name!r}: data is not a rectangular array") from None
    if not all(isinstance(item, str) for item in array.flat):
        raise BadRequest(f"input {name!r}: BYTES data must be strings")
    return array


def decode_binary_data(name: str, datatype: str, raw: bytes, count: int) -> np.ndarray[Any, Any]:
    """A flat array from raw little-endian tensor bytes (the binary tensor data extension)."""
    if datatype == "BYTES":
        return decode_binary_bytes(name, raw, count)
    dtype = DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise BadRequest(f"input {name!r}: {len(raw)} bytes do not hold {count} elements of {datatype}")
    return np.frombuffer(raw, dtype=dtype)


def decode_binary_bytes(name: str, raw: bytes, count: int) -> np.ndarray[Any, Any]:
    # Each element: a 4-byte little-endian length, then that many bytes.
    items: list[str | bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BadRequest(f"input {name!r}: truncated BYTES element length")
        (length,) = struct.unpack_from("<I", raw, offset)
        element = raw[offset + 4 : offset + 4 + length]
        if len(element) != length:
            raise BadRequest(f"input {name!r}: truncated BYTES element")
        items.append(text_of(element))
        offset += 4 + length
    if len(items) != count:
        raise BadRequest(f"input {name!r}: shape holds {count} elements but data has {len(items)}")
    return np.array(items, dtype=object)


def text_of(element: bytes) -> str | bytes:
    """A BYTES element as a model receives it: text where it is UTF-8, else the bytes."""
    try:
        return element.decode("utf-8")
    except UnicodeDecodeError:
        return element


def cast_checked(name: str, array: np.ndarray[Any, Any], dtype: np.dtype[Any], datatype: str) -> np.ndarray[Any, Any]:
    """``array`` as ``dtype``, refusing a cast that changes any value's meaning (overflow, truncation, bool)."""
    if array.dtype == dtype:
        return array
    if (array.dtype.kind == "b") != (dtype.kind == "b"):
        raise BadRequest(f"input {name!r}: {array.dtype} data cannot be {datatype}")
    if dtype.kind in "iu" and array.size:
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise BadRequest(f"input {name!r}: non-finite values cannot be {datatype}")
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise BadRequest(f"input {name!r}: values out of the range of {datatype}")
        converted = array.astype(dtype)
        if not np.array_equal(converted, array):
            raise BadRequest(f"input {name!r}: values are not integers, cannot be {datatype}")
        return converted
    with np.errstate(over="ignore"):
        converted = array.astype(dtype)
    if dtype.kind == "f" and np.isinf(converted).sum() != np.isinf(array.astype(np.float64)).sum():
        raise BadRequest(f"input {name!r}: values out of the range of {datatype}")
    return converted


def to_model_datatype(name: str, array: np.ndarray[Any, Any], have: str, want: str) -> np.ndarray[Any, Any]:
    """Convert a decoded input to the model's declared datatype, where no value changes meaning."""
    if have == want:
        return array
    if (have == "BYTES") != (want == "BYTES"):
        raise BadRequest(f"input {name!r}: datatype {have} cannot convert to the model's {want}")
    return cast_checked(name, array, DTYPES[want], want)


def element_count(shape: list[int]) -> int:
    return math.prod(shape)


@dataclass(frozen=True)
class OutputArray:
    """A model's output as a tensor holds it: datatype, elements and their content type."""

    datatype: str
    array: np.ndarray[Any, Any]
    content_type: str


def output_array(result: Any, declared: str | None = None) -> OutputArray:
    """A model's output as a tensor, of the content type the output ``declared`` where it has one; TypeError or
    ValueError for what no tensor may hold."""
    array, content_type = encode_elements(as_array(result), declared)
    datatype = datatype_of(array)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError("the output holds NaN or infinity")
    return OutputArray(datatype, array, content_type)


def as_array(result: Any) -> np.ndarray[Any, Any]:
    """A model's result as an array; text from lists stays whole (NumPy's fixed-width text drops trailing NULs)."""
    array = np.asarray(result)
    if array.dtype.kind in "US" and not isinstance(result, np.ndarray):
        return np.array(result, dtype=object)
    return array


def raw_bytes(datatype: str, array: np.ndarray[Any, Any]) -> bytes:
    """An output's elements as the binary tensor data extension and gRPC's raw contents carry them."""
    return encode_binary_bytes(array) if datatype == "BYTES" else array.astype(DTYPES[datatype]).tobytes()


def encode_output(
    name: str, result: Any, binary: bool, declared: str | None = None
) -> tuple[dict[str, Any], bytes | None]:
    """An output tensor (JSON header and, for binary, its raw bytes) whose datatype and shape follow ``result``;
    its ``parameters.content_type`` tells MLServer's codecs what it holds."""
    output = output_array(result, declared)
    datatype, array = output.datatype, output.array
    tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    tensor["parameters"] = {"content_type": output.content_type}
    if not binary:
        flat = array.ravel().tolist()
        tensor["data"] = [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in flat]
        return tensor, None
    raw = raw_bytes(datatype, array)
    tensor["parameters"]["binary_data_size"] = len(raw)
    return tensor, raw


def encode_binary_bytes(array: np.ndarray[Any, Any]) -> bytes:
    parts = []
    for item in array.ravel():
        element = bytes_of(item)
        parts.append(struct.pack("<I", len(element)) + element)
    return b"".join(parts)


def bytes_of(item: Any) -> bytes:
    """A BYTES output element as bytes: text as UTF-8."""
    return item if isinstance(item, bytes) else str(item).encode("utf-8")
