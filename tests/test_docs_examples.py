"""Every fenced example of the README and the site's pages is run by a test, or marked as not run with the reason
(``<!-- not run: REASON -->`` on the line just before its fence), so no example rots unseen.

``RUN`` names, for each test that runs examples, the examples it runs; that test's module must name each (a string
literal holding the substring that finds it), so an entry cannot point at a test that never reads its block.
The examples no other module runs are run here: the settings files through the real settings loader, the
entry-point tables as pyproject tables, the key file through the server's reader, the ``manifests`` commands, and
the curl examples (the quickstart's tour, V2 over REST, the model repository, training, KServe's) against one real
``stevedore-server run`` of the example plugin with only the host and port changed; the model-file and MLServer
examples start the server their page shows."""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import re
import shlex
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import EntryPoint, distribution
from pathlib import Path

import httpx
import joblib
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from stevedore_server.base.settings import Settings
from stevedore_server.base.sources import HOOKS_GROUP, PREDICTORS_GROUP
from stevedore_server.frontends.auth import read_key_file

from .documentation import README, REPO, Fenced, block, fenced, page, page_names
from .venvs import Server, Venv, offline_env

#: Pages whose examples are not checked here yet: the observability pages, being written with tests of their own.
UNCHECKED: tuple[str, ...] = ()

