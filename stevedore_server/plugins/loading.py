"""Loading one model: its schemas and fixtures checked, ``load()`` called, a self-test on its fixtures.

``load_model`` returns a ``LoadedModel``: an immutable record of what loading
found, ready or failed. Nothing later writes into it; what serving adds (the
runtime, the tensor signature, the catalogue metadata) lives in
``serving.ServingModel``.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from stevedore_server.base.errors import NotFound, NotReady, PluginError
from stevedore_server.base.serialization import dumps_result
from stevedore_server.base.sources import PluginSource
from stevedore_server.base.validation import ArrayCheck, SchemaValidator
from stevedore_server.model_files import FilePredictor
from stevedore_server.predictor import Predictor

from . import capabilities
from .probe import read_aside

logger = logging.getLogger("stevedore.loading")


class State(enum.StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    #: Installed, not loaded: left out by ``load_models``, or unloaded through the repository API.
    UNLOADED = "unloaded"
    #: Installed, loaded on its first request: ``load = "lazy"``, or unloaded to keep within the memory budget.
    LAZY = "lazy"


@dataclass(frozen=True)
class LoadedModel:
    """One predictor and everything loading learnt about it."""

    predictor: Predictor
    source: PluginSource
    state: State
    reason: str | None
    #: When the model was made (ISO 8601 UTC); None for a model not loaded.
    created: str | None
    predict_validator: SchemaValidator | None = None
    score_validator: SchemaValidator | None = None
    predict_fixture: Any = None
    score_fixture: Any = None
    #: The training parameters' schema, for a model that can be trained (its fixture is checked, never run).
    train_validator: SchemaValidator | None = None
    #: What predict returned on its fixture in the self-test (the V2 output tensor is derived from it).
    fixture_output: Any = None
    #: The self-test showed one output item a row: only then can batching split a result back to its callers.
    row_aligned: bool = False
    #: The predict schema as a vectorised check, where it is an array of numbers schema and nothing more.
    array_check: ArrayCheck | None = None
    #: Bytes the model held once loaded, as measured then (``isolation.load_candidate``); None: not measured.
    memory: int | None = None
    #: The JSON Schema of what predict returns (``Predictor.output_schema``), if declared: pipelines check that
    #: the next step's predict schema accepts it.
    output_schema: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.predictor.name

    @property
    def version(self) -> str:
        return self.predictor.version

    @property
    def ready(self) -> bool:
        return self.state is State.READY

    def schema(self, kind: str) -> dict[str, Any]:
        """The compiled predict or score schema; NotFound without a score service, NotReady if never compiled."""
        if kind == "score" and not self.predictor.has_score:
            raise NotFound(f"model {self.name!r} version {self.version!r} has no score service")
        validator = self.predict_validator if kind == "predict" else self.score_validator
        if validator is None:  # the model failed before its schemas compiled
            raise NotReady(f"model {self.name!r} version {self.version!r} is not ready: {self.reason}")
        return validator.schema


@dataclass(frozen=True)
class Schemas:
    """The compiled schemas, their fixtures, and the array check of the predict schema."""

    predict_validator: SchemaValidator
    predict_fixture: Any
    array_check: ArrayCheck | None
    score_validator: SchemaValidator | None = None
    score_fixture: Any = None
    train_validator: SchemaValidator | None = None
    output_schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class SelfTest:
    fixture_output: Any
    row_aligned: bool


def load_model(predictor: Predictor, source: PluginSource) -> LoadedModel:
    """Validate the fixtures, load the artifact, self-test; a failure is recorded in the result, with why."""
    step, schemas, created = "schemas and fixtures", None, None
    try:
        if isinstance(predictor, FilePredictor):  # its schemas come from the file: read it first
            step = "model file"
            if predictor.read_aside_first:
                read_aside(predictor.spec)
            predictor.opened()
            step = "schemas and fixtures"
        schemas = compile_schemas(predictor)
        step = "capabilities"
        capabilities.check_declared(predictor)
        step = "load()"
        predictor.load()
        step = "created"
        created = created_time(predictor)
        step = "self-test"
        tested = self_test(predictor, schemas)
        capabilities.self_test(predictor)
    except Exception as error:
        reason = f"{step} failed: {type(error).__name__}: {error}"
        logger.error("model %s version %s not served: %s", predictor.name, predictor.version, reason, exc_info=error)
        fields = vars(schemas) if schemas is not None else {}
        return LoadedModel(predictor, source, State.FAILED, reason, created or iso_utc(time.time()), **fields)
    logger.info("model %s version %s ready (%s)", predictor.name, predictor.version, source.describe())
    return LoadedModel(
        predictor, source, State.READY, None, created, **vars(schemas),
        fixture_output=tested.fixture_output, row_aligned=tested.row_aligned,
    )  # fmt: skip


def not_loaded(predictor: Predictor, source: PluginSource) -> LoadedModel:
    """The record of a model installed but not loaded: listed, never served until loaded."""
    reason = f"not loaded: POST /v2/repository/models/{predictor.name}/load loads it"
    return LoadedModel(predictor, source, State.UNLOADED, reason, None)


#: Why a lazy model is not served yet (the V2 repository index and the catalogue say so).
NOT_LOADED_YET = "not loaded yet"


def lazy(predictor: Predictor, source: PluginSource, reason: str = NOT_LOADED_YET) -> LoadedModel:
    """The record of a model loaded on its first request: listed, loaded when asked."""
    return LoadedModel(predictor, source, State.LAZY, reason, None)


def compile_schemas(predictor: Predictor) -> Schemas:
    predict_schema = predictor.resolved_schema("predict")
    if predict_schema is None:
        raise PluginError("predict_schema is required")
    predict_validator = compile_schema("predict", predict_schema)
    predict_fixture = checked_fixture(predictor, "predict", predict_validator)
    score_validator, score_fixture = optional_schema(predictor, "score")
    train_validator, _ = optional_schema(predictor, "train")
    output_schema = predictor.resolved_schema("output")
    if output_schema is not None:
        compile_schema("output", output_schema)
    return Schemas(
        predict_validator, predict_fixture, ArrayCheck.of(predict_schema), score_validator, score_fixture,
        train_validator, output_schema,
    )  # fmt: skip


def optional_schema(predictor: Predictor, kind: str) -> tuple[SchemaValidator | None, Any]:
    """The compiled score or train schema and its checked fixture; (None, None) when the predictor has none."""
    schema = predictor.resolved_schema(kind)
    if schema is None:
        return None, None
    validator = compile_schema(kind, schema)
    return validator, checked_fixture(predictor, kind, validator)


def compile_schema(kind: str, schema: dict[str, Any]) -> SchemaValidator:
    try:
        return SchemaValidator(schema)
    except Exception as error:
        raise PluginError(f"{kind}_schema is not a valid JSON Schema: {error}") from None


def checked_fixture(predictor: Predictor, kind: str, validator: SchemaValidator) -> Any:
    fixture = predictor.resolved_fixture(kind)
    if fixture is None:
        raise PluginError(f"{kind}_fixture is required: the self-test needs a valid input")
    details = validator.errors(fixture)
    if details:
        listed = "; ".join(f"{d['path'] or '/'}: {d['message']}" for d in details)
        raise PluginError(f"{kind}_fixture does not match {kind}_schema (a bug in the plugin): {listed}")
    return fixture


def self_test(predictor: Predictor, schemas: Schemas) -> SelfTest:
    """Predict (and score) on the fixtures; the output must be writable as JSON.

    Whether the output has one item a row is recorded, not required: a model
    summarising a table is served, only never batched.
    """
    fixture = schemas.predict_fixture
    try:
        output = predictor.predict(fixture)
        dumps_result(output)
    except Exception as error:
        raise PluginError(f"predict on predict_fixture: {type(error).__name__}: {error}") from error
    check_output(schemas.output_schema, output)
    if schemas.score_validator is not None:
        try:
            dumps_result(predictor.score(schemas.score_fixture))
        except Exception as error:
            raise PluginError(f"score on score_fixture: {type(error).__name__}: {error}") from error
    return SelfTest(output, predictor.row_aligned and is_rows(fixture) and one_item_a_row(output, len(fixture)))


def check_output(schema: dict[str, Any] | None, output: Any) -> None:
    """The self-test's output matches the declared ``output_schema`` (else the declaration is the plugin's bug:
    a pipeline's check would trust it)."""
    if schema is None:
        return
    details = SchemaValidator(schema).errors(orjson.loads(dumps_result(output)))
    if details:
        listed = "; ".join(f"{d['path'] or '/'}: {d['message']}" for d in details)
        raise PluginError(f"predict's output on predict_fixture does not match output_schema: {listed}")


def is_rows(payload: Any) -> bool:
    return isinstance(payload, (list, np.ndarray)) and len(payload) > 0


def one_item_a_row(output: Any, rows: int) -> bool:
    if isinstance(output, dict):  # several outputs by name (V2): each must be
        return bool(output) and all(one_item_a_row(value, rows) for value in output.values())
    return isinstance(output, (list, tuple, np.ndarray)) and len(output) == rows


def created_time(predictor: Predictor) -> str:
    if predictor.created:
        return normalise_created(predictor.created)
    if predictor.artifact:
        return iso_utc(predictor.resource_path(predictor.artifact).stat().st_mtime)
    return iso_utc(time.time())


def iso_utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def normalise_created(value: str) -> str:
    """An ISO 8601 time as UTC ``...Z``; a time without zone is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise PluginError(f"created {value!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
