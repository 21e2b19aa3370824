"""An estimator's outputs: the methods MLServer's scikit-learn runtime answers by name, whichever it has."""

from __future__ import annotations

from typing import Any

import numpy as np

#: The output of a model whose settings name none (as MLServer's SKLearnModel).
DEFAULT_OUTPUT = "predict"
#: Methods served as outputs, in the order their tensors are listed.
OUTPUT_METHODS = ("predict", "predict_proba", "decision_function", "transform")


def methods_of(model: Any) -> dict[str, Any]:
    """The model's output methods, bound, by name (a Pipeline has those of its last step)."""
    found = {name: getattr(model, name, None) for name in OUTPUT_METHODS}
    return {name: method for name, method in found.items() if callable(method)}


def plain(result: Any) -> Any:
    """A result the server writes: arrays as they are; a sparse matrix dense, a DataFrame or Series its array."""
    if isinstance(result, np.ndarray):
        return result
    if hasattr(result, "toarray"):  # scipy.sparse (a OneHotEncoder's transform)
        return result.toarray()
    if hasattr(result, "to_numpy"):  # pandas (an estimator set to output DataFrames)
        return result.to_numpy()
    return result


def column(result: Any) -> Any:
    """A V2 output as MLServer's runtime gives it: a result of one value a row is a column (``[rows, 1]``)."""
    array = np.asarray(plain(result))
    return array.reshape(-1, 1) if array.ndim == 1 else array
