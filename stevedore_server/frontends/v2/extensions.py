"""Triton's statistics and model configuration extensions, for both transports: their answers in Triton's JSON
form, which REST sends as it is and gRPC parses into its messages (``ModelStatisticsResponse``,
``ModelConfigResponse``), so both answer alike. Nothing here knows HTTP or gRPC.

The configuration says what our models can say in Triton's terms: the name,
the platform (``stevedore``, as the model metadata says) and backend (the
runtime of a model file, else ``stevedore``), ``max_batch_size`` and
``dynamic_batching`` where the model batches (its inputs' and outputs' ``dims``
are then without the batch dimension, as Triton's are), the model's threads as
its instance group. Triton's ``max_batch_size`` bounds a batch's rows; ours
bounds the requests merged into one call, each of any number of rows.
"""

from __future__ import annotations

from typing import Any

from stevedore_server.base.errors import NotReady
from stevedore_server.base.settings import Settings
from stevedore_server.core.inference import Inference, ModelRef
from stevedore_server.core.served_models import Registry
from stevedore_server.core.serving import ServingModel
from stevedore_server.core.signature import Signature
from stevedore_server.core.tensors import TensorSpec
from stevedore_server.model_files import FilePredictor

#: Triton's ``DataType`` of each V2 datatype.
DATA_TYPES = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING",
    "BF16": "TYPE_BF16",
}


# -- statistics -------------------------------------------------------------------


def models_for_statistics(inference: Inference, registry: Registry, name: str, version: str) -> list[ServingModel]:
    """The served models a statistics request names: every one (no name), every version of a model (no version),
    or one version; NotFound for a model or version the server does not have, NotReady for one not served."""
    if not name:
        return [model for model in registry.models if model.runtime is not None]
    if version:
        return [inference.resolve(ModelRef(name, version))]
    registry.get(name)  # NotFound, with suggestions, for a model the server does not have
    served = [model for model in registry.versions_of(name) if model.runtime is not None]
    if not served:
        raise NotReady(f"model {name!r} is not served: no version of it is loaded")
    return served


def statistics_body(models: list[ServingModel]) -> dict[str, Any]:
    """Triton's ``ModelStatisticsResponse`` in its JSON form."""
    return {"model_stats": [model_statistics(model) for model in models]}


def model_statistics(model: ServingModel) -> dict[str, Any]:
    if model.runtime is None:  # models_for_statistics gives served models only
        raise NotReady(f"model {model.name!r} version {model.version!r} is not served")
    return {"name": model.name, "version": model.version, **model.runtime.statistics.snapshot().as_dict()}


# -- configuration ------------------------------------------------------------------


def config_body(model: ServingModel, signature: Signature, settings: Settings) -> dict[str, Any]:
    """Triton's ``ModelConfig`` in its JSON form (REST's answer; gRPC's is ``{"config": ...}``)."""
    limits = settings.limits_for(model.predictor)
    batched = batches(model, signature)
    config: dict[str, Any] = {
        "name": model.name,
        "platform": "stevedore",
        "backend": backend_of(model),
        "max_batch_size": limits.max_batch_size if batched else 0,
        "input": [tensor_config(spec, batched) for spec in signature.inputs],
        "output": [tensor_config(spec, batched) for spec in signature.outputs],
        "instance_group": [{"name": model.name, "kind": "KIND_CPU", "count": limits.max_concurrency}],
    }
    if batched:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": round(limits.max_batch_time * 1_000_000)}
    return config


def batches(model: ServingModel, signature: Signature) -> bool:
    """The model's requests are merged into batches here, along the first dimension of every tensor."""
    runtime = model.runtime
    if runtime is None or not runtime.statistics.rows_are_inferences:
        return False
    return all(spec.shape[:1] == (-1,) for spec in (*signature.inputs, *signature.outputs))


def backend_of(model: ServingModel) -> str:
    """The runtime reading a model file (``sklearn``, ``onnx``...); ``stevedore`` for a plugin's code."""
    predictor = model.predictor
    return predictor.spec.runtime if isinstance(predictor, FilePredictor) else "stevedore"


def tensor_config(spec: TensorSpec, batched: bool) -> dict[str, Any]:
    """A ``ModelInput`` or ``ModelOutput``: a batched model's dims are without the batch dimension, and a tensor of
    one value a row is Triton's ``dims: [1]`` reshaped to a scalar."""
    config: dict[str, Any] = {"name": spec.name, "data_type": DATA_TYPES.get(spec.datatype, "TYPE_INVALID")}
    dims = list(spec.shape[1:] if batched else spec.shape)
    if batched and not dims:
        dims, config["reshape"] = [1], {"shape": []}
    config["dims"] = dims
    return config
