"""The ``mlserver`` runtime: a user's ``mlserver.MLModel`` subclass served unchanged by stevedore."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mlserver import MLModel

from stevedore_server.base.errors import PluginError
from stevedore_server.core.content_types import CONTENT_TYPES
from stevedore_server.core.signature import DEFAULT_INPUT
from stevedore_server.model_files import Derived, FilePredictor, ModelFile, read_json

from .loop import ModelLoop
from .messages import outputs_metadata, request_of, result_of
from .metadata import fixture_of, schema_of, tensors
from .settings import implementation_of, model_settings, settings_document

logger = logging.getLogger("stevedore.runtimes.mlserver")


class MLServerRuntime(FilePredictor):
    """An MLServer custom runtime (``implementation`` in its model-settings), loaded and called on an event loop
    of its own; requests reach its ``predict`` as MLServer's codecs would have encoded them (``messages``)."""

    # V2 inputs arrive as arrays (decoded by their content types), as MLServer's codecs hand them over.
    numpy_input = True

    def __init__(self, spec: ModelFile) -> None:
        super().__init__(spec)
        # A content type only MLServer's codecs know (``dict``, ``hg_*``...) is the model's business, not ours.
        if self.content_type is not None and self.content_type not in CONTENT_TYPES:
            self.content_type = None
        self.loop: ModelLoop | None = None
        self.inputs: list[dict[str, Any]] = [{"name": DEFAULT_INPUT, "datatype": "FP64", "shape": [-1]}]
        self.document: dict[str, Any] = {}

    @classmethod
    def claims(cls, path: Path) -> bool:
        """Never guessed (a folder of MLServer's holds its artifact too, which another runtime may claim): an
        MLServer folder (``--mlserver``), ``runtime = "mlserver"`` or ``--model NAME=mlserver:DIR`` names it."""
        return False

    def open(self, path: Path) -> MLModel:
        # The implementation is Python imported from the model's folder, and its load() reads what it likes
        # (MLServer's own runtimes unpickle): code runs, as with a pickle.
        self.require_trust(
            f"an MLServer runtime (Python imported from {path}, and whatever its load() reads)",
            safe_formats="serve the artifact with one of our runtimes instead, where it has one",
            pin_covers_it=False,
        )
        self.document, folder = settings_document(self.spec.options, path)
        settings = model_settings(self.document, folder, self.name, str(path))
        implementation = implementation_of(settings)
        model = implementation(settings)
        self.loop = ModelLoop(self.name)
        try:
            if self.loop.run(model.load()) is False:
                raise PluginError(f"{settings.implementation_}.load() returned False: the model is not ready")
        except BaseException:
            self.loop.close()  # no thread left behind by a model that never served
            self.loop = None
            raise
        model.ready = True
        self.description = f"MLServer runtime {settings.implementation_} ({path})"
        return model

    def derive(self) -> Derived:
        declared = tensors(self.document.get("inputs"), "inputs")
        if declared:
            self.inputs = declared
        schema = schema_of(declared) if declared else None
        fixture = fixture_of(declared) if declared else None
        outputs = tensors(self.document.get("outputs"), "outputs") or self.probed_outputs(fixture)
        return Derived(predict_schema=schema, predict_fixture=fixture, tensor_inputs=declared, tensor_outputs=outputs)

    def probed_outputs(self, derived_fixture: Any) -> list[dict[str, Any]] | None:
        """The outputs the model gives on the fixture: the names and datatypes MLServer would answer with."""
        fixture = derived_fixture
        if self.spec.predict_fixture is not None:
            fixture = read_json(self.spec.predict_fixture, "predict_fixture")
        if fixture is None:
            return None  # the base then says the model says too little
        return outputs_metadata(self.call(fixture))

    def call(self, payload: Any) -> Any:
        """The model's ``predict`` on the request ``payload`` makes, on the model's loop."""
        if self.loop is None:
            raise PluginError("the model is not loaded")
        request = request_of(payload, self.inputs, self.content_type)
        return self.loop.run(self.model.predict(request))

    def run_predict(self, X: Any) -> Any:
        return result_of(self.call(X))

    def unload(self) -> None:
        if self.loop is None:
            return
        try:
            self.loop.run(self.model.unload())
        except Exception as error:  # the model is dropped anyway; say why its own unload failed
            logger.warning("model %s: its MLServer unload() failed: %s", self.name, error)
        finally:
            self.loop.close()
            self.loop = None
