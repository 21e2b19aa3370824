"""The models of one server process: loading, self-testing, and lookup by name and version."""

from __future__ import annotations

import enum
import functools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from packaging.version import InvalidVersion, Version

from .discovery import Candidate
from .errors import NotFound, NotReady, PluginError, StartupError
from .hookspecs import HealthCheck
from .plugins import PluginFailure, PluginSource
from .predictor import NAME_PATTERN, Predictor
from .serialization import dumps_result
from .validation import ArrayCheck, SchemaValidator

if TYPE_CHECKING:
    from .runtime import ModelRuntime
    from .v2.signature import Signature

logger = logging.getLogger("stevedore.registry")

#: Bodies from this size are checked as arrays where the schema allows: below it, the validator is faster.
VECTOR_CHECK_MIN_BYTES = 2048


class State(enum.StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


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


@dataclass
class ModelEntry:
    """One predictor and everything the server learnt about it at load."""

    predictor: Predictor
    source: PluginSource
    state: State = State.LOADING
    reason: str | None = None
    created: str | None = None
    predict_validator: SchemaValidator | None = None
    score_validator: SchemaValidator | None = None
    predict_fixture: Any = None
    score_fixture: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: What predict returned on its fixture in the self-test (the V2 output tensor is derived from it).
    fixture_output: Any = None
    #: The V2 tensor signature, or None with ``no_tensor_reason`` saying why there is none.
    signature: Signature | None = None
    no_tensor_reason: str | None = None
    #: The predict schema as a vectorised check, where it is an array of numbers schema and nothing more.
    array_check: ArrayCheck | None = None
    #: How this model's inferences run (set in the app's lifespan).
    runtime: ModelRuntime | None = None

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

    def require_ready(self) -> None:
        if not self.ready:
            raise NotReady(f"model {self.name!r} version {self.version!r} is not ready: {self.reason or self.state}")

    def predict(self, payload: Any) -> Any:
        """Validate then predict (on the event loop only within the inline budget; see runtime.py)."""
        require_validator(self.predict_validator).validate(payload)
        return self.predict_valid(payload)

    def predict_valid(self, payload: Any) -> Any:
        """Predict on a payload proven valid already."""
        result = self.predictor.predict(payload)
        if isinstance(payload, (list, np.ndarray)):
            check_rows(self.predictor, len(payload), result)
        return result

    def parsed_table(self, body: bytes) -> np.ndarray[Any, Any] | None:
        """A large table of numbers for a ``numpy_input`` predictor, parsed and checked as an array at once
        (``ArrayCheck.parse_table``); None: parse and validate the JSON as usual."""
        if self.array_check is None or not self.predictor.numpy_input or len(body) < VECTOR_CHECK_MIN_BYTES:
            return None
        return self.array_check.parse_table(body)

    def prevalidated(self, body: bytes, payload: Any) -> tuple[Any, bool]:
        """``payload`` as the predictor takes it, and whether it is proven valid already.

        A large array of numbers (``body`` is its JSON text) is checked in a few
        vectorised steps instead of value by value, and a predictor with
        ``numpy_input`` gets the array itself. Anything else is left to the
        validator (which is faster on a few values).
        """
        if self.array_check is None or len(body) < VECTOR_CHECK_MIN_BYTES or not isinstance(payload, list):
            return payload, False
        array = self.array_check.rows(body, payload)
        if array is None:
            return payload, False
        return (array if self.predictor.numpy_input else payload), True

    def score(self, payload: Any) -> Any:
        """Validate then score; runs in a worker thread, never on the event loop."""
        require_validator(self.score_validator).validate(payload)
        return self.predictor.score(payload)

    # -- load ------------------------------------------------------------------

    def load(self) -> None:
        """Validate the fixtures, load the artifact, self-test; on failure, record why."""
        step = "schemas and fixtures"
        try:
            self._compile_and_check_fixtures()
            step = "load()"
            self.predictor.load()
            step = "created"
            self.created = self._created()
            step = "self-test"
            self._self_test()
        except Exception as error:
            self.state = State.FAILED
            self.reason = f"{step} failed: {type(error).__name__}: {error}"
            logger.error("model %s version %s not served: %s", self.name, self.version, self.reason, exc_info=error)
            if self.created is None:
                self.created = iso_utc(time.time())
            return
        self.state = State.READY
        logger.info("model %s version %s ready (%s)", self.name, self.version, self.source.describe())

    def _compile_and_check_fixtures(self) -> None:
        predict_schema = self.predictor.resolved_schema("predict")
        if predict_schema is None:
            raise PluginError("predict_schema is required")
        self.predict_validator = self._compile("predict", predict_schema)
        self.array_check = ArrayCheck.of(predict_schema)
        self.predict_fixture = self._checked_fixture("predict", self.predict_validator)
        score_schema = self.predictor.resolved_schema("score")
        if score_schema is not None:
            self.score_validator = self._compile("score", score_schema)
            self.score_fixture = self._checked_fixture("score", self.score_validator)

    @staticmethod
    def _compile(kind: str, schema: dict[str, Any]) -> SchemaValidator:
        try:
            return SchemaValidator(schema)
        except Exception as error:
            raise PluginError(f"{kind}_schema is not a valid JSON Schema: {error}") from None

    def _checked_fixture(self, kind: str, validator: SchemaValidator) -> Any:
        fixture = self.predictor.resolved_fixture(kind)
        if fixture is None:
            raise PluginError(f"{kind}_fixture is required: the self-test needs a valid input")
        details = validator.errors(fixture)
        if details:
            listed = "; ".join(f"{d['path'] or '/'}: {d['message']}" for d in details)
            raise PluginError(f"{kind}_fixture does not match {kind}_schema (a bug in the plugin): {listed}")
        return fixture

    def _created(self) -> str:
        if self.predictor.created:
            return normalise_created(self.predictor.created)
        if self.predictor.artifact:
            return iso_utc(self.predictor.resource_path(self.predictor.artifact).stat().st_mtime)
        return iso_utc(time.time())

    def _self_test(self) -> None:
        try:
            self.fixture_output = self.predictor.predict(self.predict_fixture)
            dumps_result(self.fixture_output)
            if isinstance(self.predict_fixture, list):
                check_rows(self.predictor, len(self.predict_fixture), self.fixture_output)
        except Exception as error:
            raise PluginError(f"predict on predict_fixture: {type(error).__name__}: {error}") from error
        if self.score_validator is not None:
            try:
                dumps_result(self.predictor.score(self.score_fixture))
            except Exception as error:
                raise PluginError(f"score on score_fixture: {type(error).__name__}: {error}") from error


def check_rows(predictor: Predictor, rows: int, result: Any) -> None:
    """A row-aligned model gives one output item for each input row; anything else would be junk."""
    if predictor.row_aligned and isinstance(result, (list, tuple, np.ndarray)) and len(result) != rows:
        raise ValueError(
            f"the model returned {len(result)} items for {rows} rows (set row_aligned = False on a predictor "
            "whose output is not one item a row)"
        )


def require_validator(validator: SchemaValidator | None) -> SchemaValidator:
    if validator is None:
        raise NotFound("this model has no such service")
    return validator


def version_key(versions: Iterable[str]) -> Callable[[str], Any]:
    """PEP 440 ordering when every version parses, else string order."""
    try:
        for version in versions:
            Version(version)
    except InvalidVersion:
        return str
    return Version


@dataclass
class Registry:
    """Every model of this process, in discovery order, and the plugins that failed."""

    entries: list[ModelEntry]
    plugin_failures: list[PluginFailure] = field(default_factory=list)
    health_checks: dict[str, HealthCheck] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def from_candidates(cls, candidates: Iterable[Candidate], failures: Iterable[PluginFailure] = ()) -> Registry:
        """Check names and uniqueness; a duplicate name and version is a startup error naming both sources."""
        entries: list[ModelEntry] = []
        plugin_failures = list(failures)
        seen: dict[tuple[str, str], ModelEntry] = {}
        for candidate in candidates:
            predictor, source = candidate.predictor, candidate.source
            problem = _identity_problem(predictor)
            if problem:
                plugin_failures.append(PluginFailure(source, problem))
                logger.error("plugin failed: %s: %s", source.describe(), problem)
                continue
            key = (predictor.name, predictor.version)
            if key in seen:
                raise StartupError(
                    f"model {predictor.name!r} version {predictor.version!r} is provided twice: "
                    f"by {seen[key].source.describe()} and by {source.describe()}"
                )
            seen[key] = ModelEntry(predictor, source)
            entries.append(seen[key])
        return cls(entries, plugin_failures)

    def load_all(self) -> None:
        for entry in self.entries:
            entry.load()

    @property
    def failures(self) -> list[str]:
        """Why the server is not ready, one line per failed plugin or model."""
        lines = [f"plugin {f.source.describe()}: {f.error}" for f in self.plugin_failures]
        lines += [f"model {e.name} version {e.version}: {e.reason or e.state}" for e in self.entries if not e.ready]
        return lines

    @functools.cached_property
    def _by_name(self) -> dict[str, list[ModelEntry]]:
        # Sorted once: lookups are on every request's path. The entries do not change after startup.
        grouped: dict[str, list[ModelEntry]] = {}
        for entry in self.entries:
            grouped.setdefault(entry.name, []).append(entry)
        for entries in grouped.values():
            key = version_key(entry.version for entry in entries)
            entries.sort(key=lambda entry: key(entry.version), reverse=True)
        return grouped

    def names(self) -> list[str]:
        return list(self._by_name)

    def versions_of(self, name: str) -> list[ModelEntry]:
        """Entries of one model, highest version first."""
        return self._by_name.get(name, [])

    def latest(self) -> list[ModelEntry]:
        """The highest version of every model, in discovery order."""
        return [self.versions_of(name)[0] for name in self.names()]

    def get(self, name: str, version: str | None = None) -> ModelEntry:
        """The entry for a name and version (highest version when None), or NotFound."""
        entries = self.versions_of(name)
        if not entries:
            raise NotFound(f"no model named {name!r}")
        if version is None:
            return entries[0]
        for entry in entries:
            if entry.version == version:
                return entry
        raise NotFound(f"model {name!r} has no version {version!r}")

    def uptime(self) -> float:
        return time.monotonic() - self.started


def _identity_problem(predictor: Predictor) -> str | None:
    for attribute in ("name", "version"):
        value = getattr(predictor, attribute)
        if not isinstance(value, str) or not NAME_PATTERN.match(value):
            return (
                f"{type(predictor).__qualname__}.{attribute} = {value!r}: "
                "must be a non-empty string of letters, digits, '.', '_' or '-'"
            )
    return None