#: This module, and the showcase's test of its README's commands (its tests read the README by section).
HERE = "tests/test_docs_examples.py"
SHOWCASE = "contrib/showcase/tests/test_showcase_examples.py::test_the_documented_command_answers_as_shown"
#: Each test that runs examples -> the examples it runs, each as (page, a substring found in that block only).
RUN: dict[str, list[tuple[str, str]]] = {
    "tests/test_docs.py::test_the_readme_plugin_is_served": [("README.md", "class RowSum(Predictor)")],
    "tests/test_docs.py::test_the_kserve_pages_manifests_are_what_manifests_writes": [
        ("coming-from-kserve.md", "--model_name"),
        ("coming-from-kserve.md", "kind: InferenceService"),
    ],
    "tests/test_docs.py::test_the_example_settings_file_loads": [("operations/settings.md", "# stevedore.toml")],
    "tests/test_lazy_models.py::test_the_scaling_out_example_loads_iris_at_startup_pinned_and_the_others_on_their_first_"
    "request": [("operations/scaling-out.md", "many models, a few busy at a time")],
    "tests/test_docs.py::test_the_plugin_pages_predictor_is_served": [
        ("plugins/writing.md", "class LogReg(Predictor)")
    ],
    "tests/test_readme_clients.py::test_the_readme_request_answers_what_it_shows": [("README.md", "curl")],
    "tests/test_readme_clients.py::test_a_client_example_gives_the_results_it_shows": [
        ("protocols/v2-grpc.md", "tritonclient.grpc"),
        ("protocols/v2-rest.md", "tritonclient.http"),
    ],
    "tests/test_ray.py::test_the_config_only_file_is_a_serve_config_that_serve_deploys": [
        ("deployment/ray.md", "stevedore-server ray --config-only"),
    ],
    "tests/test_ray_gaps.py::test_triton_s_grpc_client_through_ray_serve_s_grpc_proxy": [
        ("deployment/ray.md", "--grpc-port 8081"),
    ],
    "tests/test_processes.py::test_two_plugins_pinning_incompatible_versions_are_served_side_by_side": [
        ("operations/processes.md", "models in processes"),
    ],
    "tests/test_pytest_plugin.py::test_a_generated_plugin_passes_its_tests_the_check_and_the_readmes_example": [
        ("plugins/testing.md", "stevedore_client"),
    ],
    "tests/test_jobs.py::test_the_readme_training_example_trains": [("training.md", "class TrainableIris(Predictor)")],
    "tests/test_mcp.py::test_the_pages_client_example_prints_what_it_shows": [
        ("llm/tools.md", "from mcp import Client")
    ],
    "tests/test_mcp.py::test_the_pages_settings_hide_a_model": [("llm/tools.md", "mcp = false")],
    SHOWCASE: [  # the showcase's modules, shown whole, and its README's commands, run against its wheel
        ("protocols/content-types.md", "class NextDay"),
        ("protocols/content-types.md", "models/next-day/infer"),
        ("protocols/custom-routes.md", "def stevedore_routes"),
        ("protocols/custom-routes.md", "localhost:8000/models/next-day/example"),
        ("protocols/streaming.md", "class Countdown"),
        ("protocols/streaming.md", "curl -sN"),
        ("protocols/streaming.md", "localhost:8000/models/countdown/predict\n"),
    ],
    f"{HERE}::test_an_entry_point_table_is_a_pyproject_table": [
        ("README.md", 'row-sum = "my_package'),
        ("concepts.md", "stevedore.predictors"),
        ("concepts.md", "stevedore.hooks"),
        ("plugins/writing.md", "stevedore.predictors"),
        ("protocols/custom-routes.md", 'showcase = "stevedore_showcase'),
    ],
    f"{HERE}::test_a_settings_example_loads": [
        ("deployment/ray.md", "[models.sleeper]"),
        ("model-files.md", "[models.fraud]"),
    ],
    "tests/test_rayserve_multiplexed_config.py::test_the_ray_pages_settings_examples_load": [
        ("deployment/ray.md", "max_models_per_replica = 5"),
        ("deployment/ray.md", "[models.iris-trainer]"),
    ],
    f"{HERE}::test_the_key_file_example_is_read_with_its_scopes": [("operations/security.md", "# team A's client")],
    f"{HERE}::test_the_opt_out_example_is_an_ini_option_the_kit_reads": [("plugins/testing.md", "stevedore_skip")],
    f"{HERE}::test_a_curl_example_answers_as_shown": [
        ("protocols/v2-rest.md", "/v2/models/iris/infer"),
        ("quickstart.md", "localhost:8000/readyz"),
        ("operations/limits.md", "X-Request-Timeout: 0.5"),
    ],
    f"{HERE}::test_the_repository_example_loads_a_model_while_serving": [
        ("protocols/repository.md", "/v2/repository/index")
    ],
    f"{HERE}::test_the_training_example_trains_and_logs": [("training.md", "/models/trainable-iris/train")],
    f"{HERE}::test_kserves_curl_answers": [("coming-from-kserve.md", "@request.json")],
    f"{HERE}::test_a_manifests_command_writes_what_kubectl_applies": [
        ("coming-from-kserve.md", "--storage-uri s3://"),
        ("deployment/kserve.md", "--output k8s/\n"),
    ],
    "tests/test_inference_graph.py::test_the_kserve_pages_graph_is_what_manifests_writes": [
        ("deployment/kserve.md", "[pipelines.router]"),
        ("deployment/kserve.md", "--config pipelines.toml"),
        ("deployment/kserve.md", "kind: InferenceGraph"),
    ],
    f"{HERE}::test_the_hardening_example_writes_a_key_file_and_manifests_mounting_it": [
        ("operations/security.md", "--api-key-secret model-keys"),
    ],
    f"{HERE}::test_an_mlserver_folder_is_served_as_shown": [("coming-from-mlserver.md", "--mlserver ./models")],
    f"{HERE}::test_the_model_file_example_serves_the_file": [("model-files.md", "run --model iris=model.skops")],
    "tests/test_tracing.py::test_the_documented_commands_trace_a_request": [
        ("observability/tracing.md", "stevedore-server run --tracing"),
        ("observability/tracing.md", "curl -si localhost:8000"),
        ("observability/tracing.md", "HTTP/1.1 200 OK\nx-request-id"),
    ],
    "tests/test_tracing_boundaries.py::test_the_model_span_of_a_model_in_worker_processes_is_a_child_of_the_servers": [
        ("observability/tracing.md", "each predict's model span")
    ],
    "tests/test_payload_log.py::test_the_documented_receiver_prints_what_the_page_shows": [
        ("observability/payload-logs.md", "# receiver.py"),
        ("observability/payload-logs.md", "python receiver.py &"),
        ("observability/payload-logs.md", "request req-1"),
    ],
    "tests/test_traffic.py::test_the_pages_traffic_examples_answer_as_shown": [
        ("pipelines.md", "[traffic.wine-live]"),
        ("pipelines.md", "localhost:8000/models/wine-live/predict"),
    ],
    "tests/test_payload_log.py::test_the_documented_settings_load": [
        ("observability/payload-logs.md", "payload_log_redact = [")
    ],
    "tests/test_pipelines_docs.py::test_the_pages_pipelines_serve_as_shown": [
        ("pipelines.md", "class HookedSum(Predictor)"),
        ("pipelines.md", 'mine = "my_pipelines:PIPELINES"'),
        ("pipelines.md", "# pipelines.toml"),
        ("pipelines.md", "stevedore-server run --config pipelines.toml"),
        ("pipelines.md", "/pipelines/iris-sum/predict -d"),
    ],
    "tests/test_statistics.py::test_the_pages_example_prints_what_it_shows": [
        ("observability/statistics.md", "get_inference_statistics")
    ],
    "tests/test_openai.py::test_the_pages_curl_examples_answer_as_shown": [
        ("llm/openai.md", "localhost:8000/v1/models"),
        ("llm/openai.md", "curl -sN localhost:8000/v1/completions"),
    ],
    "tests/test_openai.py::test_the_pages_sdk_example_prints_as_shown": [
        ("llm/openai.md", "from openai import OpenAI")
    ],
    "tests/test_openai_loading.py::test_the_pages_text_model_loads_and_answers": [
        ("llm/openai.md", "class Echo(Predictor)")
    ],
}
#: For an example found on its page by one substring but by its test through another (the showcase's tests read
#: its README by section), the literal that test's module holds.
READ_AS = {
    "class NextDay": "next-day",
    "models/next-day/infer": "next-day",
    "def stevedore_routes": "routes",
    "localhost:8000/models/next-day/example": "routes",
    "class Countdown": "countdown",
    "curl -sN": "countdown",
    "localhost:8000/models/countdown/predict\n": "countdown-predict",
}


