"""An MLflow signature's inputs as stevedore's: the predict schema, a fixture, the V2 tensors, and what a valid
payload becomes for ``PyFuncModel.predict``.

The signature's inputs arrive as MLflow writes them in ``MLmodel`` (``Schema.to_dict()``): tensors
(``{"type": "tensor", "tensor-spec": {"dtype", "shape"}, "name"?}``) or named columns (``{"type": "double",
"name", "required"}``). Tensors are served as they are: one unnamed tensor is the payload itself (rows of numbers,
V2 input ``input-0``), named ones an object of them by name. Columns are an object of columns (each a list, a
value a row), a V2 input each, which become one pandas DataFrame as MLServer's ``content_type = "pd"`` makes it.
A signature of any other kind (arrays or objects in columns, binary or datetime columns) says too little here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stevedore_server.model_files import tensor_schema

#: The V2 name of a model's one unnamed tensor (as the core names the input it derives).
UNNAMED = "input-0"
#: MLflow's column types that map to one NumPy dtype each.
COLUMN_DTYPES = {
    "double": "float64",
    "float": "float32",
    "long": "int64",
    "integer": "int32",
    "boolean": "bool",
    "string": "object",
}


@dataclass(frozen=True)
class Field:
    """One tensor or column of a signature."""

    name: str
    dtype: np.dtype[Any]
    #: The tensor's shape (-1: any size); a column's is ``(-1,)``, a value a row.
    shape: tuple[int, ...]

    @property
    def json_type(self) -> str:
        return JSON_TYPES[self.dtype.kind]

    @property
    def datatype(self) -> str:
        """Its V2 datatype."""
        kind = self.dtype.kind
        if kind in NUMBER_PREFIXES:
            return f"{NUMBER_PREFIXES[kind]}{self.dtype.itemsize * 8}"
        return "BOOL" if kind == "b" else "BYTES"

    def tensor(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}
        if self.datatype == "BYTES":
            spec["content_type"] = "str"  # text columns and string tensors hold UTF-8 text
        return spec

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of its values: nested arrays, one level a dimension (the first, rows: at least one)."""
        return tensor_schema(self.shape, self.json_type)

    def zeros(self) -> Any:
        """A value of its shape, one row where the size is free, of zeros (False, "")."""
        zero = ZEROS[self.dtype.kind]
        return np.full([max(size, 1) for size in self.shape], zero, dtype=object).tolist() if self.shape else zero

    def array(self, value: Any) -> np.ndarray[Any, Any]:
        return np.asarray(value, dtype=self.dtype)


#: JSON Schema types and zeros by NumPy dtype kind (float, signed, unsigned, bool, text, object).
JSON_TYPES = {"f": "number", "i": "integer", "u": "integer", "b": "boolean"} | dict.fromkeys("USO", "string")
ZEROS: dict[str, Any] = {"f": 0.0, "i": 0, "u": 0, "b": False} | dict.fromkeys("USO", "")
NUMBER_PREFIXES = {"f": "FP", "i": "INT", "u": "UINT"}


@dataclass(frozen=True)
class Inputs:
    """A model's inputs as its signature declares them."""

    fields: tuple[Field, ...]
    #: Named columns of a DataFrame (else tensors).
    columns: bool
    #: The columns a payload may leave out.
    optional: frozenset[str] = frozenset()

    @property
    def single(self) -> bool:
        """One unnamed tensor: the payload is the tensor itself."""
        return not self.columns and len(self.fields) == 1 and self.fields[0].name == UNNAMED

    def predict_schema(self) -> dict[str, Any]:
        if self.single:
            return self.fields[0].schema()
        properties = {field.name: field.schema() for field in self.fields}
        required = [field.name for field in self.fields if field.name not in self.optional]
        return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}

    def zeros(self) -> Any:
        if self.single:
            return self.fields[0].zeros()
        return {field.name: field.zeros() for field in self.fields}

    def tensor_inputs(self) -> list[dict[str, Any]]:
        return [field.tensor() for field in self.fields]

    def data_of(self, payload: Any) -> Any:
        """What ``PyFuncModel.predict`` takes for a valid payload (or the DataFrame a V2 request became)."""
        if self.columns:
            return self.frame_of(payload)
        if self.single:
            return self.fields[0].array(payload)
        return {field.name: field.array(payload[field.name]) for field in self.fields if field.name in payload}

    def frame_of(self, payload: Any) -> Any:
        import pandas  # a dependency of the runtime, imported when a model is served, not when it is claimed

        frame = payload if isinstance(payload, pandas.DataFrame) else pandas.DataFrame(payload)
        # JSON has one kind of number: a float column given whole numbers must still be a float column.
        return frame.astype({field.name: field.dtype for field in self.fields if field.name in frame.columns})

    def example_of(self, example: Any) -> Any:
        """The payload of MLflow's input example (a DataFrame, an array or a dict of arrays), or None."""
        if self.columns:
            return self.columns_of(example)
        if self.single:
            return np.asarray(example).tolist() if isinstance(example, (np.ndarray, list)) else None
        if isinstance(example, Mapping):
            return {field.name: np.asarray(example[field.name]).tolist() for field in self.fields}
        return None

    def columns_of(self, example: Any) -> Any:
        import pandas

        if isinstance(example, Mapping):
            example = pandas.DataFrame(dict(example))
        if not isinstance(example, pandas.DataFrame):
            return None
        return {field.name: example[field.name].tolist() for field in self.fields if field.name in example.columns}


