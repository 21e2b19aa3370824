"""The ``mlflow`` runtime: a folder with an ``MLmodel`` file, loaded with ``mlflow.pyfunc.load_model``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jsonschema_rs

from stevedore_server.model_files import Derived, FilePredictor

from .safety import code_run_by, model_folder, read_mlmodel
from .signature import Inputs, inputs_of, outputs_of

logger = logging.getLogger("stevedore.runtimes.mlflow")


class MLflowRuntime(FilePredictor):
    """An MLflow pyfunc model: its signature gives the schema and V2 tensors, its input example the fixture."""

    #: The ``MLmodel`` file itself may be the URI (its folder is read).
    patterns = ("mlmodel",)
    markers = ("MLmodel",)

    inputs: Inputs | None = None
    folder: Path | None = None

    def open(self, path: Path) -> Any:
        self.folder = folder = model_folder(path)
        runs_code = code_run_by(read_mlmodel(folder))
        if runs_code is not None:
            # A pin of the MLmodel file does not cover the folder's other files, which loading reads.
            safe = "an MLflow model of the onnx, xgboost or lightgbm flavour"
            self.require_trust(runs_code, safe_formats=safe, pin_covers_it=False)
        import mlflow.pyfunc  # seconds to import: only when a model is loaded

        return mlflow.pyfunc.load_model(str(folder))

    def derive(self) -> Derived:
        metadata = self.model.metadata
        signature = metadata.signature
        if signature is None or signature.inputs is None:
            return Derived()  # the settings must give predict_schema and predict_fixture
        self.inputs = inputs = inputs_of(signature.inputs.to_dict())
        if inputs is None:
            logger.warning("model %s: its signature's inputs cannot be served as JSON: %s", self.name, signature)
            return Derived()
        if inputs.columns and self.spec.content_type is None:
            self.content_type = "pd"  # V2 inputs are the DataFrame's columns, as MLServer's MLflow runtime takes them
        self.numpy_input = not inputs.columns
        schema = inputs.predict_schema()
        outputs = signature.outputs.to_dict() if signature.outputs is not None else None
        return Derived(
            predict_schema=schema,
            predict_fixture=self.example(inputs, schema),
            tensor_inputs=inputs.tensor_inputs(),
            tensor_outputs=outputs_of(outputs),
            description=f"MLflow model {self.spec.shown} (signature: {signature.inputs})",
        )

    def example(self, inputs: Inputs, schema: dict[str, Any]) -> Any:
        """The model's input example as a payload where it has a valid one, else zeros of the signature's shape."""
        try:
            example = inputs.example_of(self.model.metadata.load_input_example(str(self.folder)))
        except Exception as error:  # a broken example is no reason not to serve: zeros test the model as well
            logger.warning("model %s: its input example cannot be read (%s); its fixture is zeros", self.name, error)
            example = None
        if example is not None and jsonschema_rs.is_valid(schema, example):
            return example
        if example is not None:
            logger.warning("model %s: its input example does not fit its signature; its fixture is zeros", self.name)
        return inputs.zeros()

    def run_predict(self, X: Any) -> Any:
        return self.model.predict(X if self.inputs is None else self.inputs.data_of(X))

    def convert_output(self, result: Any) -> Any:
        # pyfunc answers pandas where the flavour does (a PythonModel's Series, a DataFrame): arrays serve.
        to_numpy = getattr(result, "to_numpy", None)
        return to_numpy() if callable(to_numpy) else result
