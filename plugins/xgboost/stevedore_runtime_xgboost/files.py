"""Which files are XGBoost models: by their content where they are here, by their names where they are not
(the last segment of a remote URI).

A ``.json`` file is XGBoost's only where it holds a ``learner`` (a folder's ``schema.json`` or a settings file
is not); ``.bst`` is also LightGBM's name in KServe's folders, so a ``.bst`` holding a LightGBM text model is
left to that runtime.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

#: The names XGBoost models are saved under: JSON and UBJ (``save_model`` picks by the extension), and the
#: older names (``model.bst`` in KServe's and MLServer's folders), which XGBoost now saves as UBJ.
PATTERNS = ("*.json", "*.ubj", "*.bst", "*.model")
#: How XGBoost's JSON models begin: an object whose first key is ``learner``.
JSON_START = re.compile(rb'\A\s*\{\s*"learner"\s*:')
#: How a LightGBM text model begins.
LIGHTGBM_START = b"tree\n"
#: Bytes read to tell (every signature above lies in them).
HEAD = 64


def recognizes(path: Path) -> bool:
    """Whether ``path`` (matching ``PATTERNS``) holds an XGBoost model, or by its name may hold one."""
    suffix = path.suffix.lower()
    if not path.is_file():
        return suffix != ".json" or named_for_xgboost(path.name)
    head = read_head(path)
    if suffix == ".json":
        return JSON_START.match(head) is not None
    if suffix == ".ubj":
        return True  # no other library writes .ubj: a damaged one fails with XGBoost's own reason
    return not head.startswith(LIGHTGBM_START)


def named_for_xgboost(name: str) -> bool:
    """A remote ``.json`` is taken for a model only by a telling name: ``model.json``, ``*xgb*.json``."""
    lowered = name.lower()
    return lowered == "model.json" or "xgb" in lowered


def read_head(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            return file.read(HEAD)
    except OSError:  # unreadable here: judged by its name, and reading it will then say why
        return b""


def bad_trees(content: bytes) -> str | None:
    """What makes a JSON model's trees unsafe to walk, if anything: XGBoost trusts a model's indices, so a
    feature beyond the model's own or a child that is no later node reads out of bounds (crashing the process) or
    loops. A UBJ model is left to XGBoost (and to the read in a process of its own before it)."""
    if JSON_START.match(content[:HEAD]) is None:
        return None
    try:
        learner = json.loads(content)["learner"]
        features = int(learner["learner_model_param"]["num_feature"])
        booster = learner["gradient_booster"]
        trees = (booster.get("gbtree", booster))["model"]["trees"]
    except (ValueError, KeyError, TypeError):
        return None  # XGBoost says what is wrong with it, as it reads it
    for number, tree in enumerate(trees):
        problem = bad_nodes(tree, features)
        if problem is not None:
            return f"tree {number}: {problem} (damaged or edited?)"
    return None


def bad_nodes(tree: dict[str, Any], features: int) -> str | None:
    left, right, splits = tree.get("left_children"), tree.get("right_children"), tree.get("split_indices")
    if not all(isinstance(values, list) for values in (left, right, splits)):
        return "its nodes are not lists"
    nodes = len(left)
    if len(right) != nodes or len(splits) != nodes:
        return "its node lists differ in length"
    for node in range(nodes):
        children = (left[node], right[node])
        if children == (-1, -1):
            continue  # a leaf
        if not all(isinstance(child, int) and node < child < nodes for child in children):
            return f"node {node}'s children {list(children)} are not later nodes"
        if not (isinstance(splits[node], int) and 0 <= splits[node] < features):
            return f"node {node} splits on feature {splits[node]}, not one of the model's {features}"
    return None
