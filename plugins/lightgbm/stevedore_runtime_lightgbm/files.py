"""LightGBM text model files: which files are ones, and whether one is whole.

LightGBM's own parser is not safe on a damaged file: on a text model cut short (a partial copy) LightGBM 4
reads past its end and aborts the whole process (``terminate called``), which would take the server down with
the model. So a file is checked here first: its trees must add up to the sizes its header declares and end at
``end of trees``, and a ``parameters:`` section must be closed; a file cut anywhere fails these checks.
"""

from __future__ import annotations

from pathlib import Path

from stevedore_server.base.errors import PluginError

#: ``model.txt`` (``Booster.save_model``'s usual name) and ``model.bst`` (KServe's and MLServer's).
PATTERNS = ("*.txt", "*.bst")
#: How a LightGBM text model begins.
START = b"tree\n"
END_OF_TREES = b"\nend of trees\n"
PARAMETERS, END_OF_PARAMETERS = b"\nparameters:\n", b"\nend of parameters\n"
TREE_SIZES = b"tree_sizes="


def recognizes(path: Path) -> bool:
    """Whether ``path`` (matching ``PATTERNS``) holds a LightGBM text model, or by its name may hold one: a
    ``.bst`` only where its content says so, as XGBoost's models have that name too."""
    if not path.is_file():
        return path.suffix.lower() == ".txt"
    try:
        with path.open("rb") as file:
            return file.read(len(START)) == START
    except OSError:  # unreadable here: not claimed
        return False


def check_whole(content: bytes, path: Path) -> None:
    """PluginError, saying what is missing, unless ``content`` is a whole LightGBM text model."""
    problem = missing_part(content)
    if problem is not None:
        raise PluginError(f"{path} ({len(content)} bytes) is not a whole LightGBM text model: {problem}")


def missing_part(content: bytes) -> str | None:
    if not content.startswith(START):
        return f"it does not begin with {START!r}"
    end = content.find(END_OF_TREES)
    if end < 0:
        return "it has no 'end of trees' line (cut short?)"
    header = content[: content.find(b"\n\n")]
    sizes = [line[len(TREE_SIZES) :] for line in header.splitlines() if line.startswith(TREE_SIZES)]
    if sizes:
        first_tree = content.find(b"Tree=")
        try:
            declared = sum(int(size) for size in sizes[0].split())
        except ValueError:
            return "its header's tree_sizes are not numbers"
        if first_tree < 0 or first_tree + declared != end + 1:
            return "its trees do not add up to the tree_sizes its header declares (cut short or edited?)"
    parameters = content.find(PARAMETERS, end)
    if parameters >= 0 and content.find(END_OF_PARAMETERS, parameters) < 0:
        return "its parameters section has no 'end of parameters' line (cut short?)"
    return bad_tree(content[:end])


def bad_tree(trees: bytes) -> str | None:
    """What makes a tree unsafe to walk, if anything: LightGBM trusts a model's indices, so a feature beyond
    the model's own or a child that is no node (or an earlier one: a loop) reads out of bounds, crashing the
    process, or never ends."""
    header = dict(line.partition(b"=")[::2] for line in trees[: trees.find(b"\n\n")].splitlines())
    try:
        features = int(header.get(b"max_feature_idx", b"")) + 1
    except ValueError:
        return "its header has no max_feature_idx"
    for number, block in enumerate(trees.split(b"\nTree=")[1:]):
        fields = dict(line.partition(b"=")[::2] for line in block.splitlines())
        try:
            problem = bad_nodes(fields, features)
        except ValueError:
            problem = "its fields are not lists of numbers"
        if problem is not None:
            return f"tree {number}: {problem} (damaged or edited?)"
    return None


def bad_nodes(fields: dict[bytes, bytes], features: int) -> str | None:
    leaves = int(fields.get(b"num_leaves", b""))
    if leaves <= 1:
        return None  # a single leaf: no node to walk
    internal = leaves - 1
    split = [int(value) for value in fields.get(b"split_feature", b"").split()]
    if len(split) != internal or not all(0 <= feature < features for feature in split):
        return f"split_feature must be {internal} features below {features}"
    for side in (b"left_child", b"right_child"):
        children = [int(value) for value in fields.get(side, b"").split()]
        if len(children) != internal:
            return f"{side.decode()} must list {internal} children"
        for node, child in enumerate(children):  # a node's child is a later node, or a leaf (~leaf)
            if not (node < child < internal or -leaves <= child < 0):
                return f"{side.decode()} of node {node} is {child}, no later node nor leaf"
    return None
