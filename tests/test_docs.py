"""The documentation's example code runs, so it cannot rot (the README and the pages: tests/documentation.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import skops.io
import yaml
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from stevedore_server.testing import self_test

from .documentation import README, between, block, page


def python_block(containing: str) -> str:
    """The documentation's one python example containing ``containing`` (the README or any page)."""
    return block("python", containing)


def test_the_plugin_pages_predictor_is_served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The example reads package data next to its module: write it as a real module in a package.
    package = tmp_path / "readme_plugin"
    (package / "schemas").mkdir(parents=True)
    (package / "fixtures").mkdir()
    (package / "__init__.py").write_text(block("python", "class LogReg(Predictor)", page("plugins/writing.md")))
    row = '{"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4}'
    (package / "schemas" / "predict.json").write_text(f'{{"type": "array", "items": {row}}}')
    labelled = f'{{"type": "object", "properties": {{"x": {row}, "y": {{"type": "integer"}}}}}}'
    (package / "schemas" / "score.json").write_text(f'{{"type": "array", "items": {labelled}}}')
    (package / "fixtures" / "predict.json").write_text("[[5.1, 3.5, 1.4, 0.2]]")
    (package / "fixtures" / "score.json").write_text('[{"x": [5.1, 3.5, 1.4, 0.2], "y": 0}]')
    data = load_iris()
    skops.io.dump(LogisticRegression(max_iter=500).fit(data.data, data.target), package / "model.skops")
    monkeypatch.syspath_prepend(str(tmp_path))

    import readme_plugin

    entry = self_test(readme_plugin.LogReg())
    assert entry.predictor.predict([[6.7, 3.0, 5.2, 2.3]]).tolist() == [2]
    assert entry.predictor.score([{"x": [5.1, 3.5, 1.4, 0.2], "y": 0}]) == 1.0


def test_the_settings_reference_page_is_the_settings_object() -> None:
    from stevedore_server.base.settings import reference

    table = between("settings-reference", page("reference/settings.md"))
    assert table == reference(), "regenerate the table of docs/reference/settings.md with settings.reference()"


def test_the_example_settings_file_loads(tmp_path: Path) -> None:
    from stevedore_server.base.settings import Settings

    (tmp_path / "stevedore.toml").write_text(block("toml", "# stevedore.toml", page("operations/settings.md")))
    settings = Settings.load({}, config=str(tmp_path / "stevedore.toml"))
    assert settings.workers == 2 and settings.for_model("iris").max_batch_size == 32


def test_the_readme_plugin_is_served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's ten-line plugin, self-tested as the server does at startup, then asked as a client asks."""
    (tmp_path / "readme_row_sum.py").write_text(block("python", "class RowSum(Predictor)", README))
    monkeypatch.syspath_prepend(str(tmp_path))

    import readme_row_sum

    entry = self_test(readme_row_sum.RowSum())
    assert entry.predictor.predict([[1.0, 2.0], [3.0, 4.5]]) == [3.0, 7.5]
    assert 'row-sum = "my_package.predictor:RowSum"' in block("toml", "stevedore.predictors", README)


def test_the_kserve_pages_manifests_are_what_manifests_writes() -> None:
    """The model-file runtime's arguments and the sample InferenceService shown in "Coming from KServe" are those
    ``stevedore-server manifests --storage-uri s3://models/iris/model.skops`` writes."""
    from stevedore_server.deploy.manifests import Deployment, files_inference_service, files_runtime

    text = page("coming-from-kserve.md")
    deployment = Deployment("registry.example/models:1", [], storage_uri="s3://models/iris/model.skops")
    runtime = files_runtime(deployment)
    assert runtime["metadata"]["name"] == "stevedore-server-files" and "stevedore-server-files" in text
    (server,) = runtime["spec"]["containers"]
    assert yaml.safe_load(block("yaml", "--model_name", text)) == {"args": server["args"]}
    shown = yaml.safe_load(block("yaml", "kind: InferenceService", text))
    written = files_inference_service(deployment)
    assert {key: written[key] for key in ("apiVersion", "kind")} == {key: shown[key] for key in ("apiVersion", "kind")}
    assert shown["metadata"]["name"] == written["metadata"]["name"]
    assert shown["spec"]["predictor"]["model"] == written["spec"]["predictor"]["model"]
    formats = [entry["name"] for entry in runtime["spec"]["supportedModelFormats"]]
    assert formats == ["sklearn", "xgboost", "lightgbm", "onnx", "mlflow"]
    assert all(f"`{name}`" in text for name in formats)
