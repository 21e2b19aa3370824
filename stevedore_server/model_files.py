"""The runtime contract: a model file (or folder) served with no code.

A runtime turns a file that a framework saved into a ``Predictor``: it is an
entry point of the ``stevedore.runtimes`` group naming a ``FilePredictor``
subclass (or any callable taking a ``ModelFile`` and returning a
``Predictor``), and the entry point's name is the runtime's name
(``sklearn``, ``xgboost``, ...). The server makes one predictor per model
file its settings declare (``[models.NAME] uri = ...``, ``--model
NAME=URI``, an MLServer folder) and then loads, self-tests and serves it
exactly as a hand-written one.

A ``FilePredictor`` subclass implements ``open`` (the model object from the
local file or folder), ``derive`` (what the loaded model says of its input,
to make its schema and fixture) and ``run_predict``::

    class JoblibRuntime(FilePredictor):
        patterns = ("*.joblib",)

        def open(self, path):
            self.require_trust("a joblib file")
            return joblib.load(self.artifact_in(path))

        def derive(self):
            width = self.model.n_features_in_
            return Derived(predict_schema=rows_schema(width), predict_fixture=[[0.0] * width])

        def run_predict(self, X):
            return self.model.predict(X)
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stevedore_server.base.errors import PluginError, UnsafeFormat
from stevedore_server.predictor import Predictor

#: The entry-point group of runtimes.
RUNTIMES_GROUP = "stevedore.runtimes"
#: Formats that run no code when they are read, which the refusal of one that does suggests.
SAFE_FORMATS = "skops (scikit-learn), ONNX, XGBoost JSON or UBJ, LightGBM text"


@dataclass(frozen=True)
class ModelFile:
    """One model to serve from a file or folder: what a runtime is handed."""

    name: str
    version: str
    #: The ``stevedore.runtimes`` entry point's name.
    runtime: str
    #: An absolute local path, or a ``file://``, ``http(s)://``, ``s3://``, ``gs://``, ``az://`` or ``hf://`` URI.
    uri: str
    #: Where remote artifacts are downloaded (``<state dir>/model-cache``).
    cache_dir: Path
    #: The artifact's pinned SHA-256 (hex): another content fails the model, with both hashes.
    sha256: str | None = None
    #: Formats that run code when read (pickle, joblib) may be read: ``trust = true`` or ``--allow-pickle`` (a
    #: ``sha256`` pin trusts the file it pins: ``FilePredictor.require_trust``).
    trusted: bool = False
    #: The model's default output, a runtime's own name for it (scikit-learn: ``predict_proba``).
    output: str | None = None
    #: What V2 inputs become where a request names no content type (as ``Predictor.content_type``).
    content_type: str | None = None
    #: JSON files of the predict schema and a valid payload, where the artifact says too little.
    predict_schema: Path | None = None
    predict_fixture: Path | None = None
    #: The runtime's own options (``[models.NAME.options]``).
    options: Mapping[str, Any] = field(default_factory=dict)

    def fetch(self) -> Path:
        """The artifact as a local file or folder: downloaded into the cache once, its pin checked."""
        from stevedore_server.base.storage import fetch

        return fetch(self.uri, self.cache_dir, self.sha256)

    @property
    def shown(self) -> str:
        """The URI as messages, logs and the catalogue show it: no user, password or query (a signature)."""
        from stevedore_server.base.storage import public

        return public(self.uri)

    def describe(self) -> str:
        return f"{self.runtime} model file {self.shown}"

    def as_json(self) -> dict[str, Any]:
        """The spec as JSON values (a worker process's orders are JSON); ``of_json`` reads it back."""
        values = asdict(self)
        for key in PATHS:
            values[key] = None if values[key] is None else str(values[key])
        return values

    @classmethod
    def of_json(cls, values: Mapping[str, Any]) -> ModelFile:
        paths = {key: None if values[key] is None else Path(values[key]) for key in PATHS}
        return cls(**(dict(values) | paths))


#: The fields of a ``ModelFile`` that are paths.
PATHS = ("cache_dir", "predict_schema", "predict_fixture")


#: JSON Schema types of NumPy's kinds of element (``numpy.dtype.kind``).
JSON_TYPES = {"b": "boolean", "i": "integer", "u": "integer", "f": "number", "U": "string", "S": "string"}


def array_schema(result: Any) -> dict[str, Any] | None:
    """The JSON Schema of a result as an array gives it (its dimensions nested, its elements' type), for
    ``Derived.output_schema``; None where the array says too little (objects, no dimension)."""
    array = np.asarray(result)
    kind = JSON_TYPES.get(array.dtype.kind)
    if kind is None or array.ndim == 0:
        return None
    schema: dict[str, Any] = {"type": kind}
    for _ in range(array.ndim):
        schema = {"type": "array", "items": schema}
    return schema


@dataclass(frozen=True)
class Derived:
    """What a loaded model says of itself: anything left None is taken from the settings or the self-test."""

    #: The JSON Schema of a predict payload (for a table: an array of rows of numbers).
    predict_schema: dict[str, Any] | None = None
    #: A valid payload, the self-test's input.
    predict_fixture: Any = None
    #: Open Inference Protocol tensors (None: derived from an array schema and the self-test's result).
    tensor_inputs: list[dict[str, Any]] | None = None
    tensor_outputs: list[dict[str, Any]] | None = None
    #: The outputs a V2 request that names none gets (None: every output).
    default_outputs: list[str] | None = None
    description: str | None = None
    #: The JSON Schema of predict's answer (``Predictor.output_schema``; ``array_schema`` makes it of an array).
    output_schema: dict[str, Any] | None = None


class FilePredictor(Predictor):
    """A predictor made from a ``ModelFile`` by a runtime (see the module's docstring)."""

    #: Glob patterns of the file names this runtime reads (``claims``, ``artifact_in``).
    patterns: tuple[str, ...] = ()
    #: Files whose presence marks a folder as this runtime's (``MLmodel``).
    markers: tuple[str, ...] = ()
    #: The library parses the file natively, where a damaged or crafted file can crash or hang the process: the
    #: server reads it in a child process first (``plugins.probe``), so that such a file fails its model only.
    read_aside_first: bool = False

    def __init__(self, spec: ModelFile) -> None:
        super().__init__(name=spec.name, version=spec.version, description=spec.describe())
        if spec.content_type is not None:
            self.content_type = spec.content_type
        self.spec = spec
        self.path: Path | None = None
        self.derived: Derived | None = None

    # -- what a runtime implements ---------------------------------------------

    @classmethod
    def claims(cls, path: Path) -> bool:
        """Whether this runtime reads ``path``: a folder with a marker or one file it recognizes, or a file it
        recognizes; a path that does not exist (a remote URI's last segment) is judged by its name."""
        if path.is_dir():
            return any((path / marker).exists() for marker in cls.markers) or len(cls.matching(path)) == 1
        return cls.matches(path.name) and cls.recognizes(path)

    @classmethod
    def recognizes(cls, path: Path) -> bool:
        """Whether the file ``path``, named as ``patterns`` say, holds this runtime's format (it may not exist
        here: a remote URI's name). By default the name says so; a runtime whose names are shared with another
        format (``.bst``, ``.json``) looks inside."""
        return True

    def open(self, path: Path) -> Any:
        """The model object read from the local file or folder ``path``."""
        raise NotImplementedError(f"{type(self).__name__} must implement open")

    def derive(self) -> Derived:
        """What the loaded ``self.model`` says of its input and output (default: nothing)."""
        return Derived()

    # -- what a runtime calls --------------------------------------------------

    @classmethod
    def matches(cls, name: str) -> bool:
        return any(fnmatch.fnmatch(name.lower(), pattern) for pattern in cls.patterns)

    @classmethod
    def matching(cls, folder: Path) -> list[Path]:
        """The files of ``folder`` this runtime recognizes."""
        found = (path for path in folder.iterdir() if path.is_file() and cls.matches(path.name))
        return sorted(path for path in found if cls.recognizes(path))

    def artifact_in(self, path: Path) -> Path:
        """The file to read: ``path`` itself, or the one file of the folder ``path`` that ``patterns`` match."""
        if not path.is_dir():
            return path
        found = self.matching(path)
        if len(found) != 1:
            which = ", ".join(item.name for item in found) or "none"
            raise PluginError(
                f"{path} must hold exactly one file matching {', '.join(self.patterns)} (found: {which}); "
                f"point uri at the file"
            )
        return found[0]

    @property
    def table(self) -> str:
        """The model's table in the settings file, for errors that say what to set."""
        return f"[models.{self.name}]"

    def chosen_output(self, outputs: Sequence[str], default: str | None) -> str | None:
        """The output the settings choose (``output``), else ``default``: PluginError where the model has no such
        output, naming those it has."""
        chosen = self.spec.output or default
        if chosen is not None and chosen not in outputs:
            has = ", ".join(outputs) or "none"
            raise PluginError(
                f"the model has no {chosen!r} output (it has: {has}); set `output` in {self.table} to one of them"
            )
        return chosen

    def require_trust(self, what: str, safe_formats: str = SAFE_FORMATS, pin_covers_it: bool = True) -> None:
        """Refuse to read ``what`` (a format that runs code when read) unless the operator allowed it: ``trust``,
        ``--allow-pickle``, or a ``sha256`` pin where the pinned file is all that is read (``pin_covers_it``: not
        a folder, nor a file whose neighbours are read too). The error says what to do."""
        pinnable = pin_covers_it and self.path is not None and self.path.is_file()
        if self.spec.trusted or (pinnable and self.spec.sha256 is not None):
            return
        pin = 'pin its content with `sha256 = "..."` or ' if pinnable else ""
        raise UnsafeFormat(
            f"{what} runs code when it is loaded, and {self.spec.shown} is not trusted: {pin}set `trust = true` "
            f"in [models.{self.name}], or start the server with --allow-pickle (STEVEDORE_ALLOW_PICKLE=true) if "
            f"only you can write the model store; or save the model in a format that runs no code ({safe_formats})"
        )

    # -- the Predictor contract, from the file ---------------------------------

    def load(self) -> None:
        self.opened()

    def opened(self) -> Derived:
        """Fetch, open and derive, once (the schemas are asked for before ``load``)."""
        if self.derived is None:
            self.path = self.spec.fetch()
            self.model = self.open(self.path)
            self.created = modified(self.path)
            derived = self.derive()
            for attribute in ("tensor_inputs", "tensor_outputs", "default_outputs"):
                if getattr(derived, attribute) is not None:
                    setattr(self, attribute, getattr(derived, attribute))
            if derived.description:
                self.description = derived.description
            self.derived = derived
        return self.derived

    def resolved_schema(self, kind: str) -> dict[str, Any] | None:
        if kind == "output":
            return self.opened().output_schema
        if kind != "predict":
            return None
        if self.spec.predict_schema is not None:
            schema = read_json(self.spec.predict_schema, "predict_schema")
            if not isinstance(schema, dict):
                raise PluginError(f"predict_schema {self.spec.predict_schema} does not hold a JSON object")
            return schema
        derived = self.opened().predict_schema
        if derived is None:
            raise self.says_too_little()
        return derived

    def resolved_fixture(self, kind: str) -> Any:
        if kind != "predict":
            return None
        if self.spec.predict_fixture is not None:
            return read_json(self.spec.predict_fixture, "predict_fixture")
        derived = self.opened().predict_fixture
        if derived is None:
            raise self.says_too_little()
        return derived

    def says_too_little(self) -> PluginError:
        return PluginError(
            f"{self.spec.shown} says too little of its input to derive a schema and fixture: give predict_schema "
            f"and predict_fixture (JSON files) in [models.{self.name}]"
        )

    @property
    def has_score(self) -> bool:
        return False

    @property
    def has_train(self) -> bool:
        return False


def read_json(path: Path, setting: str) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except OSError as error:
        raise PluginError(f"{setting}: cannot read {path}: {error.strerror}") from None
    except orjson.JSONDecodeError as error:
        raise PluginError(f"{setting}: {path} is not valid JSON: {error}") from None


def modified(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


#: The V2 datatypes of NumPy results, by dtype kind and item size.
DATATYPES = {
    ("b", 1): "BOOL",
    **{("u", size): f"UINT{8 * size}" for size in (1, 2, 4, 8)},
    **{("i", size): f"INT{8 * size}" for size in (1, 2, 4, 8)},
    **{("f", size): f"FP{8 * size}" for size in (2, 4, 8)},
}


def output_tensor(name: str, result: Any) -> dict[str, Any]:
    """The V2 output ``name`` as a result on the fixture shows it: its datatype, any number of rows (the
    ``tensor_outputs`` entry a runtime derives)."""
    array = np.asarray(result)
    kind = array.dtype.kind
    datatype = "BYTES" if kind in "OUS" else DATATYPES.get((kind, array.dtype.itemsize))
    if datatype is None:
        raise PluginError(f"output {name!r} gives {array.dtype} values, which no V2 tensor holds")
    return {"name": name, "datatype": datatype, "shape": [-1, *array.shape[1:]]}


def tensor_schema(shape: Sequence[int], leaf_type: str) -> dict[str, Any]:
    """The schema of a tensor of ``shape`` (-1: any size) as nested arrays of ``leaf_type`` (a JSON Schema type),
    one level a dimension; the first, rows, holds at least one."""
    schema: dict[str, Any] = {"type": leaf_type}
    for position, size in reversed(list(enumerate(shape))):
        schema = {"type": "array", "items": schema}
        if size >= 0:
            schema |= {"minItems": size, "maxItems": size}
        elif position == 0:
            schema["minItems"] = 1
    return schema


def rows_schema(width: int | None, items: dict[str, Any] | None = None) -> dict[str, Any]:
    """The schema of a table: a non-empty array of rows, each ``width`` numbers (any width: None)."""
    row: dict[str, Any] = {"type": "array", "items": items or {"type": "number"}}
    if width is not None:
        row |= {"minItems": width, "maxItems": width}
    return {"type": "array", "minItems": 1, "items": row}