def inputs_of(entries: Sequence[Mapping[str, Any]]) -> Inputs | None:
    """The inputs of a signature's ``inputs`` (MLflow's JSON of them); None where this runtime cannot say."""
    if not entries:
        return None
    if all(entry.get("type") == "tensor" for entry in entries):
        return tensors_of(entries)
    return columns_of(entries)


def tensors_of(entries: Sequence[Mapping[str, Any]]) -> Inputs | None:
    names = [entry.get("name") for entry in entries]
    if len(entries) > 1 and not all(isinstance(name, str) and name for name in names):
        return None  # several tensors are told apart by name only
    fields = []
    for entry, name in zip(entries, names, strict=True):
        spec = entry.get("tensor-spec")
        if not isinstance(spec, Mapping):
            return None
        dtype, shape = known_dtype(spec.get("dtype")), shape_of(spec.get("shape"))
        if dtype is None or shape is None:
            return None
        fields.append(Field(str(name or UNNAMED), dtype, shape))
    return Inputs(tuple(fields), columns=False)


def columns_of(entries: Sequence[Mapping[str, Any]]) -> Inputs | None:
    fields, optional = [], set()
    for entry in entries:
        name, dtype = entry.get("name"), known_dtype(COLUMN_DTYPES.get(str(entry.get("type"))))
        if not isinstance(name, str) or not name or dtype is None:
            return None  # unnamed columns are told apart by position, which a JSON object has not
        fields.append(Field(name, dtype, (-1,)))
        if entry.get("required") is False:
            optional.add(name)
    return Inputs(tuple(fields), columns=True, optional=frozenset(optional))


def known_dtype(name: Any) -> np.dtype[Any] | None:
    """The NumPy dtype ``name`` names, where it is one JSON can carry (numbers, booleans, text)."""
    try:
        dtype = np.dtype(name) if isinstance(name, str) else None
    except TypeError:
        return None
    return dtype if dtype is not None and dtype.kind in JSON_TYPES else None


def outputs_of(entries: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]] | None:
    """The V2 output of a signature of one output (a tensor or a column), named as the core names it; None
    where there are several or it says too little (then the self-test's result tells)."""
    if not entries or len(entries) != 1:
        return None
    entry = entries[0]
    spec = entry.get("tensor-spec")
    if entry.get("type") == "tensor" and isinstance(spec, Mapping):
        dtype, shape = known_dtype(spec.get("dtype")), shape_of(spec.get("shape"))
    else:
        dtype, shape = known_dtype(COLUMN_DTYPES.get(str(entry.get("type")))), (-1,)
    if dtype is None or not shape or shape[0] != -1:
        return None  # only an output of one item a row has a shape the self-test's one row cannot mislead
    return [Field("output-0", dtype, shape).tensor()]


def shape_of(value: Any) -> tuple[int, ...] | None:
    """A tensor spec's shape (a list in ``MLmodel``, a tuple from ``Schema.to_dict()``), or None."""
    if isinstance(value, (list, tuple)) and all(type(size) is int and size >= -1 for size in value):
        return tuple(value)
    return None