def documented_blocks() -> list[Fenced]:
    """Every fenced block of the README and the checked pages, as the site shows them."""
    pages = [("README.md", README), *((name, page(name)) for name in page_names() if not name.startswith(UNCHECKED))]
    return [found for name, text in pages for found in fenced(name, text)]


BLOCKS = documented_blocks()


def registered(found: Fenced) -> list[str]:
    """The tests ``RUN`` names for the block."""
    return [test for test, examples in RUN.items() for name, containing in examples if (name, containing) in found]


# -- every example run or marked ------------------------------------------------------------------------------


def test_every_example_is_run_by_a_test_or_marked_not_run() -> None:
    neither = [str(found) for found in BLOCKS if not found.not_run and not registered(found)]
    both = [str(found) for found in BLOCKS if found.not_run and registered(found)]
    assert not neither, f"run these in a test (and add them to RUN) or mark them <!-- not run: REASON -->: {neither}"
    assert not both, f"marked not run, yet RUN names a test for them: {both}"


def test_each_registered_example_is_one_block() -> None:
    for test, examples in RUN.items():
        for name, containing in examples:
            found = [block for block in BLOCKS if (name, containing) in block]
            assert len(found) == 1, f"{name}: {containing!r} ({test}) finds {len(found)} blocks"


@pytest.mark.parametrize("test", sorted(RUN))
def test_each_registered_test_exists_and_names_its_examples(test: str) -> None:
    path, _, function = test.partition("::")
    tree = ast.parse((REPO / path).read_text())
    assert function in {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}, f"no {test}"
    literals = string_literals(tree)
    for _, containing in RUN[test]:
        wanted = READ_AS.get(containing, containing)
        assert any(wanted in literal for literal in literals), f"{path} never names {wanted!r}"


