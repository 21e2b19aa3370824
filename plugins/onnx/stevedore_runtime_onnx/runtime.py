"""``OnnxRuntime``: an ONNX model served by an ONNX Runtime ``InferenceSession`` on the CPU.

Its inputs and outputs are the session's, by name, type and shape (``tensors``). It answers every output: the
one output's value, or an object of them by name; ``output = NAME`` in its settings makes it answer that one
(and a V2 request naming none get it). An ONNX file runs no code when read: no trust is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stevedore_server.base.errors import PluginError
from stevedore_server.model_files import Derived, FilePredictor, ModelFile

from .tensors import Tensor, payload_fixture, payload_schema, unzipped

#: CPU only: the onnxruntime wheel this runtime depends on has no other provider worth asking for.
PROVIDERS = ["CPUExecutionProvider"]
#: ``[models.NAME.options]`` passed to ONNX Runtime's ``SessionOptions`` (threads of one inference, of the
#: graph's independent branches).
SESSION_OPTIONS = ("intra_op_num_threads", "inter_op_num_threads")


class OnnxRuntime(FilePredictor):
    """An ONNX model read from a ``.onnx`` file, or the one such file of a folder (KServe's ``model.onnx``)."""

    # A damaged or crafted file can crash its native parser: read it in a child process first.
    read_aside_first = True

    patterns = ("*.onnx",)
    # V2 tensors and large payloads come as arrays, with no lists made.
    numpy_input = True
    # A small model's inference is a short computation that never waits: the server measures it at startup.
    inline = True

    def __init__(self, spec: ModelFile) -> None:
        super().__init__(spec)
        self.inputs: list[Tensor] = []
        self.outputs: list[Tensor] = []
        #: The outputs ``predict`` answers: every one, or the one the settings name.
        self.answered: list[str] = []
        #: The ZipMap outputs, by name: their element's dtype.
        self.zipmaps: dict[str, Any] = {}

    def open(self, path: Path) -> Any:
        artifact = self.artifact_in(path)
        # Imported here, not with the runtime: the server asks every runtime whether it reads a file.
        import onnxruntime

        try:
            return onnxruntime.InferenceSession(
                str(artifact), sess_options=self.session_options(onnxruntime), providers=PROVIDERS
            )
        except Exception as error:  # ONNX Runtime's own errors (InvalidProtobuf, Fail, ...) are no subclass of one
            size = artifact.stat().st_size if artifact.exists() else 0
            raise PluginError(
                f"{artifact} ({size} bytes) cannot be read as an ONNX model: {type(error).__name__}: {error}"
            ) from error

    def session_options(self, onnxruntime: Any) -> Any:
        options = onnxruntime.SessionOptions()
        for name, value in self.spec.options.items():
            if name not in SESSION_OPTIONS or type(value) is not int or value < 0:
                raise PluginError(
                    f"[models.{self.name}.options] {name} = {value!r}: the ONNX runtime takes "
                    f"{', '.join(SESSION_OPTIONS)}, each a number of threads (0: ONNX Runtime's default)"
                )
            setattr(options, name, value)
        return options

    def derive(self) -> Derived:
        self.inputs = [Tensor.of(node, "input") for node in self.model.get_inputs()]
        self.outputs = [Tensor.of(node, "output") for node in self.model.get_outputs()]
        names = [tensor.name for tensor in self.outputs]
        chosen = self.chosen_output(names, None)
        self.answered = [chosen] if chosen else names
        self.zipmaps = {tensor.name: tensor.dtype for tensor in self.outputs if tensor.zipmap}
        return Derived(
            predict_schema=payload_schema(self.inputs),
            predict_fixture=payload_fixture(self.inputs),
            tensor_inputs=[tensor.v2() for tensor in self.inputs],
            tensor_outputs=[tensor.v2() for tensor in self.outputs],
            default_outputs=[self.spec.output] if self.spec.output else None,
            description=self.summary(),
        )

    def summary(self) -> str:
        def listed(tensors: list[Tensor]) -> str:
            return ", ".join(f"{tensor.name} {tensor.datatype} {list(tensor.shape)}" for tensor in tensors)

        return f"ONNX model from {self.spec.shown}: inputs {listed(self.inputs)}; outputs {listed(self.outputs)}"

    # -- the hot path -------------------------------------------------------------------

    def convert_prediction_input(self, payload: Any) -> dict[str, Any]:
        if len(self.inputs) == 1:
            return {self.inputs[0].name: self.inputs[0].array(payload)}
        return {tensor.name: tensor.array(payload[tensor.name]) for tensor in self.inputs}

    def run_predict(self, feed: dict[str, Any]) -> Any:
        results = self.run(self.answered, feed)
        return results[self.answered[0]] if len(self.answered) == 1 else results

    def predict_outputs(self, payload: Any, names: tuple[str, ...]) -> dict[str, Any]:
        return self.run(list(names), self.convert_prediction_input(payload))

    def run(self, names: list[str], feed: dict[str, Any]) -> dict[str, Any]:
        """The outputs ``names`` of one inference, by name; a ZipMap's as rows of probabilities."""
        results = dict(zip(names, self.model.run(names, feed), strict=True))
        for name, dtype in self.zipmaps.items():
            if name in results:
                results[name] = unzipped(results[name], dtype)
        return results
