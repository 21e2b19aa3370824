"""Which MLflow models run code when they are loaded, read from the ``MLmodel`` file before MLflow is asked.

pyfunc loads a model with its flavour's loader module, and most flavours unpickle (pickle, cloudpickle: a
``PythonModel``, scikit-learn's pickle formats, LightGBM's scikit-learn models), import the model's own code
(``code_paths``, models from code), or read a skops file whose trusted types the model names itself (MLflow 3's
scikit-learn default, which MLflow itself gates as code execution). Only flavours whose files are data are
loaded without trust.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from stevedore_server.base.errors import PluginError

MLMODEL = "MLmodel"


def model_folder(path: Path) -> Path:
    """The folder of an MLflow model: ``path`` itself, or the folder of the ``MLmodel`` file ``path``."""
    folder = path.parent if path.name == MLMODEL and path.is_file() else path
    if not (folder / MLMODEL).is_file():
        raise PluginError(f"{path} is not an MLflow model: it has no {MLMODEL} file")
    return folder


def read_mlmodel(folder: Path) -> Mapping[str, Any]:
    """The ``MLmodel`` file of ``folder``, as YAML (PluginError where it is not readable YAML of a mapping)."""
    try:
        mlmodel = yaml.safe_load((folder / MLMODEL).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise PluginError(f"cannot read {folder / MLMODEL}: {error}") from None
    if not isinstance(mlmodel, Mapping):
        raise PluginError(f"{folder / MLMODEL} is not an MLflow model description (a YAML mapping)")
    return mlmodel


def code_run_by(mlmodel: Mapping[str, Any]) -> str | None:
    """What, in the model ``mlmodel`` describes, runs code when MLflow loads it (None: nothing known to)."""
    flavors = mlmodel.get("flavors")
    pyfunc = flavors.get("python_function") if isinstance(flavors, Mapping) else None
    if not isinstance(flavors, Mapping) or not isinstance(pyfunc, Mapping):
        raise PluginError(f"the {MLMODEL} file has no python_function flavour: MLflow cannot load it as pyfunc")
    if pyfunc.get("code") or pyfunc.get("model_code_path"):
        return "an MLflow model with code of its own (code_paths or a model from code)"
    loader = str(pyfunc.get("loader_module", ""))
    if loader in DATA_ONLY and DATA_ONLY[loader](flavors):
        return None
    return f"an MLflow model ({loader or 'no loader module'}: {stored_as(loader, flavors)})"


def stored_as(loader: str, flavors: Mapping[str, Any]) -> str:
    """How a flavour stores its model, for the refusal's message."""
    if loader == "mlflow.sklearn":
        sklearn = flavors.get("sklearn")
        found = sklearn.get("serialization_format") if isinstance(sklearn, Mapping) else None
        if found == "skops":
            return "skops, with the types to trust named by the model itself"
        return str(found or "pickle")
    if loader == "mlflow.pyfunc.model":
        return "a cloudpickled PythonModel"
    return "a format that may run code"


def flavour_setting(flavors: Mapping[str, Any], flavour: str, key: str) -> Any:
    settings = flavors.get(flavour)
    return settings.get(key) if isinstance(settings, Mapping) else None


def onnx_data(flavors: Mapping[str, Any]) -> bool:
    return True  # an ONNX protobuf


def xgboost_data(flavors: Mapping[str, Any]) -> bool:
    # XGBoost's own model files (JSON, UBJ, its legacy binary), for boosters and scikit-learn wrappers alike; the
    # class MLflow imports to read one is named by the model, so it must be XGBoost's.
    return str(flavour_setting(flavors, "xgboost", "model_class")).startswith("xgboost.")


def lightgbm_data(flavors: Mapping[str, Any]) -> bool:
    # LightGBM's text model file, for a Booster; its scikit-learn models are pickled.
    return bool(flavour_setting(flavors, "lightgbm", "model_class") == "lightgbm.basic.Booster")


#: pyfunc loader modules whose files are data only, where their flavour's settings say so.
DATA_ONLY: dict[str, Callable[[Mapping[str, Any]], bool]] = {
    "mlflow.onnx": onnx_data,
    "mlflow.xgboost": xgboost_data,
    "mlflow.lightgbm": lightgbm_data,
}