def string_literals(tree: ast.Module) -> set[str]:
    """The string literals of a test module, but for those of a table ``RUN`` (this module's names them all)."""
    tables = [node for node in tree.body if isinstance(node, ast.AnnAssign) and ast.unparse(node.target) == "RUN"]
    in_tables = {id(node) for table in tables for node in ast.walk(table)}
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in in_tables
    }


def test_python_examples_are_scripts_and_sessions_are_marked_as_such() -> None:
    """A ``python`` block is a module that runs as shown; an interactive session is a ``pycon`` block."""
    for found in BLOCKS:
        if found.language == "python":
            assert ">>> " not in found.code, f"{found}: a session: make it a pycon block, or a script"
            ast.parse(found.code, filename=str(found))
        if found.language == "pycon":
            assert found.code.startswith(">>> "), f"{found}: a pycon block is a session (>>> prompts)"


def test_a_block_is_marked_by_the_comment_just_before_it() -> None:
    text = "<!-- not run: needs a cluster -->\n```sh\nkubectl get pods\n```\n\n```sh\nls\n```\n"
    assert [found.not_run for found in fenced("x.md", text)] == ["needs a cluster", ""]


# -- the settings files, entry-point tables and key file, through the real loaders ------------------------------


def test_a_settings_example_loads(tmp_path: Path) -> None:
    """Each settings file shown, written as a ``--config`` file and loaded by ``Settings.load`` (which resolves
    the paths against the file's folder); the model file's paths real files, its abbreviated digest theirs."""
    (tmp_path / "models").mkdir()
    model = tmp_path / "models" / "iris.joblib"
    model.write_bytes(b"a model file")
    (tmp_path / "fraud.schema.json").write_text('{"type": "array"}')
    (tmp_path / "fraud.fixture.json").write_text("[[1.0]]")
    shown = block("toml", "[models.fraud]", page("model-files.md"))
    assert '"9f2c..."' in shown  # the page abbreviates the digest
    model_files = write(tmp_path / "model-files.toml", shown.replace("9f2c...", sha256(model)))
    ray = write(tmp_path / "ray.toml", block("toml", "[models.sleeper]", page("deployment/ray.md")))

    files = Settings.load({}, config=str(model_files))
    iris, fraud = files.for_model("iris"), files.for_model("fraud")
    assert (iris.uri, iris.runtime, iris.version, iris.output, iris.max_batch_size) == (
        str(model), "sklearn", "3", "predict_proba", 32
    )  # fmt: skip
    assert (fraud.uri, fraud.predict_schema) == ("s3://models/fraud/model.onnx", str(tmp_path / "fraud.schema.json"))
    on_ray = Settings.load({}, config=str(ray))
    assert on_ray.for_model("iris").replicas == 2 and on_ray.for_model("iris").ray_actor_options == {"num_cpus": 0.5}
    assert on_ray.for_model("sleeper").max_replicas == 4


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


ENTRY_POINT_TABLES = [
    ("README.md", 'row-sum = "my_package'),
    ("concepts.md", "stevedore.predictors"),
    ("concepts.md", "stevedore.hooks"),
    ("plugins/writing.md", "stevedore.predictors"),
    ("protocols/custom-routes.md", 'showcase = "stevedore_showcase'),
]


@pytest.mark.parametrize(("name", "containing"), ENTRY_POINT_TABLES)
def test_an_entry_point_table_is_a_pyproject_table(name: str, containing: str) -> None:
    """A pyproject.toml's entry points, in a group the server reads, each ``module:attribute`` or a module."""
    text = README if name == "README.md" else page(name)
    groups = tomllib.loads(block("toml", containing, text))["project"]["entry-points"]
    assert set(groups) <= {PREDICTORS_GROUP, HOOKS_GROUP}
    for group, entries in groups.items():
        for entry_name, value in entries.items():
            point = EntryPoint(entry_name, value, group)
            assert point.module and (point.attr or group == HOOKS_GROUP), f"{name}: {entry_name} = {value!r}"


