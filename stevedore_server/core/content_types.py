"""MLServer's content types on the Open Inference Protocol: what a tensor's elements become for the predictor, and
what an output tells a client's codecs it holds.

A request names a content type in ``parameters.content_type``, for every input (on the request) or for one input
(on the input); a predictor declares the one it wants when a request says none (``content_type`` on the
predictor, or per tensor in ``tensor_inputs``). The input's wins, then the request's, then the tensor's, then the
predictor's; without any, ``np``:

- ``np``: the array, as without content types;
- ``str``: BYTES elements as UTF-8 text (an element that is not UTF-8 is the client's error);
- ``base64``: BYTES elements decoded from base64, as ``bytes``;
- ``datetime``: BYTES elements in ISO 8601, as ``datetime.datetime``;
- ``pd`` (request or predictor only): every input a column of one ``pandas.DataFrame``, each column decoded by
  its own input's content type. pandas is optional: a request for ``pd`` without it is a 400 saying so.

The front end builds a ``ContentPlan`` while decoding the request; the inference core validates the arrays as
they came (the predict schema describes the wire: strings are strings) and only then applies the plan.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stevedore_server.base.errors import BadRequest

NUMPY, STRING, BASE64, DATETIME, PANDAS = "np", "str", "base64", "datetime", "pd"
#: Content types of one tensor's elements.
ELEMENT_TYPES = (NUMPY, STRING, BASE64, DATETIME)
#: Every content type a request or a predictor may name.
CONTENT_TYPES = (*ELEMENT_TYPES, PANDAS)


@dataclass(frozen=True)
class ContentPlan:
    """How validated input arrays become what the predictor receives: the content type of each input's elements
    (``np`` where absent) and whether the inputs form a DataFrame."""

    elements: Mapping[str, str] = field(default_factory=dict)
    frame: bool = False

    def decode(self, arrays: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        """Each input's elements decoded by its content type; BadRequest for an element that is not so."""
        return {name: decode_elements(name, array, self.elements.get(name, NUMPY)) for name, array in arrays.items()}

    def frame_of(self, arrays: Mapping[str, np.ndarray[Any, Any]]) -> Any:
        """The decoded inputs as a DataFrame, one column an input (its rows on the first dimension)."""
        import pandas  # optional: only a request for a DataFrame needs it

        columns = {name: column_of(name, array) for name, array in arrays.items()}
        lengths = {name: len(column) for name, column in columns.items()}
        if len(set(lengths.values())) > 1:
            raise BadRequest(f"the inputs of a 'pd' request are columns of one length; got {lengths}")
        return pandas.DataFrame(columns)


#: The plan of a request that names no content type for a predictor that declares none.
NUMPY_PLAN = ContentPlan()


def checked(value: Any, where: str) -> str | None:
    """A content type a request names, or None: BadRequest for one unknown."""
    if value is None:
        return None
    if value in CONTENT_TYPES:
        return str(value)
    raise BadRequest(f"{where}: unknown content type {value!r}; supported: {', '.join(CONTENT_TYPES)}")


def plan_of(
    request_type: str | None,
    input_types: Mapping[str, str | None],
    declared: Mapping[str, tuple[str, str | None]],
    default: str | None,
) -> ContentPlan:
    """The plan for a request naming ``request_type`` and ``input_types`` (by input name, checked), for a model
    whose inputs are ``declared`` (name to datatype and declared content type) and whose predictor asks for
    ``default``: BadRequest for a content type its input cannot have."""
    frame = request_type == PANDAS or (request_type is None and default == PANDAS)
    elements: dict[str, str] = {}
    for name, (datatype, tensor_type) in declared.items():
        chosen = chosen_type(name, datatype, [input_types.get(name), request_type, tensor_type, default])
        if chosen != NUMPY:
            elements[name] = chosen
    if frame and not pandas_installed():
        raise BadRequest("content type 'pd' needs pandas, which is not installed on this server")
    return ContentPlan(elements, frame) if elements or frame else NUMPY_PLAN


def pandas_installed() -> bool:
    return importlib.util.find_spec("pandas") is not None


def chosen_type(name: str, datatype: str, candidates: list[str | None]) -> str:
    """The first content type of ``candidates`` (the input's, the request's, the tensor's, the predictor's) that
    applies to the input. The input's and the tensor's must fit its datatype; the request's and the predictor's
    apply to the inputs they fit (text types to BYTES) and ``pd`` to none (it is the request's shape)."""
    for position, content_type in enumerate(candidates):
        specific = position in (0, 2)
        if content_type is None or (content_type == PANDAS and not specific):
            continue
        fits = content_type == NUMPY or datatype == "BYTES"
        if specific and content_type == PANDAS:
            raise BadRequest(f"input {name!r}: content type 'pd' is the request's, not an input's")
        if specific and not fits:
            raise BadRequest(f"input {name!r}: content type {content_type!r} needs BYTES, not {datatype}")
        if fits:
            return content_type
    return NUMPY


def decode_elements(name: str, array: np.ndarray[Any, Any], content_type: str) -> np.ndarray[Any, Any]:
    if content_type == NUMPY:
        return array
    decode = ELEMENT_DECODERS[content_type]
    decoded = np.empty(array.shape, dtype=object)
    for index, element in np.ndenumerate(array):
        try:
            decoded[index] = decode(element)
        except (ValueError, TypeError, binascii.Error) as error:
            raise BadRequest(f"input {name!r}: an element is not {content_type!r}: {error}") from None
    return decoded


def as_text(element: Any) -> str:
    if isinstance(element, bytes):
        return element.decode("utf-8")  # a UnicodeDecodeError is a ValueError
    return str(element)


def from_base64(element: Any) -> bytes:
    return base64.b64decode(element, validate=True)


def from_iso(element: Any) -> datetime.datetime:
    return datetime.datetime.fromisoformat(as_text(element))


ELEMENT_DECODERS = {STRING: as_text, BASE64: from_base64, DATETIME: from_iso}


def column_of(name: str, array: np.ndarray[Any, Any]) -> Any:
    """One input as a DataFrame column: a row an element, or a row a list where rows have several."""
    if array.ndim == 0:
        raise BadRequest(f"input {name!r}: a scalar is not a column")
    if array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1):
        return array.reshape(-1)
    return [row.tolist() for row in array]


# -- outputs -------------------------------------------------------------------


def encode_elements(array: np.ndarray[Any, Any], declared: str | None) -> tuple[np.ndarray[Any, Any], str]:
    """A model's output as the elements a tensor holds and their content type: datetimes as ISO 8601 text; where
    the output declares ``base64``, bytes encoded (text is base64 already: what a model answering JSON too
    returns); other text ``str``; numbers ``np``."""
    if array.dtype.kind == "M":
        array = array.astype("datetime64[us]").astype(object)  # nanoseconds would become integers
    if array.dtype.kind == "O" and array.size and all(isinstance(x, datetime.date) for x in array.flat):
        return np.vectorize(lambda stamp: stamp.isoformat(), otypes=[object])(array), DATETIME
    if declared == BASE64 and array.dtype.kind in "OUS":
        return np.vectorize(to_base64, otypes=[object])(array), BASE64
    if array.dtype.kind in "OUS":
        return array, STRING
    return array, NUMPY


def to_base64(element: Any) -> str:
    return base64.b64encode(element).decode("ascii") if isinstance(element, bytes) else str(element)
