"""The Predictor contract: what a plugin author subclasses to serve a model."""

from __future__ import annotations

import copy
import os
import re
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from stevedore_server.base.errors import PluginError

#: A model's name or version: ``\Z``, not ``$``, which also matches before a final newline (``"m\n"``).
NAME_PATTERN = re.compile(r"\A[A-Za-z0-9._-]+\Z")

_UNSET: Any = object()

#: What a predictor may serve besides predict, for the OpenAI-compatible routes: ``chat``, ``complete`` and
#: ``embed`` are methods; ``tools`` and ``response_format`` say that ``chat`` (and ``complete``) take those
#: parameters.
CAPABILITIES = ("chat", "complete", "embed", "tools", "response_format")
#: The capabilities that are methods of their own name.
CAPABILITY_METHODS = ("chat", "complete", "embed")


@dataclass
class Generation:
    """What ``chat`` and ``complete`` return, or what their generators yield a piece at a time (a plain ``str``
    is a ``Generation`` of that text alone).

    ``prompt_tokens`` and ``completion_tokens`` are the model's own counts where it knows them (in a stream, the
    last piece giving them wins: give the totals so far); ``finish_reason`` is OpenAI's (``stop``, ``length``,
    ``tool_calls``, ``content_filter``; default ``stop``); ``tool_calls`` are OpenAI's
    ``[{"id", "type": "function", "function": {"name", "arguments"}}]``, for a model declaring ``tools``."""

    text: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


#: What ``chat`` and ``complete`` return: the whole text, or pieces of it as they come.
GenerationResult = str | Generation | Iterator[str | Generation] | AsyncIterator[str | Generation]

#: Attributes a keyword argument of the constructor may override per instance.
OVERRIDABLE = (
    "name",
    "version",
    "description",
    "predict_schema",
    "score_schema",
    "predict_fixture",
    "score_fixture",
    "train_schema",
    "train_fixture",
    "output_schema",
    "created",
    "artifact",
    "model",
    "tensor_inputs",
    "tensor_outputs",
    "default_outputs",
    "content_type",
    "numpy_input",
    "max_batch_size",
    "max_batch_time",
    "row_aligned",
    "inline",
    "capabilities",
)


