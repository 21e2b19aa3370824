"""The README's example code runs, so it cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import skops.io
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from stevedore_server.testing import self_test

README = (Path(__file__).parent.parent / "README.md").read_text()


def python_block(containing: str) -> str:
    """The README's one python example containing ``containing``."""
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL) if containing in b]
    return block


def test_the_readme_predictor_is_served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The example reads package data next to its module: write it as a real module in a package.
    package = tmp_path / "readme_plugin"
    (package / "schemas").mkdir(parents=True)
    (package / "fixtures").mkdir()
    (package / "__init__.py").write_text(python_block("class LogReg(Predictor)"))
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


def test_the_readme_settings_reference_is_the_settings_object() -> None:
    from stevedore_server.base.settings import reference

    start = README.index("<!-- settings-reference")
    table = README[README.index("\n", start) + 1 : README.index("<!-- /settings-reference -->")]
    assert table == reference(), "regenerate the README table with stevedore_server.base.settings.reference()"


def test_the_readme_example_settings_file_loads(tmp_path: Path) -> None:
    from stevedore_server.base.settings import Settings

    (block,) = [b for b in re.findall(r"```toml\n(.*?)```", README, flags=re.DOTALL) if "stevedore.toml" in b]
    (tmp_path / "stevedore.toml").write_text(block)
    settings = Settings.load({}, config=str(tmp_path / "stevedore.toml"))
    assert settings.workers == 2 and settings.for_model("iris").max_batch_size == 32
