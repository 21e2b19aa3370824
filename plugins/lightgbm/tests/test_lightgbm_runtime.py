"""The LightGBM runtime: boosters trained and saved here by LightGBM (model.txt, KServe's model.bst), served by
a real server (``stevedore-server run`` over loopback) from ``--model`` and from a KServe-style folder,
answering as ``Booster.predict``; a file cut short is a failed model with its reason, and the server (which
LightGBM's parser would abort) keeps serving."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import lightgbm
import numpy as np
import pytest
from sklearn.datasets import load_iris
from stevedore_runtime_lightgbm import LightGBMRuntime
from stevedore_runtime_lightgbm.files import missing_part

from stevedore_server.base.errors import PluginError
from stevedore_server.kit.runtime_testing import (
    StartServer,
    failure_reason,
    infer,
    model_file,
    predict,
    runtime_servers,
    tensor_values,
)

#: The runtime under test (its entry point's name).
RUNTIME = "lightgbm"
#: Rows asked of every model: a few of each species.
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3], [5.9, 3.0, 5.1, 1.8]]
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@dataclass(frozen=True)
class Artifacts:
    """A multiclass booster and a regression booster (with feature names) trained here on iris, and files."""

    multiclass: lightgbm.Booster
    regression: lightgbm.Booster
    folder: Path

    @property
    def text(self) -> Path:
        return self.folder / "model.txt"

    @property
    def regression_text(self) -> Path:
        return self.folder / "petal-width.txt"

    @property
    def kserve(self) -> Path:
        """A KServe-style model directory: model.bst, as KServe's and MLServer's LightGBM servers name it."""
        return self.folder / "kserve"

    @property
    def truncated(self) -> Path:
        return self.folder / "truncated.txt"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    folder = tmp_path_factory.mktemp("lightgbm-artifacts")
    X, y = load_iris(return_X_y=True)
    quiet = {"verbose": -1, "num_leaves": 7, "min_data_in_leaf": 5}
    multiclass = lightgbm.train(quiet | {"objective": "multiclass", "num_class": 3}, lightgbm.Dataset(X, y), 8)
    regression_data = lightgbm.Dataset(X[:, :3], X[:, 3], feature_name=FEATURES[:3])
    regression = lightgbm.train(quiet | {"objective": "regression"}, regression_data, 8)
    saved = Artifacts(multiclass, regression, folder)
    multiclass.save_model(saved.text)
    regression.save_model(saved.regression_text)
    saved.kserve.mkdir()
    (saved.kserve / "model.bst").write_bytes(saved.text.read_bytes())
    content = saved.text.read_bytes()
    saved.truncated.write_bytes(content[: len(content) // 2])
    return saved


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[StartServer]:
    """Servers of this runtime alone (``runtime_servers``), stopped after the test."""
    with runtime_servers(RUNTIME, tmp_path) as start:
        yield start


# -- served: the same answers as the booster ----------------------------------------------------------


@pytest.mark.server
def test_model_flag_and_kserve_folder_serve_what_the_booster_answers(serve: StartServer, artifacts: Artifacts) -> None:
    """``--model NAME=FILE`` and ``--model NAME=DIR`` (KServe's model.bst), runtime guessed from the content,
    and a file cut in half: the stevedore route and V2 answer Booster.predict's values (output ``predict``, as
    MLServer's LightGBM runtime); the cut file fails its model with the reason, and the server keeps serving."""
    edited = artifacts.text.parent
    (edited / "feature.txt").write_text(edit_first_tree(artifacts.text, "split_feature", "9"))
    (edited / "loop.txt").write_text(edit_first_tree(artifacts.text, "left_child", "0"))
    server = serve(
        "--model", f"iris={artifacts.text}",
        "--model", f"folder={artifacts.kserve}",
        "--model", f"petal={artifacts.regression_text}",
        "--model", f"truncated={artifacts.truncated}",
        "--model", f"feature={edited / 'feature.txt'}",
        "--model", f"loop={edited / 'loop.txt'}",
    )  # fmt: skip
    probabilities = artifacts.multiclass.predict(np.asarray(ROWS))
    for name in ("iris", "folder"):
        np.testing.assert_array_equal(predict(server, name, ROWS), probabilities)
        outputs = infer(server, name, ROWS)
        assert list(outputs) == ["predict"] and outputs["predict"]["datatype"] == "FP64"
        np.testing.assert_array_equal(tensor_values(outputs["predict"]), probabilities)

    rows = [row[:3] for row in ROWS]
    widths = artifacts.regression.predict(np.asarray(rows))
    np.testing.assert_array_equal(predict(server, "petal", rows), widths)
    np.testing.assert_array_equal(tensor_values(infer(server, "petal", rows)["predict"]), widths)
    schema = httpx.get(f"{server.url}/models/petal/schemas/predict", timeout=10).json()
    assert "petal_length" in str(schema)

    truncated = failure_reason(server, "truncated")
    assert "truncated.txt" in truncated and "not a whole LightGBM text model" in truncated
    # Indices LightGBM would follow out of bounds (a crash of the server, unchecked) or round a loop (a hang).
    assert "tree 0: split_feature must be" in failure_reason(server, "feature")
    assert "tree 0: left_child of node 0 is 0, no later node nor leaf" in failure_reason(server, "loop")
    assert server.process.poll() is None
    np.testing.assert_array_equal(predict(server, "iris", ROWS), probabilities)  # still serving


def edit_first_tree(model: Path, field: str, first: str) -> str:
    """The text of ``model`` with the first value of ``field`` in its first tree replaced by ``first`` (padded with
    zeros to the old value's length: the tree keeps the size the header declares)."""
    head, tree, rest = model.read_text().partition("\nTree=0\n")
    lines = rest.split("\n")
    at = next(index for index, line in enumerate(lines) if line.startswith(f"{field}="))
    values = lines[at].partition("=")[2].split(" ")
    lines[at] = f"{field}=" + " ".join([first.zfill(len(values[0])), *values[1:]])
    return head + tree + "\n".join(lines)


# -- the runtime class and its checks, in process ----------------------------------------------------


def test_runtime_derives_schema_fixture_and_output(artifacts: Artifacts, tmp_path: Path) -> None:
    runtime = LightGBMRuntime(model_file(RUNTIME, artifacts.kserve, tmp_path / "cache"))
    runtime.load()
    schema = runtime.resolved_schema("predict")
    assert schema is not None and schema["items"]["minItems"] == schema["items"]["maxItems"] == 4
    assert runtime.resolved_fixture("predict") == [[0.0, 0.0, 0.0, 0.0]]
    assert runtime.tensor_outputs == [{"name": "predict", "datatype": "FP64", "shape": [-1, 3]}]
    np.testing.assert_array_equal(runtime.predict(ROWS), artifacts.multiclass.predict(np.asarray(ROWS)))
    with pytest.raises(PluginError, match=r"no 'predict_proba' output"):
        LightGBMRuntime(model_file(RUNTIME, artifacts.text, tmp_path / "cache", output="predict_proba")).load()


def test_a_model_cut_anywhere_is_refused_or_read_whole(artifacts: Artifacts, tmp_path: Path) -> None:
    """LightGBM 4 aborts the process on a text model cut short (``terminate called``): every cut of the file
    within its trees or its parameters is refused by the check first, with what is missing; the cuts the check
    lets through (after the trees, outside the parameters) LightGBM reads or refuses with an exception (not an abort),
    in a process of their own here."""
    for path in (artifacts.text, artifacts.regression_text):
        content = path.read_bytes()
        assert missing_part(content) is None
        passed = [cut for cut in range(len(content)) if missing_part(content[:cut]) is None]
        trees_end = content.index(b"\nend of trees\n") + len(b"\nend of trees\n")
        opened = content.index(b"\nparameters:\n") + len(b"\nparameters:\n")
        closed = content.index(b"\nend of parameters\n") + len(b"\nend of parameters\n")
        assert passed and all(cut >= trees_end for cut in passed)
        assert not [cut for cut in passed if opened <= cut < closed]
        cuts = tmp_path / "cuts"
        cuts.mkdir(exist_ok=True)
        for cut in passed:
            (cuts / f"{cut}.txt").write_bytes(content[:cut])
        reader = (
            "import sys, pathlib, lightgbm\n"
            "for path in sorted(pathlib.Path(sys.argv[1]).iterdir()):\n"
            "    try:\n"
            "        lightgbm.Booster(model_str=path.read_text())\n"
            "    except Exception:\n"  # an exception is a failed model; an abort would be the server's end
            "        pass\n"
        )
        done = subprocess.run([sys.executable, "-c", reader, str(cuts)], capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        shutil.rmtree(cuts)
    runtime = LightGBMRuntime(model_file(RUNTIME, artifacts.truncated, tmp_path / "cache"))
    with pytest.raises(PluginError, match=r"truncated.txt .* is not a whole LightGBM text model: it has no 'end of"):
        runtime.load()


def test_runtime_claims_lightgbm_text_only(artifacts: Artifacts, tmp_path: Path) -> None:
    assert LightGBMRuntime.claims(Path("/remote/model.txt"))
    assert not LightGBMRuntime.claims(Path("/remote/model.bst"))  # by name it may be XGBoost's: not claimed
    assert LightGBMRuntime.claims(artifacts.kserve / "model.bst")  # by its content it is ours
    assert LightGBMRuntime.claims(artifacts.kserve)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model\n")
    assert not LightGBMRuntime.claims(notes)
    assert not LightGBMRuntime.claims(artifacts.folder)  # several models in it: say which


@pytest.mark.filterwarnings("ignore:.*UBJSON format as default:UserWarning")
def test_xgboost_and_lightgbm_never_both_claim_a_bst(artifacts: Artifacts, tmp_path: Path) -> None:
    """KServe names both frameworks' files model.bst: the content decides, so a guessed runtime is never
    ambiguous."""
    xgboost_runtime = pytest.importorskip("stevedore_runtime_xgboost").XGBoostRuntime
    xgboost = pytest.importorskip("xgboost")
    X, y = load_iris(return_X_y=True)
    other = tmp_path / "xgboost"
    other.mkdir()
    xgboost.XGBClassifier(n_estimators=2).fit(X, y).save_model(other / "model.bst")
    for folder, owner in ((artifacts.kserve, "lightgbm"), (other, "xgboost")):
        claims = {"lightgbm": LightGBMRuntime.claims(folder), "xgboost": xgboost_runtime.claims(folder)}
        assert claims == {"lightgbm": owner == "lightgbm", "xgboost": owner == "xgboost"}
