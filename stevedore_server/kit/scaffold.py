"""``stevedore-server new-plugin``: a ready-to-build plugin package."""

from __future__ import annotations

import keyword
import re
from pathlib import Path
from string import Template

import orjson

from stevedore_server.base.errors import StevedoreError
from stevedore_server.predictor import NAME_PATTERN

PYPROJECT = Template("""[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "$distribution"
version = "0.1.0"
description = "The $model_name model, served by stevedore-server"
requires-python = ">=3.11"
dependencies = ["stevedore-server"]

[project.optional-dependencies]
test = ["pytest>=8"]

[project.entry-points."stevedore.predictors"]
"$model_name" = "$package.predictor:$class_name"

[tool.setuptools.packages.find]
include = ["$package*"]

[tool.setuptools.package-data]
$package = ["schemas/*.json", "fixtures/*.json"]

[tool.pytest.ini_options]
# stevedore-server's pytest plugin checks each predictor of this package as the server does at startup
# (the pyproject.toml::stevedore[...] items). To leave a model out: stevedore_skip = ["$model_name: why"]
""")

PREDICTOR = Template('''"""The $model_name predictor. Replace the placeholder model with yours."""

from __future__ import annotations

from typing import Any

from stevedore_server import Predictor


class $class_name(Predictor):
    name = "$model_name"
    version = "1"
    description = "Placeholder: predicts the sum of each row."
    predict_schema = "schemas/predict.json"
    score_schema = "schemas/score.json"
    predict_fixture = "fixtures/predict.json"
    score_fixture = "fixtures/score.json"

    def load(self) -> None:
        # Load your artifact from package data, e.g. skops.io.load(self.resource_path("model.skops")),
        # and set `artifact = "model.skops"` so the catalogue shows when it was made.
        self.model = sum

    def run_predict(self, rows: list[list[float]]) -> list[float]:
        return [self.model(row) for row in rows]

    def convert_score_input(self, items: list[dict[str, Any]]) -> tuple[list[list[float]], list[float]]:
        return [item["x"] for item in items], [item["y"] for item in items]

    def run_scores(self, rows: list[list[float]], expected: list[float]) -> float:
        """Negative mean absolute error: 0 is perfect."""
        errors = [abs(p - y) for p, y in zip(self.run_predict(rows), expected, strict=True)]
        return -sum(errors) / len(errors)
''')

TEST = Template('''"""The $model_name model's own tests.

stevedore-server's pytest plugin adds a check of each predictor of this package (the
pyproject.toml::stevedore[...] items): its fixtures valid against its schemas, load(), predict and score on
the fixtures, outputs the server can write, its tensors; failing with the words `stevedore-server check` uses.
"""

from $package.predictor import $class_name


def test_predicts_row_sums(stevedore_client):
    # A real `stevedore-server run` serving this package, over loopback.
    response = stevedore_client.post("/models/$model_name/predict", json=[[1.0, 2.0], [3.0, 4.5]])

    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [3.0, 7.5]


def test_a_variant_served_from_a_test(stevedore_serve):
    client = stevedore_serve($class_name(version="2", predict_fixture=[[0.5, 0.25]]))

    response = client.post("/models/$model_name/versions/2/predict", json=[[1.0, 1.0]])
    assert response.json()["predictions"] == [2.0]
''')

README = Template("""# $distribution

The `$model_name` model as a stevedore-server plugin.

    pip install .
    stevedore-server check
    stevedore-server run

Test: `pip install -e .[test] && pytest`. Besides the tests in `tests/`, pytest checks every predictor of
this package as `stevedore-server check` does, and the tests get a real server over loopback.
""")

ROWS = {"type": "array", "minItems": 1, "items": {"type": "array", "minItems": 1, "items": {"type": "number"}}}
PREDICT_SCHEMA = {"$schema": "https://json-schema.org/draft/2020-12/schema", **ROWS}
SCORE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "required": ["x", "y"],
        "additionalProperties": False,
        "properties": {"x": ROWS["items"], "y": {"type": "number"}},
    },
}
PREDICT_FIXTURE = [[1.0, 2.0, 3.0]]
SCORE_FIXTURE = [{"x": [1.0, 2.0], "y": 3.0}, {"x": [0.5, 0.5], "y": 1.0}]


def identifiers(name: str) -> dict[str, str]:
    if not NAME_PATTERN.match(name):
        raise StevedoreError(f"model name {name!r} must be letters, digits, '.', '_' or '-'")
    snake = re.sub(r"[^a-z0-9_]", "_", name.lower())
    package = f"stevedore_{snake}"
    if not package.isidentifier() or keyword.iskeyword(package):
        raise StevedoreError(f"model name {name!r} gives no valid Python package name")
    class_name = "".join(part.capitalize() for part in snake.split("_") if part) + "Predictor"
    return {
        "model_name": name,
        "distribution": f"stevedore-{snake.replace('_', '-')}",
        "package": package,
        "class_name": class_name if class_name[0].isalpha() else "Model" + class_name,
    }


def create_plugin(name: str, directory: Path | None = None) -> Path:
    """Write the plugin package for model ``name``; returns its directory."""
    names = identifiers(name)
    root = directory or Path.cwd() / names["distribution"]
    if root.exists() and any(root.iterdir()):
        raise StevedoreError(f"{root} exists and is not empty")
    package = root / names["package"]
    files = {
        root / "pyproject.toml": PYPROJECT.substitute(names),
        root / "README.md": README.substitute(names),
        root / "tests" / "test_predictor.py": TEST.substitute(names),
        package / "__init__.py": f'"""The {name} stevedore-server plugin."""\n',
        package / "predictor.py": PREDICTOR.substitute(names),
        package / "schemas" / "predict.json": _json(PREDICT_SCHEMA),
        package / "schemas" / "score.json": _json(SCORE_SCHEMA),
        package / "fixtures" / "predict.json": _json(PREDICT_FIXTURE),
        package / "fixtures" / "score.json": _json(SCORE_FIXTURE),
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _json(value: object) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n"
