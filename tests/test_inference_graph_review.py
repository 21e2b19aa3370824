"""The InferenceServices of a pipeline's models in KServe's ``InferenceGraph``: two models whose names make one DNS
label (``iris_proba``, ``iris-proba``) get one each, so that no step calls the other's model."""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_inference_graph import write_graphs

PIPELINES = """
[pipelines.twins]
type = "sequence"
steps = [{ model = "iris_proba" }, { model = "iris-proba" }]
"""


@pytest.mark.unit
def test_two_models_of_one_label_get_an_inference_service_each(tmp_path: Path) -> None:
    written, _ = write_graphs(tmp_path, PIPELINES)
    steps = written["inferencegraph-twins.yaml"]["spec"]["nodes"]["root"]["steps"]
    services = [step["serviceName"] for step in steps]
    assert len(set(services)) == 2, services
    for service, model in zip(services, ["iris_proba", "iris-proba"], strict=True):
        predictor = written[f"inferenceservice-{service}.yaml"]["spec"]["predictor"]["model"]
        assert predictor["env"] == [{"name": "MLSERVER_MODEL_NAME", "value": model}]
        assert len(service) <= 63 and service.startswith("stevedore-server-iris-proba")