class Predictor:
    """Base class of a served model.

    Declare the model as class attributes (or override them per instance through
    keyword arguments of the constructor):

    - ``name``: URL-safe (letters, digits, ``.``, ``_``, ``-``); required.
    - ``version``: a string, default ``"1"``; ``description``: free text.
    - ``predict_schema`` / ``score_schema``: a JSON Schema dict, or the path of a
      JSON file relative to the package of the module defining the class.
      ``score_schema = None`` means the model has no score service.
    - ``predict_fixture`` / ``score_fixture``: a valid input, as a value or as the
      path of a ``.json`` file in package data (a ``str`` ending in ``.json`` or a
      ``pathlib.Path``).
    - ``train_schema`` / ``train_fixture``: the JSON Schema of the training
      parameters and valid parameters, as for predict (the fixture is checked
      against the schema at startup, never run). A model with a train schema
      implements :meth:`train`, which the server runs as a job in a process
      of its own (``POST /models/NAME/train``).
    - ``output_schema`` (optional): the JSON Schema of what ``predict`` returns, as
      a dict or a path, as for ``predict_schema``; the self-test checks its
      output against it, and a pipeline checks that the next step's predict
      schema accepts it.
    - ``created``: ISO 8601 UTC time the model was made; defaults to the
      modification time of ``artifact`` (a package-data path), else the load time.
    - ``tensor_inputs`` / ``tensor_outputs``: the Open Inference Protocol (V2)
      tensors, as lists of ``{"name", "datatype", "shape"}`` (-1 for a variable
      dimension). Without them, the input is derived from an array predict
      schema and the output from the self-test's result. Several inputs reach
      ``convert_prediction_input`` as an object keyed by input name. A tensor
      may add ``"content_type"`` (``np``, ``str``, ``base64``, ``datetime``).
      A V2 request with one input of any name is taken by a model of one
      input, as MLServer and KServe take it (its answer's ``parameters`` say
      ``renamed_input``); a model of several inputs needs their names.
    - ``default_outputs``: the names of the outputs a V2 request that names
      none gets (None, the default: every output); a request naming outputs
      gets exactly those. A model of several outputs returns from ``predict``
      a dict of every output by name; to compute only the outputs a V2
      request asks for, override :meth:`predict_outputs`.
    - ``content_type``: what V2 inputs become where a request names no
      content type (MLServer's): ``np`` (default), ``str``, ``base64``,
      ``datetime``, or ``pd``, every input a column of one pandas DataFrame.
    - ``numpy_input``: V2 requests hand ``convert_prediction_input`` the NumPy
      array decoded from the tensor instead of nested lists, and so does a
      large stevedore predict payload that is an array of numbers (float64);
      small ones still come as lists, so accept both.
    - ``row_aligned`` (default True): predict on an array payload may return
      one item a row, so the model may be batched. Any output is served as the
      model gives it; only a model whose self-test shows one item a row is
      batched, and a batch result of another length is that model's error
      (500). Set False for a model never to be batched.
    - ``max_batch_size`` / ``max_batch_time``: adaptive batching (off at 1);
      predict requests queued while the model is busy are merged into one
      call. The predict payload must be an array of rows and the output one
      item a row. The settings file's ``[models.NAME]`` table overrides both.
    - ``inline`` (default False): True declares that predict is a short
      computation that never waits (on the network, a lock, a device). Its
      calls measured at startup under the server's ``inline_budget`` (1 ms)
      then run on the event loop instead of the model's thread, which for a
      small model is much faster; a call on the loop holds every other
      request while it runs, so the server never does this for code that has
      not said so. The settings file's ``[models.NAME]`` table overrides it.
    - ``capabilities``: what the model serves besides predict, for the OpenAI-compatible routes (``/v1/...``):
      any of ``chat``, ``complete``, ``embed`` (each the method of its name, which the model implements),
      ``tools`` and ``response_format`` (its ``chat`` and ``complete`` take those parameters; without them the
      server refuses a request giving them). None (the default): the methods the class overrides, no
      ``tools`` nor ``response_format``.

    The server calls :meth:`load` once at startup, then self-tests the model on
    its fixtures. Requests go through ``convert_prediction_input`` ->
    ``run_predict`` -> ``convert_output`` (and ``convert_score_input`` ->
    ``run_scores`` -> ``convert_score_output`` for score); the convert methods
    only ever see input that matched the schema.
    """

    name: str = ""
    version: str = "1"
    description: str = ""
    predict_schema: dict[str, Any] | str | os.PathLike[str] | None = None
    score_schema: dict[str, Any] | str | os.PathLike[str] | None = None
    predict_fixture: Any = None
    score_fixture: Any = None
    train_schema: dict[str, Any] | str | os.PathLike[str] | None = None
    train_fixture: Any = None
    output_schema: dict[str, Any] | str | os.PathLike[str] | None = None
    created: str | None = None
    artifact: str | None = None
    model: Any = None
    tensor_inputs: list[dict[str, Any]] | None = None
    tensor_outputs: list[dict[str, Any]] | None = None
    default_outputs: list[str] | None = None
    content_type: str | None = None
    numpy_input: bool = False
    max_batch_size: int = 1
    max_batch_time: float = 0.0
    row_aligned: bool = True
    inline: bool = False
    capabilities: tuple[str, ...] | None = None

    def __init__(
        self,
        model: Any = _UNSET,
        name: str | None = None,
        test_input: Any = _UNSET,
        pred_schema: dict[str, Any] | None = None,
        score_test_input: Any = _UNSET,
        score_schema: Any = _UNSET,
        version: str | None = None,
        **overrides: Any,
    ) -> None:
        """Modern use: ``MyPredictor()`` or keyword overrides (``MyPredictor(version="2")``).

        Migrating use, the ml-py-stevedore signature:
        ``MyPredictor(model, name, test_input, pred_schema, score_test_input, score_schema, version="v1")``.
        """
        legacy = {
            "model": model,
            "predict_fixture": test_input,
            "score_fixture": score_test_input,
            "score_schema": score_schema,
        }
        for attribute, value in legacy.items():
            if value is not _UNSET:
                overrides.setdefault(attribute, value)
        if pred_schema is not None:
            overrides.setdefault("predict_schema", pred_schema)
        if name is not None:
            overrides.setdefault("name", name)
        if version is not None:
            overrides.setdefault("version", version)
        elif model is not _UNSET:
            overrides.setdefault("version", "v1")  # the original's default version
        unknown = sorted(set(overrides) - set(OVERRIDABLE))
        if unknown:
            raise TypeError(f"{type(self).__name__}() got unknown attributes: {', '.join(unknown)}")
        for attribute, value in overrides.items():
            setattr(self, attribute, value)

    # -- lifecycle -----------------------------------------------------------

    def load(self) -> None:
        """Load the model artifact into ``self.model``. Called once at startup, never at import."""

    def unload(self) -> None:
        """Release what ``load`` holds, once the model is no longer served (unloaded, replaced, the server
        stopping): files, connections, processes. Default: nothing; the model object is dropped anyway."""

    def resource_path(self, relative: str | os.PathLike[str]) -> Path:
        """Path of a package-data file, relative to the package of this predictor's class."""
        return package_dir(type(self)) / relative

    # -- the request pipeline ------------------------------------------------

    def convert_prediction_input(self, payload: Any) -> Any:
        """Turn a valid predict payload into the model's input. Default: unchanged."""
        return payload

    def run_predict(self, X: Any) -> Any:
        """Run the model on converted input."""
        raise NotImplementedError(f"{type(self).__name__} must implement run_predict")

    def convert_output(self, result: Any) -> Any:
        """Turn the model's prediction into what the server can write: JSON values, NumPy arrays and scalars
        (written as JSON numbers and lists, and as V2 tensors as they are). Default: unchanged."""
        return result

    def convert_score_input(self, payload: Any) -> tuple[Any, ...]:
        """Turn a valid score payload into the arguments of ``run_scores`` (for example ``(X, y)``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement convert_score_input")

    def run_scores(self, *args: Any) -> Any:
        """Score the model on converted labelled input."""
        raise NotImplementedError(f"{type(self).__name__} must implement run_scores")

    def convert_score_output(self, result: Any) -> Any:
        """Turn the score into a JSON-serializable value. Default: NumPy values to Python ones."""
        return result.tolist() if hasattr(result, "tolist") else result

    def train(self, params: Any, context: Any) -> Any:
        """Train on valid ``params``; return a JSON-serialisable result. Runs in a process of its own, with a
        ``training.TrainContext``: ``workdir``, ``progress(fraction, message)``, ``logger``, ``cancelled()``."""
        raise NotImplementedError(f"{type(self).__name__} must implement train")

    def trained(self, artifact: Path, version: str) -> Predictor:
        """The predictor of a new version made by a training that returned ``{"artifact": ...}``: by default a
        copy of this one with ``artifact`` (an absolute path, in the job's workdir) and ``version`` set and no
        model, which the server then loads (``load`` reads ``self.artifact``) and self-tests."""
        clone = copy.copy(self)
        clone.version, clone.artifact, clone.model, clone.created = version, str(artifact), None, None
        return clone

    def predict(self, payload: Any) -> Any:
        """The whole predict pipeline on an already validated payload."""
        return self.convert_output(self.run_predict(self.convert_prediction_input(payload)))

    def predict_outputs(self, payload: Any, names: tuple[str, ...]) -> dict[str, Any]:
        """Override to compute only the V2 outputs a request asks for: the whole predict pipeline on an already
        validated payload (as ``predict``), returning a dict holding at least the outputs ``names`` (each once,
        in the order of ``tensor_outputs``; the request's choice, else ``default_outputs``, else every output).

        Where a predictor overrides it, the server calls it instead of ``predict`` for every V2 inference
        request (REST and gRPC); ``predict`` still serves everything else (the self-test, the stevedore routes,
        jobs), with every output or, for a runtime, the default one. Batched, a call merges only requests asking
        for the same ``names``, and each of its outputs must then give one item a row. A model in worker
        processes or on Ray Serve is called there the same way."""
        raise NotImplementedError

    @property
    def has_predict_outputs(self) -> bool:
        return type(self).predict_outputs is not Predictor.predict_outputs

    def predict_stream(self, payload: Any) -> Any:
        """Override to stream: a generator (or async generator) of JSON-serializable items for a validated predict
        payload, served as Server-Sent Events by ``POST /models/{name}/predict/stream``. A plain generator runs
        on the model's threads, one item at a time; a client that disconnects closes it (its ``finally`` runs)."""
        raise NotImplementedError

    @property
    def has_stream(self) -> bool:
        return type(self).predict_stream is not Predictor.predict_stream

    # -- text: the OpenAI-compatible routes (``capabilities``) ---------------

    def chat(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> GenerationResult:
        """Override to answer a chat: ``messages`` are OpenAI's (``{"role", "content", ...}``, ``content`` a
        string, or a list of parts with ``{"type": "text", "text"}``); ``params`` the request's parameters
        (``max_tokens``, ``stop`` as a list, ``temperature``, ``top_p``, ``seed``, ``n``, ``user``, ``stream``;
        ``tools``, ``tool_choice``, ``response_format`` for a model declaring them), only those the request
        gave. Return the text (a ``str`` or a ``Generation``), or a generator or async generator of its pieces to
        stream them: a plain generator runs on the model's threads, a piece at a time, and a client that
        disconnects closes it (its ``finally`` runs)."""
        raise NotImplementedError

    def complete(self, prompt: str, params: dict[str, Any]) -> GenerationResult:
        """Override to continue ``prompt`` (OpenAI's completions): ``params`` and what to return as for ``chat``."""
        raise NotImplementedError

    def embed(self, texts: list[str], params: dict[str, Any]) -> Any:
        """Override to embed ``texts``: a vector each, in order (a list of lists of numbers, or a 2-D NumPy
        array); ``params`` may hold ``dimensions`` and ``user``. Requests with the same ``params`` are merged into
        one call by the adaptive batcher where the model's ``max_batch_size`` is above 1."""
        raise NotImplementedError

    @property
    def text_capabilities(self) -> frozenset[str]:
        """``capabilities`` as declared, or the capability methods the class overrides."""
        if self.capabilities is not None:
            return frozenset(self.capabilities)
        return frozenset(name for name in CAPABILITY_METHODS if overrides(type(self), name))

    def score(self, payload: Any) -> Any:
        """The whole score pipeline on an already validated payload."""
        arguments = self.convert_score_input(payload)
        if not isinstance(arguments, tuple):
            arguments = (arguments,)
        return self.convert_score_output(self.run_scores(*arguments))

    # -- declarations resolved at load --------------------------------------

    @property
    def has_score(self) -> bool:
        return self.score_schema is not None

    @property
    def has_train(self) -> bool:
        return self.train_schema is not None

    def resolved_schema(self, kind: str) -> dict[str, Any] | None:
        """The predict, score or train schema as a dict, reading it from package data if given as a path."""
        value = getattr(self, f"{kind}_schema")
        if value is None or isinstance(value, dict):
            return value
        if isinstance(value, (str, os.PathLike)):
            loaded = self._read_json(kind + "_schema", value)
            if not isinstance(loaded, dict):
                raise PluginError(f"{kind}_schema file {value} does not hold a JSON object")
            return loaded
        raise PluginError(f"{kind}_schema must be a dict or a path, not {type(value).__name__}")

    def resolved_fixture(self, kind: str) -> Any:
        """The predict, score or train fixture as a value, reading it from package data if given as a path."""
        value = getattr(self, f"{kind}_fixture")
        if isinstance(value, os.PathLike) or (isinstance(value, str) and value.endswith(".json")):
            return self._read_json(kind + "_fixture", value)
        return value

    def _read_json(self, attribute: str, relative: str | os.PathLike[str]) -> Any:
        path = package_dir(defining_class(type(self), attribute)) / relative
        try:
            return orjson.loads(path.read_bytes())
        except FileNotFoundError:
            raise PluginError(f"{attribute}: package data file {path} not found") from None
        except orjson.JSONDecodeError as error:
            raise PluginError(f"{attribute}: {path} is not valid JSON: {error}") from None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} version {self.version!r}>"


def overrides(cls: type, method: str) -> bool:
    """Whether ``cls`` implements ``method`` of the contract itself (not ``Predictor``'s placeholder)."""
    return getattr(cls, method, None) is not getattr(Predictor, method)


def defining_class(cls: type, attribute: str) -> type:
    """The class in ``cls``'s MRO whose body sets ``attribute`` (so paths resolve where they were written)."""
    for klass in cls.__mro__:
        if attribute in vars(klass):
            return klass
    return cls


def package_dir(cls: type) -> Path:
    """Directory of the package holding the module that defines ``cls``."""
    module = sys.modules.get(cls.__module__)
    module_file = getattr(module, "__file__", None)
    if not module_file:
        raise PluginError(f"cannot locate package data of {cls.__qualname__}: module {cls.__module__} has no file")
    return Path(module_file).resolve().parent
