"""The web console, in process: its routes, what its pages show, its policy, its forms, and escaping.

The real browser tests are in ``test_console_browser.py``.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pluggy
import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from stevedore_server.base.settings import Settings
from stevedore_server.frontends import console
from stevedore_server.frontends.console.forms import Form, form_for
from stevedore_server.frontends.console.pages import duration

from .browser import is_path_on_this_host, parse_page, policy_of
from .helpers import Registers
from .predictors import HOSTILE, BadFixture, FailsLoad, Hostile, HostileFailing, NoScore, RowSum

STATIC = Path(console.__file__).parent / "static"
VENDOR = STATIC / "vendor"
KEY = "console-key"
PAGES = ["/", "/console/models/rowsum", "/console/models/rowsum/versions/1", "/console/jobs"]
FRAGMENTS = [
    "/console/fragments/models",
    "/console/fragments/models/rowsum",
    "/console/fragments/models/rowsum/state",
    "/console/fragments/jobs",
]
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
hookimpl = pluggy.HookimplMarker("stevedore")


class FailsToRegister:
    """A plugin whose registration hook raises, with markup in its error."""

    @hookimpl
    def stevedore_register_predictors(self, register: Callable[[object], None]) -> None:
        raise RuntimeError(HOSTILE)


class HostileMetadata:
    """Catalogue metadata of markup, and a home page that would run script if it were a link."""

    @hookimpl
    def stevedore_catalogue_metadata(self) -> dict[str, Any]:
        return {"author": HOSTILE, "home_page": "javascript:alert('home')", HOSTILE: HOSTILE}


@pytest.fixture
def console_client(make_client: Callable[..., TestClient], tmp_path: Path) -> TestClient:
    """A healthy model, one without score, one failed, and a plugin that failed; its jobs database in
    ``tmp_path``."""
    plugins = (Registers(RowSum(), NoScore(), FailsLoad()), FailsToRegister())
    return make_client(*plugins, settings=Settings(state_dir=str(tmp_path)))


@pytest.fixture
def hostile(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(Registers(Hostile(), HostileFailing()), FailsToRegister(), HostileMetadata())


# -- routes ------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES + FRAGMENTS)
def test_console_routes_answer_html_under_a_strict_policy(console_client: TestClient, path: str) -> None:
    response = console_client.get(path)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = policy_of(response)
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]  # no inline script, not even by hash
    assert policy["style-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["form-action"] == ["'none'"]  # forms are sent by console.js, never by navigation
    assert response.headers["x-content-type-options"] == "nosniff"
    page = parse_page(response.text)
    assert page.inline_scripts == [] and page.inline_styles == []


@pytest.mark.parametrize("path", PAGES)
def test_pages_load_only_files_of_this_host_that_are_served(console_client: TestClient, path: str) -> None:
    page = parse_page(console_client.get(path).text)

    assert [url for url in page.urls if not is_path_on_this_host(url)] == []
    assets = [url for url in page.urls if url.startswith("/console/assets/")]
    assert len(assets) == 5  # Pico, htmx, the console's script, styles and icon
    for url in assets:
        response = console_client.get(url)
        name = urlsplit(url).path.removeprefix("/console/assets/")
        assert response.content == (STATIC / name).read_bytes(), url
        assert response.headers["content-type"].split(";")[0] == MEDIA_TYPES[PurePosixPath(name).suffix]
        assert "immutable" in response.headers["cache-control"]


def test_pages_hold_no_model_data(console_client: TestClient) -> None:
    """They are open when API keys are on: what they show comes in fragments, which need the key."""
    for path in PAGES:
        text = console_client.get(path).text
        assert "sums rows" not in text and "failsload" not in text and "artifact missing" not in text


def test_the_console_is_left_out_of_the_openapi_document(console_client: TestClient) -> None:
    paths = console_client.get("/openapi.json").json()["paths"]
    assert "/" not in paths
    assert [path for path in paths if path.startswith("/console")] == []


def test_the_console_leaves_every_other_route_as_it_was(console_client: TestClient) -> None:
    for path in ("/docs", "/redoc", "/openapi.json", "/models", "/healthz", "/list", "/v2", "/models/rowsum"):
        assert console_client.get(path).status_code in (200, 503), path
    assert console_client.post("/models/rowsum/predict", json=[[1, 2]]).json()["predictions"] == [3]
    assert console_client.post("/predict", json={"predictor": "rowsum", "payload": [[1, 2]]}).json() == [3]
    assert console_client.get("/console/nothing").status_code == 404


def test_no_console_answers_404_at_its_paths(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Registers(RowSum()), settings=Settings(console=False))

    for path in PAGES + FRAGMENTS + ["/console/assets/console.js"]:
        assert client.get(path).status_code == 404, path
    assert client.get("/docs").status_code == 200
    assert client.get("/models").status_code == 200


def test_the_setting_from_the_environment_and_the_file(tmp_path: Path) -> None:
    assert Settings().console is True
    assert Settings.load({"STEVEDORE_CONSOLE": "false"}).console is False
    config = tmp_path / "stevedore.toml"
    config.write_text("console = false\n")
    assert Settings.load({"STEVEDORE_CONFIG": str(config)}).console is False
    assert Settings.load({"STEVEDORE_CONFIG": str(config)}, console=True).console is True


def test_an_unknown_model_answers_404(console_client: TestClient) -> None:
    assert console_client.get("/console/fragments/models/nope").status_code == 404
    assert console_client.get("/console/fragments/models/rowsum/versions/9").status_code == 404


# -- what the pages show -------------------------------------------------------------


def test_the_models_fragment_shows_states_reasons_failed_plugins_checks_uptime(console_client: TestClient) -> None:
    text = console_client.get("/console/fragments/models").text

    assert re.search(r'data-model="rowsum" data-version="1" data-state="ready"', text)
    assert re.search(r'data-model="failsload" data-version="1" data-state="failed"', text)
    assert "load() failed: OSError: artifact missing" in text
    assert "2 of 3 models ready" in text
    assert shown(f"RuntimeError: {HOSTILE}") in text  # the failed plugin, with its error
    for check in ("models", "plugins"):
        assert f'data-check="{check}"' in text
    assert re.search(r"up \d+ s", text)
    assert 'href="/console/models/rowsum/versions/1"' in text


def test_the_models_fragment_shows_what_healthz_and_models_answer(console_client: TestClient) -> None:
    text = html.unescape(console_client.get("/console/fragments/models").text)
    health = console_client.get("/healthz").json()
    catalogue = console_client.get("/models").json()

    for model in catalogue["models"]:
        assert model["description"] in text
        assert model["reason"] is None or model["reason"] in text
    for check in health["checks"].values():
        assert check["detail"] in text
    for plugin in catalogue["failed_plugins"]:
        assert plugin["error"] in text


def test_the_model_fragment_shows_what_a_person_needs_to_call_it(console_client: TestClient) -> None:
    text = console_client.get("/console/fragments/models/rowsum").text
    entry = console_client.get("/models/rowsum").json()

    assert entry["description"] in text
    for path in entry["links"].values():
        assert path in text
    assert 'href="/docs#/model%20rowsum"' in text
    assert "input-0" in text and "FP64" in text and "output-0" in text  # the tensor signature
    assert "Predict schema" in text and "Score schema" in text
    assert 'data-predict="/models/rowsum/versions/1/predict"' in text
    assert 'data-score="/models/rowsum/versions/1/score"' in text
    assert 'data-repository="/v2/repository/models/rowsum/unload"' in text


def test_a_model_without_score_or_tensors_says_so(
    console_client: TestClient, make_client: Callable[..., TestClient]
) -> None:
    text = console_client.get("/console/fragments/models/noscore").text
    assert "data-score=" not in text and "Score schema" not in text

    unchecked = make_client(Registers(BadFixture())).get("/console/fragments/models/badfixture")
    assert unchecked.status_code == 200  # its schemas never compiled: no form, no schema shown
    assert 'id="try-it"' not in unchecked.text and "<summary>Predict schema</summary>" not in unchecked.text
    assert "predict_fixture does not match" in unchecked.text  # why, in place of the form

    failed = console_client.get("/console/fragments/models/failsload").text
    assert "artifact missing" in failed
    assert "the model is not ready" in failed  # no tensors, and why
    assert "/docs#" not in failed  # /docs documents the routes of ready models only


def test_with_api_keys_the_pages_are_open_and_the_fragments_need_a_key(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    for auth_health in (False, True):
        settings = Settings(api_keys=(KEY,), auth_health=auth_health, state_dir=str(tmp_path))
        client = make_client(Registers(RowSum()), settings=settings)
        for path in [*PAGES, "/console/assets/console.js"]:
            response = client.get(path)
            assert response.status_code == 200, path
        assert 'id="api-key"' in client.get("/").text
        for path in FRAGMENTS:
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200, path


def test_without_keys_the_page_has_no_key_field(console_client: TestClient) -> None:
    assert 'id="api-key"' not in console_client.get("/").text


# -- escaping ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/console/fragments/models",
        "/console/fragments/models/hostile",
        "/console/fragments/models/hostile/state",
        "/console/fragments/models/hostile-failing",
        "/console/models/hostile",
    ],
)
def test_markup_from_a_plugin_is_shown_as_text(hostile: TestClient, path: str) -> None:
    response = hostile.get(path)
    page = parse_page(response.text)

    assert response.status_code == 200
    assert [attrs for tag, attrs in page.elements if tag == "script" and not attrs.get("src")] == []
    assert [tag for tag, _ in page.elements if tag == "img"] == []
    handlers = [(tag, name) for tag, attrs in page.elements for name in attrs if name.startswith("on")]
    assert handlers == []
    assert [url for url in page.urls if url.strip().lower().startswith(("javascript:", "data:"))] == []
    if "fragments" in path and "state" not in path:
        assert shown(HOSTILE) in response.text


def test_every_hostile_string_reaches_the_model_page_as_text(hostile: TestClient) -> None:
    text = hostile.get("/console/fragments/models/hostile").text
    escaped = shown(HOSTILE)

    assert f'<p id="model-description">{escaped}</p>' in text
    assert f'<strong id="schema-title">{escaped}</strong>' in text
    assert f'<option value="{shown(json.dumps(HOSTILE))}" selected>{escaped}</option>' in text
    assert f'data-key="{escaped}"' in text  # a property named with markup
    assert "javascript:alert(&#39;home&#39;)" in text  # the home page shown, not linked
    assert 'href="javascript:' not in text


def shown(text: str) -> str:
    """``text`` as the templates write it."""
    return str(escape(text))


# -- the try-it form ------------------------------------------------------------------------

ROW = {"type": "array", "minItems": 4, "maxItems": 4, "items": {"type": "number", "minimum": 0, "maximum": 100}}


def test_a_table_of_numbers_is_a_grid_as_wide_as_the_schema_says() -> None:
    form = form_for({"type": "array", "minItems": 1, "maxItems": 100, "items": ROW}, [[1, 2, 3, 4], [5, 6, 7, 8]])

    assert form is not None and (form.shape, form.row) == ("table", "array")
    assert [column.limits for column in form.inputs] == [{"min": "0", "max": "100", "step": "any"}] * 4
    assert form.values == ((1, 2, 3, 4), (5, 6, 7, 8))
    assert (form.min_rows, form.max_rows) == (1, 100)


def test_a_grid_without_a_fixed_width_takes_the_fixture_s() -> None:
    form = form_for({"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}, [[1, 2, 3]])

    assert form is not None and len(form.inputs) == 3
    assert form.inputs[0].limits == {"step": "1"}
    assert form_for({"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}, [[1], [1, 2]]) is None


def test_named_positions_are_labelled_columns() -> None:
    row = {"type": "array", "prefixItems": [{"type": "number", "title": "length"}, {"type": "boolean"}], "items": False}
    form = form_for({"type": "array", "items": row}, [[1.5, True]])

    assert form is not None
    assert [(column.label, column.kind) for column in form.inputs] == [("length", "number"), ("2", "boolean")]


def test_an_array_of_records_is_a_grid_with_a_column_a_property() -> None:
    record = {
        "type": "object",
        "required": ["age"],
        "properties": {"age": {"type": "integer", "minimum": 0}, "smoker": {"type": "boolean"}},
    }
    form = form_for({"type": "array", "items": record}, [{"age": 40, "smoker": False}, {"age": 20}])

    assert form is not None and (form.shape, form.row) == ("table", "object")
    columns = [(c.key, c.kind, c.required) for c in form.inputs]
    assert columns == [("age", "integer", True), ("smoker", "boolean", False)]
    assert form.values == ((40, False), (20, None))


def test_an_object_of_scalars_is_labelled_fields() -> None:
    schema = {
        "type": "object",
        "required": ["age"],
        "properties": {
            "age": {"type": "integer", "title": "Age", "minimum": 0, "maximum": 120},
            "name": {"type": "string", "maxLength": 20},
            "plan": {"enum": ["basic", "pro", 3]},
            "active": {"type": "boolean"},
        },
    }
    form = form_for(schema, {"age": 30, "plan": "pro"})

    assert form is not None and form.shape == "fields"
    age, name, plan, active = form.inputs
    assert (age.label, age.required, age.limits) == ("Age", True, {"min": "0", "max": "120", "step": "1"})
    assert (name.kind, name.limits) == ("string", {"maxlength": "20"})
    assert (plan.kind, plan.options) == ("enum", (('"basic"', "basic"), ('"pro"', "pro"), ("3", "3")))
    assert plan.shown("pro") == '"pro"'
    assert active.kind == "boolean"
    assert form.values == ((30, None, "pro", None),)


def test_an_array_of_scalars_is_a_list() -> None:
    form = form_for({"type": "array", "items": {"type": "string", "minLength": 1}}, ["a", "b"])

    assert form == Form("list", form.inputs if form else (), "scalar", (("a",), ("b",)), 0, None)


@pytest.mark.parametrize(
    ("schema", "fixture"),
    [
        ({"type": "array", "items": {"type": "array", "items": {"type": "array"}}}, [[[1]]]),  # deeper
        ({"type": "object", "properties": {"x": {"type": "object"}}}, {"x": {}}),  # nested object
        ({"anyOf": [{"type": "number"}, {"type": "string"}]}, 1),
        ({"$ref": "#/$defs/row", "$defs": {"row": {"type": "number"}}}, 1),
        ({"type": "array", "items": {"type": ["number", "null"]}}, [1, None]),
        ({"type": "number"}, 1),  # a bare scalar: the JSON editor says it as well
        ({"type": "object", "properties": {"x": {"type": "number"}}}, {"y": 1}),  # a fixture that does not fit
        ({"type": "array", "items": ROW}, [[1, 2, 3]]),
        ({"type": "array", "items": {"enum": [{"a": 1}]}}, [{"a": 1}]),
    ],
)
def test_other_schemas_get_the_json_editor_alone(schema: dict[str, Any], fixture: Any) -> None:
    assert form_for(schema, fixture) is None


def test_any_schema_gets_the_json_editor_with_the_fixture(make_client: Callable[..., TestClient]) -> None:
    class Nested(RowSum):
        name = "nested"
        predict_schema = {"type": "object", "properties": {"rows": ROWS_OF_ROWS}}
        predict_fixture = {"rows": [[1, 2]]}

        def run_predict(self, payload: dict[str, Any]) -> list[float]:
            return super().run_predict(payload["rows"])

    client = make_client(Registers(Nested()))
    text = client.get("/console/fragments/models/nested").text

    assert 'data-shape="json"' in text and 'data-part="form"' not in text
    assert '<textarea name="payload"' in text and shown('"rows"') in text


ROWS_OF_ROWS = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}


def test_uptime_reads_in_the_two_largest_units() -> None:
    assert [duration(s) for s in (0, 12, 243, 7200, 93784)] == ["0 s", "12 s", "4 min 3 s", "2 h 0 min", "1 d 2 h"]


# -- the vendored files ---------------------------------------------------------------------


def test_vendored_files_carry_their_licences_and_versions() -> None:
    assert "Zero-Clause BSD" in (VENDOR / "LICENSE-htmx").read_text()
    assert "MIT License" in (VENDOR / "LICENSE-pico").read_text()
    readme = (VENDOR / "README.md").read_text()
    htmx = re.search(r"`htmx\.org@([\w.-]+)`", readme)[1]  # type: ignore[index]
    pico = re.search(r"`@picocss/pico@([\w.-]+)`", readme)[1]  # type: ignore[index]
    assert f'version:"{htmx}"' in (VENDOR / "htmx.min.js").read_text()
    assert f"Pico CSS ✨ v{pico} " in (VENDOR / "pico.classless.min.css").read_text()


def test_the_console_s_files_name_no_other_host_and_no_source_map() -> None:
    for path in [*STATIC.glob("*.js"), *STATIC.glob("*.css"), *VENDOR.glob("*.js"), *VENDOR.glob("*.css")]:
        text = path.read_text(encoding="utf-8")
        assert "sourceMappingURL" not in text, path.name
        urls = re.findall(r"""url\(\s*["']?([^"')]*)""", text) if path.suffix == ".css" else []
        assert [url for url in urls if not url.startswith("data:")] == [], path.name
    own = (STATIC / "console.js").read_text()
    # Text only into the page; the API key in a variable only.
    for unwanted in (".innerHTML", ".outerHTML", "insertAdjacentHTML", "localStorage", "sessionStorage", ".cookie"):
        assert unwanted not in own, unwanted
