"""What an estimator takes: rows of its ``n_features_in_`` numbers, as an array, or as a DataFrame of its
``feature_names_in_`` columns where it was fitted on one; the schema and fixture that say so."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from stevedore_server.base.errors import PluginError
from stevedore_server.model_files import rows_schema

logger = logging.getLogger("stevedore.runtime.sklearn")

PANDAS = "pd"
#: A V2 input of a ``pd`` model: one column, as MLServer's pandas codec sends it (``[rows, 1]``).
COLUMN_SHAPE = [-1, 1]


@dataclass(frozen=True)
class Features:
    """The features a fitted estimator says it takes (None where it does not say)."""

    width: int | None
    names: tuple[str, ...] | None

    @classmethod
    def of(cls, model: Any) -> Features:
        # A Pipeline answers for its first step; one that takes text or DataFrames of its own has neither.
        width = getattr(model, "n_features_in_", None)
        names = getattr(model, "feature_names_in_", None)
        return cls(
            int(width) if isinstance(width, (int, np.integer)) else None,
            tuple(str(name) for name in names) if names is not None else None,
        )

    def describe(self) -> str:
        if self.names:
            return f"rows of {len(self.names)} numbers: {', '.join(self.names)}"
        return f"rows of {self.width} numbers"

    def schema(self) -> dict[str, Any]:
        """Rows of ``width`` numbers."""
        return rows_schema(self.width) | {"description": self.describe()}

    def fixture(self) -> list[list[float]]:
        return [[0.0] * (self.width or 0)]


def converter(features: Features, frame: bool, numbers: bool) -> Callable[[Any], Any]:
    """What turns a valid payload into the estimator's input: for a model fitted on a DataFrame (``frame``), a
    DataFrame of its columns; for rows of numbers (``numbers``: the derived schema), a float array; else (a
    schema of the settings) the payload as it is."""
    if frame:
        return frame_maker(list(features.names or ()))
    return to_array if numbers else unchanged


def frame_maker(columns: list[str]) -> Callable[[Any], Any]:
    import pandas

    def to_frame(payload: Any) -> Any:
        if isinstance(payload, pandas.DataFrame):  # V2's "pd": the columns by the inputs' names
            return payload
        if isinstance(payload, dict):  # several V2 inputs, or the stevedore route's object of columns
            return pandas.DataFrame({name: np.asarray(payload[name]).reshape(-1) for name in columns})
        return pandas.DataFrame(payload, columns=columns)  # rows: each column's type inferred, as read_csv's

    return to_frame


def unchanged(payload: Any) -> Any:
    return payload


def to_array(payload: Any) -> Any:
    # As the hand-written plugin: an array of float64 passes as it is, no copy.
    return np.asarray(payload, dtype=np.float64)


def wants_frame(features: Features, content_type: str | None, table: str) -> bool:
    """Whether the estimator gets DataFrames: it was fitted on one and pandas is here, or the settings ask
    for MLServer's ``content_type = "pd"``."""
    if features.names is None:
        if content_type == PANDAS:
            raise PluginError(
                f'content_type "pd" needs a model fitted on a DataFrame (it has no feature_names_in_, so no '
                f"column names): remove content_type from {table}"
            )
        return False
    if importlib.util.find_spec("pandas") is None:
        if content_type == PANDAS:
            raise PluginError('content_type "pd" needs pandas: pip install "stevedore-runtime-sklearn[pandas]"')
        logger.warning("the model was fitted on a DataFrame, and pandas is not installed: it gets arrays")
        return False
    return True


def column_inputs(features: Features) -> list[dict[str, Any]]:
    """The V2 inputs of a ``pd`` model: a column a feature."""
    return [{"name": name, "datatype": "FP64", "shape": COLUMN_SHAPE} for name in features.names or ()]


def columns_schema(features: Features) -> dict[str, Any]:
    """The payload of a ``pd`` model: rows, or an object of columns (what its V2 inputs validate as)."""
    column = {"type": "array", "minItems": 1, "items": {"anyOf": [{"type": "number"}, rows_schema(1)["items"]]}}
    names = list(features.names or ())
    by_name = {
        "type": "object",
        "properties": dict.fromkeys(names, column),
        "required": names,
        "additionalProperties": False,
    }
    return {"anyOf": [rows_schema(len(names)), by_name], "description": features.describe() + ", or their columns"}
