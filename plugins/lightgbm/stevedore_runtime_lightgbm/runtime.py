"""``LightGBMRuntime``: a LightGBM booster served from its text model file, answering as MLServer's LightGBM
runtime does (MLServer 1.7.1's ``mlserver_lightgbm``: one output, ``predict``, what ``Booster.predict`` gives:
a regression's values, a binary model's probabilities, a multiclass model's rows of probabilities). A text model
runs no code when read: no trust is needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stevedore_server.base.errors import PluginError
from stevedore_server.model_files import Derived, FilePredictor, output_tensor, rows_schema

from . import files

#: MLServer's name of the one output.
PREDICT = "predict"


class LightGBMRuntime(FilePredictor):
    """A LightGBM booster read from a text model file (``model.txt``, KServe's ``model.bst``), or the one such
    file of a folder."""

    # A damaged or crafted file can crash its native parser: read it in a child process first.
    read_aside_first = True

    patterns = files.PATTERNS
    # V2 tensors and large payloads come as arrays, with no lists made; LightGBM predicts on float64 natively.
    numpy_input = True
    # Predicting a few rows is a short computation that never waits: the server measures it at startup.
    inline = True

    @classmethod
    def recognizes(cls, path: Path) -> bool:
        return files.recognizes(path)

    def open(self, path: Path) -> Any:
        artifact = self.artifact_in(path)
        content = artifact.read_bytes()
        files.check_whole(content, artifact)  # before LightGBM's parser, which aborts the process on a cut file
        # Imported here, not with the runtime (over a second: it brings scikit-learn): the server asks every
        # runtime whether it reads a file, and only this one's models need LightGBM.
        import lightgbm

        try:
            return lightgbm.Booster(model_str=content.decode())
        # ValueError: a file that is not UTF-8, or whose pandas_categorical line (read by LightGBM's Python) is cut.
        except (ValueError, lightgbm.basic.LightGBMError) as error:
            raise PluginError(
                f"{artifact} ({len(content)} bytes) cannot be read as a LightGBM model: {type(error).__name__}: {error}"
            ) from error

    def derive(self) -> Derived:
        self.chosen_output([PREDICT], PREDICT)
        width = int(self.model.num_feature())
        features = describe_features(width, self.model.feature_name())
        fixture = [[0.0] * width]
        return Derived(
            predict_schema=rows_schema(width) | {"description": features},
            predict_fixture=fixture,
            tensor_outputs=[output_tensor(PREDICT, self.run_predict(self.convert_prediction_input(fixture)))],
            description=f"LightGBM booster from {self.spec.shown}: takes {features}; answers {PREDICT}",
        )

    def convert_prediction_input(self, payload: Any) -> Any:
        return np.asarray(payload, dtype=np.float64)

    def run_predict(self, X: Any) -> Any:
        return self.model.predict(X)


def describe_features(width: int, names: list[str]) -> str:
    # LightGBM names unnamed features Column_0, Column_1, ...: only names someone gave are worth listing.
    if names and names != [f"Column_{index}" for index in range(width)]:
        return f"rows of {width} numbers: {', '.join(names)}"
    return f"rows of {width} numbers"