def test_the_custom_routes_page_shows_the_showcases_own_hooks_entry_point() -> None:
    shown = tomllib.loads(block("toml", "stevedore.hooks", page("protocols/custom-routes.md")))
    declared = tomllib.loads((REPO / "contrib" / "showcase" / "pyproject.toml").read_text())
    assert shown["project"]["entry-points"] == {HOOKS_GROUP: declared["project"]["entry-points"][HOOKS_GROUP]}


def test_the_key_file_example_is_read_with_its_scopes(tmp_path: Path) -> None:
    keys = write(tmp_path / "api-keys", block("text", "# team A's client", page("operations/security.md")))
    scopes = [sorted(accepted.caller.scopes) for accepted in read_key_file(str(keys))]
    assert scopes == [["infer"], ["infer", "train"], ["admin", "infer", "train"]]


def test_the_opt_out_example_is_an_ini_option_the_kit_reads(tmp_path: Path) -> None:
    """``stevedore_skip`` under ``[tool.pytest.ini_options]``: pytest reads it as the kit's ini option."""
    write(tmp_path / "pyproject.toml", block("toml", "stevedore_skip", page("plugins/testing.md")))
    shown = "import pytest\n\ndef test_skip(pytestconfig):\n    print(pytestconfig.getini('stevedore_skip'))\n"
    write(tmp_path / "test_ini.py", shown)
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", "-q", "test_ini.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "['big-model: needs a GPU']" in ran.stdout, ran.stdout + ran.stderr


# -- the curl examples, against a real server ---------------------------------------------------------------------

#: Where the pages send their requests; the tests' servers listen on free ports.
DOCUMENTED_ADDRESSES = ("http://127.0.0.1:8000", "localhost:8000", "http://HOST")
#: The example plugin's model file, which the scikit-learn runtime serves with no code.
MODEL_FILE = REPO / "contrib" / "sklearn_logreg" / "stevedore_sklearn_logreg" / "model.skops"
#: The distribution of the training page's predictor, made here (a module and its metadata on ``PYTHONPATH``).
TRAINER = "docs-trainer"
#: The model KServe's example calls, and the request file it sends.
KSERVE_MODEL = "stevedore-server-sklearn"
REQUEST = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}


@dataclass
class Command:
    """A documented command (its continuation lines kept, as the shell joins them) and the answer shown with it:
    its comment, or the comment lines under it."""

    line: str
    shown: str = ""


#: A comment after a command (the shell's: a ``#`` after a space; the pages' commands hold none in their quotes).
COMMENT = re.compile(r"\s#\s")


def commands(code: str) -> list[Command]:
    found: list[Command] = []
    for text in code.splitlines():
        if text.lstrip().startswith("#"):  # the answer goes on
            found[-1].shown += text.lstrip().removeprefix("#").strip()
            continue
        line, comment = [*COMMENT.split(text, maxsplit=1), ""][:2]
        if found and text.startswith(" "):  # a continuation (after a backslash, or in a quote)
            found[-1].line += "\n" + line.rstrip()
        else:
            found.append(Command(line.rstrip()))
        found[-1].shown = comment.strip() or found[-1].shown
    return found


