"""``SklearnRuntime``: a scikit-learn estimator served from its file."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stevedore_server.model_files import Derived, FilePredictor, ModelFile, array_schema, output_tensor, read_json

from .formats import PATTERNS, read_model
from .inputs import PANDAS, Features, column_inputs, columns_schema, converter, unchanged, wants_frame
from .outputs import DEFAULT_OUTPUT, column, methods_of, plain

logger = logging.getLogger("stevedore.runtime.sklearn")


class SklearnRuntime(FilePredictor):
    """A fitted estimator (or Pipeline) read from a skops, joblib or pickle file, or the one such file of a
    folder; its answer is the output the settings choose (``predict`` by default), and over V2 any of its
    outputs by name."""

    patterns = PATTERNS
    # As the hand-written plugin of the same model: V2 and large payloads come as arrays, not lists; and a
    # predict measured at startup under the inline budget runs on the event loop (the server times it and
    # sends a slower model back to its threads; `inline_budget = 0` in [models.NAME] turns it off).
    numpy_input = True
    inline = True

    def __init__(self, spec: ModelFile) -> None:
        super().__init__(spec)
        self.to_input: Callable[[Any], Any] = unchanged
        self.methods: dict[str, Callable[[Any], Any]] = {}
        self.answer: Callable[[Any], Any] = self.not_loaded

    def open(self, path: Path) -> Any:
        return read_model(self.artifact_in(path), self.spec.trusted, self.require_trust, self.table)

    def derive(self) -> Derived:
        features = Features.of(self.model)
        spec = self.spec
        if features.width is None and (spec.predict_schema is None or spec.predict_fixture is None):
            raise self.says_too_little()
        pandas = self.content_type == PANDAS
        frame = features.width is not None and wants_frame(features, self.content_type, self.table)
        self.to_input = converter(features, frame, numbers=spec.predict_schema is None)
        self.methods = methods_of(self.model)
        default = self.chosen_output(list(self.methods), DEFAULT_OUTPUT) or DEFAULT_OUTPUT
        self.answer = self.methods[default]
        fixture = read_json(spec.predict_fixture, "predict_fixture") if spec.predict_fixture else features.fixture()
        return Derived(
            predict_schema=columns_schema(features) if pandas else features.schema(),
            predict_fixture=fixture,
            tensor_inputs=column_inputs(features) if pandas else None,
            tensor_outputs=self.tensor_outputs_on(fixture, default),
            default_outputs=[default],
            description=self.summary(features, default),
            # What its answer is, as the fixture's shows it (labels, probabilities): what a pipeline checks
            output_schema=array_schema(plain(self.answer(self.to_input(fixture)))),
        )

    def tensor_outputs_on(self, fixture: Any, default: str) -> list[dict[str, Any]]:
        """The V2 outputs, each as its result on the fixture shows it (one value a row: a column, as MLServer
        answers); an output that fails there (a method the
        estimator has but cannot run, as a classifier's decision_function may) is not served."""
        found = []
        for name, method in list(self.methods.items()):
            try:
                found.append(output_tensor(name, column(method(self.to_input(fixture)))))
            except Exception as error:
                if name == default:
                    raise
                logger.warning("model %s: output %s is not served: it fails on the fixture: %s", self.name, name, error)
                del self.methods[name]
        return found

    def summary(self, features: Features, default: str) -> str:
        estimator = type(self.model).__name__
        takes = features.describe() if features.width is not None else "the payload of its predict_schema"
        return (
            f"scikit-learn {estimator} from {self.spec.shown}: takes {takes}; answers {default} "
            f"(V2 outputs: {', '.join(self.methods)})"
        )

    # -- the hot path: one conversion, one bound method ------------------------------

    def convert_prediction_input(self, payload: Any) -> Any:
        return self.to_input(payload)

    def run_predict(self, X: Any) -> Any:
        return self.answer(X)

    def convert_output(self, result: Any) -> Any:
        return plain(result)

    def predict_outputs(self, payload: Any, names: tuple[str, ...]) -> dict[str, Any]:
        X = self.to_input(payload)
        return {name: column(self.methods[name](X)) for name in names}

    def not_loaded(self, X: Any) -> Any:
        raise RuntimeError(f"model {self.name} is not loaded")
