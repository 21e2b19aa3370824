"""stevedore-server runtime: MLflow pyfunc models, a folder with an ``MLmodel`` file, served with no code.

``--model NAME=DIR`` (or ``[models.NAME] uri = "DIR"``) serves the folder ``mlflow.pyfunc.load_model`` reads;
the predict schema, fixture and V2 tensors come from the model's signature and input example. Importing this
package imports neither MLflow nor pandas: the server asks every runtime whether it claims a file, and only
loading a model pays for them.
"""

from __future__ import annotations

from .runtime import MLflowRuntime

__all__ = ["MLflowRuntime"]