def curl(command: str, url: str, cwd: Path | None = None) -> tuple[int, str]:
    """Run a documented curl with the server's address for the documented one; its status and body."""
    address = url.removeprefix("http://")
    for documented in DOCUMENTED_ADDRESSES:
        command = command.replace(documented, url if documented.startswith("http") else address)
    ran = subprocess.run(
        ["sh", "-c", command + " --write-out '\\n%{http_code}'"], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, f"{command}\n{ran.stderr}"
    body, _, status = ran.stdout.rpartition("\n")
    return int(status), body


STATUS = re.compile(r"^(\d{3})\b")


def check_answer(command: Command, status: int, body: str) -> None:
    """The status the comment names (200 if it names none), and the answer where it shows one (``shown``)."""
    named = STATUS.match(command.shown)
    assert status == (int(named[1]) if named else 200), f"{command.line}\n{status} {body}"
    if command.shown.startswith(("{", "[")):
        received = json.loads(body.split("\r\n\r\n")[-1])
        assert matches(received, as_pattern(command.shown)), f"{command.line}\n{body}\nshown: {command.shown}"


#: Where a shown answer leaves something out: ``...`` as a value, an item, or the rest of an object.
ELIDED = "..."


def as_pattern(shown: str) -> object:
    """A shown answer as JSON, its ``...`` as the string ``"..."`` (in an object: a key meaning "and more")."""
    text = re.sub(r"([\[,]\s*)\.\.\.(\s*[\],])", r'\1"..."\2', shown)
    text = re.sub(r":\s*\.\.\.", ': "..."', text)
    text = re.sub(r",\s*\.\.\.\s*}", ', "...": "..."}', text)
    return json.loads(text)


def matches(received: object, pattern: object) -> bool:
    """``received`` is what ``pattern`` shows: equal, but for what ``...`` leaves out."""
    if pattern == ELIDED:
        return True
    if isinstance(pattern, dict) and isinstance(received, dict):
        keys = {key for key in pattern if key != ELIDED}
        if not (keys <= received.keys() if ELIDED in pattern else keys == received.keys()):
            return False
        return all(matches(received[key], pattern[key]) for key in keys)
    if isinstance(pattern, list) and isinstance(received, list):
        items = [item for item in pattern if item != ELIDED]
        if len(items) == len(pattern):
            return len(received) == len(pattern) and all(map(matches, received, pattern))
        return all(any(matches(found, item) for found in received) for item in items)
    return received == pattern


def test_a_shown_answer_is_matched_with_what_it_leaves_out() -> None:
    assert matches([1, {"a": 2, "b": 3}], as_pattern('[..., {"a": 2, ...}]'))
    assert matches({"state": "done", "n": {"x": 1}}, as_pattern('{"state": "done", "n": {"x": ...}}'))
    assert not matches({"state": "done", "n": 1}, as_pattern('{"state": "done"}'))
    assert not matches([1, 2], as_pattern("[1]")) and not matches([1], as_pattern('[..., {"a": 2}]'))


def trainer_site(root: Path) -> Path:
    """The training page's predictor as an installed plugin: its module, and a distribution's metadata naming it
    in an entry point, in a folder for ``PYTHONPATH`` (what ``pip install`` of a wheel leaves)."""
    (root / "docs_trainer").mkdir(parents=True)
    write(root / "docs_trainer" / "__init__.py", block("python", "class TrainableIris(Predictor)", page("training.md")))
    metadata = root / "docs_trainer-0.1.dist-info"
    metadata.mkdir()
    write(metadata / "METADATA", f"Metadata-Version: 2.1\nName: {TRAINER}\nVersion: 0.1\n")
    write(metadata / "entry_points.txt", f"[{PREDICTORS_GROUP}]\ntrainable-iris = docs_trainer:TrainableIris\n")
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``stevedore-server run`` of the tests' environment: the example plugin (iris loaded, iris-proba left for the
    model repository's example to load), the training page's predictor, and KServe's example model file."""
    root = tmp_path_factory.mktemp("docs-examples")
    running = Server.start(
        Venv(Path(sys.prefix), ()), root / "server.log",
        "--plugins", f"stevedore-sklearn-logreg,stevedore-runtime-sklearn,{TRAINER}",
        "--load-models", f"iris,trainable-iris,{KSERVE_MODEL}",
        "--model", f"{KSERVE_MODEL}={MODEL_FILE}", "--state-dir", str(root / "state"),
        PYTHONPATH=str(trainer_site(root / "site")),
    )  # fmt: skip
    try:
        running.wait_for("/readyz")
        yield running
    finally:
        running.stop()


CURL_EXAMPLES = [
    ("quickstart.md", "localhost:8000/readyz"),
    ("protocols/v2-rest.md", "/v2/models/iris/infer"),
    ("operations/limits.md", "X-Request-Timeout: 0.5"),
]


@pytest.mark.server
@pytest.mark.parametrize(("name", "containing"), CURL_EXAMPLES)
def test_a_curl_example_answers_as_shown(server: Server, name: str, containing: str) -> None:
    shown = commands(block("sh", containing, page(name)))
    for command in shown:
        check_answer(command, *curl(command.line, server.url))
    assert sum(command.shown.startswith(("{", "[")) for command in shown) >= 1


@pytest.mark.server
def test_the_repository_example_loads_a_model_while_serving(server: Server) -> None:
    """The page's plugin is a placeholder: the example plugin's ``iris-proba``, left unloaded at startup, stands
    for its model, installed already (what ``pip install`` would do)."""
    install, *requests = commands(block("sh", "/v2/repository/index", page("protocols/repository.md")))
    assert install.line.split() == ["pip", "install", "my-model-plugin"]
    distribution("stevedore-sklearn-logreg")
    for command in requests:
        command.line = command.line.replace("my-model", "iris-proba")
        command.shown = command.shown.replace("my-model", "iris-proba")
        check_answer(command, *curl(command.line, server.url))
    answer = httpx.post(server.url + "/models/iris-proba/predict", json=[[5.1, 3.5, 1.4, 0.2]])
    assert answer.status_code == 200, answer.text


@pytest.mark.server
def test_the_training_example_trains_and_logs(server: Server) -> None:
    """The training page's predictor, served from its code, trained by its curl; the job's answers as shown."""
    train, job, logs = commands(block("sh", "/models/trainable-iris/train", page("training.md")))
    status, answer = curl(train.line, server.url)
    check_answer(train, status, answer)
    (location,) = re.findall(r"^location: (/jobs/\S+)\r?$", answer, flags=re.M | re.I)
    assert "Location: /jobs/ID" in train.shown
    identifier = location.removeprefix("/jobs/")
    finished(server, identifier)
    for command in (job, logs):
        command.shown = command.shown.replace('"ID"', json.dumps(identifier))
        check_answer(command, *curl(command.line.replace("/jobs/ID", f"/jobs/{identifier}"), server.url))


def finished(server: Server, identifier: str, deadline: float = 120.0) -> None:
    stop_at = time.monotonic() + deadline
    while (state := httpx.get(f"{server.url}/jobs/{identifier}").json()["state"]) in ("queued", "running"):
        assert time.monotonic() < stop_at, f"job {identifier} still {state}:\n{server.log()}"
        time.sleep(0.2)


@pytest.mark.server
def test_kserves_curl_answers(server: Server, tmp_path: Path) -> None:
    """KServe's example, with a request file of its own (the page shows none), to the model file served under the
    InferenceService's name."""
    write(tmp_path / "request.json", json.dumps(REQUEST))
    (command,) = commands(block("sh", "@request.json", page("coming-from-kserve.md")))
    status, answer = curl(command.line, server.url, cwd=tmp_path)
    assert status == 200, answer
    assert json.loads(answer)["model_name"] == KSERVE_MODEL and json.loads(answer)["outputs"][0]["data"] == [0]


MANIFESTS_EXAMPLES = [("coming-from-kserve.md", "--storage-uri s3://"), ("deployment/kserve.md", "--output k8s/\n")]


@pytest.mark.parametrize(("name", "containing"), MANIFESTS_EXAMPLES)
def test_a_manifests_command_writes_what_kubectl_applies(name: str, containing: str, tmp_path: Path) -> None:
    """The page's ``manifests`` command writes every file its ``kubectl apply`` lines name (the build needs a
    container engine, which tests/test_container.py has; kubectl, a cluster)."""
    build, manifests, *applies = commands(block("sh", containing, page(name)))
    assert build.line.startswith("stevedore-server build")
    assert applies and all(apply.line.startswith("kubectl apply") for apply in applies)
    shell(manifests.line, tmp_path)
    applied = [word for apply in applies for word in apply.line.split() if word.startswith("k8s/")]
    assert len(applied) >= 2 and all((tmp_path / path).is_file() for path in applied), sorted(tmp_path.rglob("*"))


def shell(line: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A documented command, run by the shell as written, with this environment's commands first on its path."""
    environment = offline_env(Path(sys.executable).parent, **env)
    ran = subprocess.run(["sh", "-c", line], cwd=cwd, env=environment, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, f"{line}\n{ran.stdout}\n{ran.stderr}"
    return ran


@contextlib.contextmanager
def serving_as_documented(code: str, root: Path, files: dict[str, Path]) -> Iterator[Server]:
    """The server a page's block starts: its ``pip install`` line's distributions (installed here: the plugins
    selected, as they would be the only ones), its ``stevedore-server run`` line's arguments, ``files`` (the
    names the page uses) replaced by real ones; ready, stopped on the way out."""
    install, run = commands(code)[:2]
    installed = shlex.split(install.line)[2:]
    for name in installed:
        distribution(name)  # raises PackageNotFoundError when this environment lacks it
    arguments = shlex.split(run.line)
    assert arguments[:2] == ["stevedore-server", "run"], run.line
    for shown, real in files.items():
        arguments = [argument.replace(shown, str(real)) for argument in arguments]
    plugins = ",".join(name for name in installed if name != "stevedore-server")
    served = Server.start(Venv(Path(sys.prefix), ()), root / "server.log", *arguments[2:], "--plugins", plugins)
    try:
        served.wait_for("/readyz")
        yield served
    finally:
        served.stop()


@pytest.mark.server
def test_the_model_file_example_serves_the_file(tmp_path: Path) -> None:
    """The page's three commands, its model file a real skops file."""
    code = block("sh", "run --model iris=model.skops", page("model-files.md"))
    with serving_as_documented(code, tmp_path, {"model.skops": MODEL_FILE}) as served:
        (ask,) = commands(code)[2:]
        status, answer = curl(ask.line, served.url)
    assert status == 200 and json.loads(answer)["predictions"] == [0], answer


@pytest.mark.server
def test_an_mlserver_folder_is_served_as_shown(tmp_path: Path) -> None:
    """MLServer's scikit-learn example as a folder of model settings: an iris classifier saved with joblib."""
    folder = tmp_path / "models" / "iris"
    folder.mkdir(parents=True)
    data = load_iris()
    joblib.dump(LogisticRegression(max_iter=500).fit(data.data, data.target), folder / "model.joblib")
    settings = {
        "name": "iris",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
    }
    write(folder / "model-settings.json", json.dumps(settings))
    code = block("sh", "--mlserver ./models", page("coming-from-mlserver.md"))
    with serving_as_documented(code, tmp_path, {"./models": tmp_path / "models"}) as served:
        answer = httpx.post(f"{served.url}/v2/models/iris/infer", json=REQUEST)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [0]


def test_the_hardening_example_writes_a_key_file_and_manifests_mounting_it(tmp_path: Path) -> None:
    """The security page's commands but ``kubectl``'s (a cluster): the digest line makes a key file the server
    reads, and ``manifests`` mounts the Secret that file goes into."""
    digest, secret, manifests = commands(block("sh", "--api-key-secret model-keys", page("operations/security.md")))
    assert secret.line.startswith("kubectl create secret generic model-keys --from-file=api-keys=api-keys")
    key = "a key of the operator's"
    shell(digest.line, tmp_path, KEY=key)
    (accepted,) = read_key_file(str(tmp_path / "api-keys"))
    assert accepted.digest == hashlib.sha256(key.encode()).digest()
    shell(manifests.line, tmp_path)
    assert "secretName: model-keys" in (tmp_path / "k8s" / "deployment.yaml").read_text()
