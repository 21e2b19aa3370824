"""The web console in a real browser: headless Chromium (Debian's, driven by Selenium) and a real server.

The server serves the example plugin, two plugins that fail (``broken`` fails
to import, ``failing`` fails its self-test; from ``tests/installed/``) and a
hostile one whose every string is markup (``tests/predictors.py``). Every page
is checked offline: a request to any other host than the server's fails the
test, for ``/docs`` and ``/redoc`` as for the console. Screenshots of the models
page and a model page are written under pytest's temporary directory, and their
paths printed at the end of the run.
"""

from __future__ import annotations

import json
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from .browser import (
    console_errors,
    foreign,
    open_page,
    requests_through_now,
    save_screenshot,
    wait_until,
)
from .predictors import HOSTILE
from .venvs import INSTALLED, REPO, Server, Venv

pytestmark = pytest.mark.browser

KEY = "console-browser-key"
#: Run before any script of each page: records every dialog a page opens (a script a plugin managed to inject
#: would call one) and every refusal by the Content-Security-Policy.
TRAP = """
window.__dialogs = [];
window.__refused = [];
for (const name of ["alert", "confirm", "prompt", "print"]) {
  window[name] = (...args) => { window.__dialogs.push(`${name}: ${args.join(" ")}`); };
}
document.addEventListener("securitypolicyviolation", (event) => {
  window.__refused.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""
#: A 4xx answer the test asks for is logged by Chromium as a failed resource: the only console error allowed.
FAILED_RESOURCE = "Failed to load resource: the server responded with a status of {}"


def distribution(site: Path, name: str, entry_points: dict[str, str], **metadata: str) -> None:
    """Record a distribution on ``site`` (a folder on the server's ``PYTHONPATH``) as an installer does: its
    metadata and its ``stevedore.predictors`` entry points, which the server finds as any installed ones."""
    info = site / f"{name.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    fields = {"Metadata-Version": "2.1", "Name": name, "Version": "0.1.0", **metadata}
    (info / "METADATA").write_text("".join(f"{key}: {value}\n" for key, value in fields.items()))
    lines = [f"{entry} = {target}\n" for entry, target in entry_points.items()]
    (info / "entry_points.txt").write_text("[stevedore.predictors]\n" + "".join(lines))


def installed_plugin(site: Path, name: str) -> Path:
    """A plugin of ``tests/installed/``, recorded on ``site``; its source folder, for the ``PYTHONPATH``."""
    source = INSTALLED / name
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    distribution(site, project["name"], project["entry-points"]["stevedore.predictors"])
    return source


def serve(log: Path, site: Path, plugins: list[str], *paths: Path, **env: str) -> Server:
    """The real ``stevedore-server run`` of the environment running the tests, this source tree first on its path."""
    python_path = ":".join(str(path) for path in (REPO, site, *paths))
    here = Venv(Path(sys.prefix), ())
    server = Server.start(here, log, "--plugins", ",".join(plugins), PYTHONPATH=python_path, **env)
    server.wait_for("/livez")
    return server


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The example plugin, the broken and failing test plugins and a hostile one."""
    root = tmp_path_factory.mktemp("console-server")
    site = root / "site"
    sources = [installed_plugin(site, "broken"), installed_plugin(site, "failing")]
    hostile = {"hostile": "tests.predictors:hostile_models", "hostile-broken": "tests.predictors:hostile_plugin"}
    markup = {"Author": HOSTILE, "License": HOSTILE, "Home-page": "javascript:alert('home')", "Summary": HOSTILE}
    distribution(site, "stevedore-test-hostile", hostile, **markup)
    plugins = ["stevedore-sklearn-logreg", "stevedore-test-broken", "stevedore-test-failing", "stevedore-test-hostile"]
    server = serve(root / "server.log", site, plugins, *sources)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The example plugin, with API keys on."""
    root = tmp_path_factory.mktemp("keyed-server")
    server = serve(root / "server.log", root, ["stevedore-sklearn-logreg"], STEVEDORE_API_KEYS=KEY)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def jobs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The trainer test plugin: a model that trains, and one whose training hangs when asked."""
    root = tmp_path_factory.mktemp("jobs-console-server")
    site = root / "site"
    source = installed_plugin(site, "trainer")
    server = serve(
        root / "server.log", site, ["stevedore-test-trainer"], source, STEVEDORE_STATE_DIR=str(root / "state")
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("console-screenshots", numbered=False)


@pytest.fixture
def page(browser: WebDriver) -> WebDriver:
    """The browser, with the trap set for every page it opens."""
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": TRAP})
    return browser


# -- reading the pages ----------------------------------------------------------------------

MODEL_ROWS = """
return Array.from(document.querySelectorAll('#model-table tr[data-model]')).map(row => ({
    name: row.dataset.model, state: row.dataset.state, reason: row.querySelector('.reason').textContent,
    description: row.cells[4].textContent,
}));
"""
FAILED_PLUGINS = """
return Array.from(document.querySelectorAll('#failed-plugins tr[data-entry-point]')).map(row => ({
    entry_point: row.dataset.entryPoint, error: row.querySelector('.reason').textContent,
}));
"""
CHECKS = "return Array.from(document.querySelectorAll('#health-checks tr[data-check]')).map(row => row.dataset.check);"
GRID = "return Array.from(document.querySelectorAll('#try-it tbody tr')).map(row => Array.from(row.querySelectorAll('input')).map(i => i.value));"  # noqa: E501
PREDICTION_CELLS = "return Array.from(document.querySelectorAll('#try-it td[data-prediction]')).map(c => c.textContent)"
#: The page's own scripts and stylesheets, as absolute URLs.
ASSETS = "return Array.from(document.querySelectorAll('script[src], link[rel=stylesheet]'), (e) => e.src || e.href);"
RESULT = "const r = document.querySelector('#result'); return r && !r.hidden ? r.innerText : '';"


def model_rows(browser: WebDriver) -> dict[str, dict[str, str]]:
    return {row["name"]: row for row in browser.execute_script(MODEL_ROWS)}


def trapped(browser: WebDriver) -> dict[str, list[str]]:
    return {
        "dialogs": browser.execute_script("return window.__dialogs || []"),
        "refused": browser.execute_script("return window.__refused || []"),
    }


def body_text(browser: WebDriver) -> str:
    text: str = browser.execute_script("return document.body.innerText")
    return text


def assert_offline_and_clean(browser: WebDriver, server: Server, *allowed_errors: str) -> None:
    """The page's own scripts and styles were seen requested, and no request left the server's origin; nothing
    was refused, no dialog opened, no console error."""
    urls = requests_through_now(browser, server.url)
    assets: list[str] = browser.execute_script(ASSETS)
    assert assets and [url for url in assets if url not in urls] == [], f"assets {assets}, requests seen {urls}"
    assert foreign(urls, server.url) == []
    assert trapped(browser) == {"dialogs": [], "refused": []}
    errors = [error for error in console_errors(browser) if not any(allowed in error for allowed in allowed_errors)]
    assert errors == []


def open_model(browser: WebDriver, server: Server, name: str) -> None:
    open_page(browser, f"{server.url}/console/models/{name}")
    shown = wait_until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#try-it"), bool)
    assert shown, body_text(browser)


def submit(browser: WebDriver) -> str:
    """Press Predict; the result shown."""
    browser.execute_script("document.querySelector('#result').hidden = true")
    browser.find_element(By.CSS_SELECTOR, "#try-it button[type=submit]").click()
    shown: str = wait_until(browser, lambda b: b.execute_script(RESULT), bool)
    return shown


def fixture_of(server: Server, name: str) -> Any:
    spec = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    return spec["paths"][f"/models/{name}/predict"]["post"]["requestBody"]["content"]["application/json"]["example"]


# -- the models page ----------------------------------------------------------------------------


def test_the_models_page_shows_every_model_the_failed_plugins_and_the_checks(
    page: WebDriver, console_server: Server, screenshots: Path
) -> None:
    open_page(page, f"{console_server.url}/")

    rows = wait_until(page, model_rows, lambda found: len(found) >= 5)
    assert {name: row["state"] for name, row in rows.items()} == {
        "iris": "ready", "iris-proba": "ready", "failing": "failed", "hostile": "ready", "hostile-failing": "failed",
    }  # fmt: skip
    assert "ZeroDivisionError: the model divides by zero on its own fixture" in rows["failing"]["reason"]
    assert rows["iris"]["reason"] == "" and rows["iris"]["description"].startswith("Logistic regression")
    failed = {plugin["entry_point"]: plugin["error"] for plugin in page.execute_script(FAILED_PLUGINS)}
    assert failed["broken"] == "ImportError: stevedore-test-broken needs libwidget, which is not installed"
    assert failed["hostile-broken"] == f"RuntimeError: {HOSTILE}"
    assert page.execute_script(CHECKS) == ["models", "plugins"]
    assert "models ready" in body_text(page) and "up " in body_text(page)
    save_screenshot(page, screenshots / "models.png")
    assert_offline_and_clean(page, console_server)


def test_the_models_page_refreshes_without_reloading(page: WebDriver, console_server: Server) -> None:
    open_page(page, f"{console_server.url}/")
    wait_until(page, model_rows, lambda found: "iris-proba" in found)
    page.execute_script("window.__samePage = true")

    unloaded = httpx.post(f"{console_server.url}/v2/repository/models/iris-proba/unload", timeout=60)
    assert unloaded.status_code == 200, unloaded.text
    try:
        rows = wait_until(page, model_rows, lambda found: found.get("iris-proba", {}).get("state") == "unloaded")
        assert rows["iris-proba"]["state"] == "unloaded"
        assert "not loaded" in rows["iris-proba"]["reason"]
    finally:
        httpx.post(f"{console_server.url}/v2/repository/models/iris-proba/load", timeout=120)
    rows = wait_until(page, model_rows, lambda found: found.get("iris-proba", {}).get("state") == "ready")
    assert rows["iris-proba"]["state"] == "ready"
    assert page.execute_script("return window.__samePage") is True
    assert_offline_and_clean(page, console_server)


# -- a model's page and trying it ------------------------------------------------------------


def test_try_it_sends_the_fixture_and_shows_the_predictions(
    page: WebDriver, console_server: Server, screenshots: Path
) -> None:
    fixture = fixture_of(console_server, "iris")
    expected = httpx.post(f"{console_server.url}/models/iris/predict", json=fixture, timeout=30).json()["predictions"]

    open_model(page, console_server, "iris")
    assert page.execute_script(GRID) == [[str(value) for value in row] for row in fixture]
    widths = page.execute_script("return Array.from(document.querySelectorAll('#try-it thead th')).length")
    assert widths == 1 + 4 + 2  # the row number, a column an item of the schema's fixed width, prediction, remove
    limits = page.execute_script("const i = document.querySelector('#try-it tbody input'); return [i.min, i.max];")
    assert limits == ["0", "100"]

    result = submit(page)

    assert result.startswith("Predictions")
    assert json.loads(page.find_element(By.CSS_SELECTOR, "#result code").text) == expected
    assert page.execute_script(PREDICTION_CELLS) == [json.dumps(value) for value in expected]
    save_screenshot(page, screenshots / "model-iris.png")
    assert_offline_and_clean(page, console_server)


def test_an_invalid_value_shows_the_schema_s_message_next_to_its_field(page: WebDriver, console_server: Server) -> None:
    fixture = fixture_of(console_server, "iris")
    fixture[0][3] = 500
    answer = httpx.post(f"{console_server.url}/models/iris/predict", json=fixture, timeout=30).json()
    assert answer["details"] == [{"path": "/0/3", "message": "500 is greater than the maximum of 100"}]

    open_model(page, console_server, "iris")
    cell = page.find_elements(By.CSS_SELECTOR, "#try-it tbody tr")[0].find_elements(By.TAG_NAME, "input")[3]
    cell.clear()
    cell.send_keys("500")
    submit(page)

    message = page.execute_script("return arguments[0].nextElementSibling?.textContent", cell)
    assert message == answer["details"][0]["message"]
    assert cell.get_attribute("aria-invalid") == "true"
    assert len(page.find_elements(By.CSS_SELECTOR, "#try-it .field-error")) == 1
    assert_offline_and_clean(page, console_server, FAILED_RESOURCE.format(422))


def test_score_on_the_fixture_and_the_json_editor(page: WebDriver, console_server: Server) -> None:
    score = httpx.get(f"{console_server.url}/models/iris/score", timeout=30).json()["score"]
    open_model(page, console_server, "iris")

    page.find_element(By.CSS_SELECTOR, "#try-it button[data-score-fixture]").click()
    title, shown = wait_until(page, lambda b: b.execute_script(RESULT), bool).split("\n")
    assert (title, json.loads(shown)) == ("Score on the fixture", score)

    page.find_element(By.CSS_SELECTOR, "#try-it input[name=mode][value=json]").click()
    editor = page.find_element(By.CSS_SELECTOR, "#try-it textarea[name=payload]")
    editor.clear()
    editor.send_keys("[[5.1, 3.5, 1.4, 0.2]]")
    assert "Predictions" in submit(page)
    page.find_element(By.CSS_SELECTOR, "#try-it input[name=mode][value=form]").click()
    assert page.execute_script(GRID) == [["5.1", "3.5", "1.4", "0.2"]]
    assert_offline_and_clean(page, console_server)


def test_load_and_unload_buttons(page: WebDriver, console_server: Server) -> None:
    open_model(page, console_server, "iris-proba")

    def state(browser: WebDriver) -> str:
        found: str = browser.execute_script("return document.querySelector('#model-state')?.textContent || ''")
        return found

    try:
        page.find_element(By.XPATH, "//button[text()='Unload']").click()
        assert wait_until(page, state, lambda shown: shown == "unloaded") == "unloaded"
        page.find_element(By.XPATH, "//button[text()='Load']").click()
        assert wait_until(page, state, lambda shown: shown == "ready") == "ready"
    finally:
        httpx.post(f"{console_server.url}/v2/repository/models/iris-proba/load", timeout=120)
    assert_offline_and_clean(page, console_server)


def test_a_plugin_s_markup_runs_no_script(page: WebDriver, console_server: Server, screenshots: Path) -> None:
    for path in ("/", "/console/models/hostile", "/console/models/hostile-failing"):
        open_page(page, f"{console_server.url}{path}")
        assert HOSTILE in wait_until(page, body_text, lambda text: HOSTILE in text), path
        if path == "/console/models/hostile":
            assert HOSTILE in page.find_element(By.ID, "model-description").text
            assert HOSTILE in page.find_element(By.ID, "schema-title").text
            assert submit(page).startswith("Predictions")  # its predictions hold markup too
            assert json.loads(page.find_element(By.CSS_SELECTOR, "#result code").text)[0] == HOSTILE
            save_screenshot(page, screenshots / "model-hostile.png")  # an object of scalars: labelled fields
            page.find_element(By.CSS_SELECTOR, "#try-it input[name=mode][value=json]").click()
            page.find_element(By.CSS_SELECTOR, "#try-it input[name=mode][value=form]").click()
        assert page.find_elements(By.TAG_NAME, "img") == [], path
        assert page.execute_script("return document.querySelectorAll('script:not([src])').length") == 0, path
        assert_offline_and_clean(page, console_server)


# -- every page offline ------------------------------------------------------------------------

RENDERED = {
    "/": "return document.querySelectorAll('#model-table tr[data-model]').length > 0",
    "/console/models/iris": "return document.querySelector('#try-it') !== null",
    "/docs": "return document.querySelectorAll('.opblock').length > 0",
    "/redoc": "return document.body.innerText.includes('Predict with iris')",
}


@pytest.mark.parametrize("path", RENDERED)
def test_no_page_asks_another_host(page: WebDriver, console_server: Server, path: str) -> None:
    open_page(page, f"{console_server.url}{path}")

    assert wait_until(page, lambda b: b.execute_script(RENDERED[path]), bool), path
    urls = requests_through_now(page, console_server.url)
    assert foreign(urls, console_server.url) == []
    assert trapped(page)["dialogs"] == []  # /docs and /redoc show the hostile plugin's strings too


def test_the_docs_link_opens_the_model_s_section(page: WebDriver, console_server: Server) -> None:
    open_model(page, console_server, "iris")

    page.find_element(By.ID, "docs-section").click()

    def open_sections(browser: WebDriver) -> list[str]:
        found: list[str] = browser.execute_script(
            "return Array.from(document.querySelectorAll('.opblock-tag-section.is-open h3')).map(h => h.innerText)"
        )
        return found

    assert any("model iris" in section for section in wait_until(page, open_sections, bool))


# -- API keys ---------------------------------------------------------------------------------


def test_the_api_key_typed_in_the_page_is_sent_and_kept_nowhere(page: WebDriver, keyed_server: Server) -> None:
    open_page(page, f"{keyed_server.url}/")
    needed = wait_until(page, body_text, lambda text: "An API key is needed" in text)
    assert "An API key is needed" in needed and "iris" not in needed

    page.find_element(By.ID, "api-key").send_keys(KEY, Keys.TAB)
    assert "iris" in wait_until(page, model_rows, bool)

    open_model_with_key(page, keyed_server)
    assert "Predictions" in submit(page)
    assert page.get_cookies() == []
    stored = page.execute_script("return [{...localStorage}, {...sessionStorage}]")  # htmx keeps the path it shows
    assert KEY not in json.dumps(stored)
    assert_offline_and_clean(page, keyed_server)  # no call was made without the key


def open_model_with_key(browser: WebDriver, server: Server) -> None:
    open_page(browser, f"{server.url}/console/models/iris")
    wait_until(browser, body_text, lambda text: "An API key is needed" in text)
    browser.find_element(By.ID, "api-key").send_keys(KEY, Keys.TAB)
    assert wait_until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#try-it"), bool)


JOB_ROWS = """
return Object.fromEntries(Array.from(document.querySelectorAll('#job-table tr[data-job]'), (row) => [
  row.dataset.job, {state: row.dataset.state, text: row.textContent.replace(/\\s+/g, ' ').trim()}]));
"""


def job_rows(browser: WebDriver) -> dict[str, dict[str, str]]:
    rows: dict[str, dict[str, str]] = browser.execute_script(JOB_ROWS)
    return rows


def test_the_jobs_page_shows_each_job_cancels_a_running_one_and_shows_a_log(
    page: WebDriver, jobs_server: Server, screenshots: Path
) -> None:
    started = [
        httpx.post(f"{jobs_server.url}/models/{name}/train", json=params, timeout=30)
        for name, params in (("iris-trainer", {"C": 0.5}), ("misbehaving-trainer", {"mode": "hang"}))
    ]
    assert [answer.status_code for answer in started] == [202, 202], [answer.text for answer in started]
    trained, hanging = (answer.json()["id"] for answer in started)
    open_page(page, f"{jobs_server.url}/console/jobs")

    def states(rows: dict[str, dict[str, str]]) -> dict[str, str]:
        return {job: row["state"] for job, row in rows.items()}

    rows = wait_until(page, job_rows, lambda found: states(found) == {trained: "succeeded", hanging: "running"})
    assert states(rows) == {trained: "succeeded", hanging: "running"}, rows
    assert "iris-trainer" in rows[trained]["text"] and "served_version" in rows[trained]["text"], rows
    save_screenshot(page, screenshots / "jobs.png")
    cancel = page.find_element(By.CSS_SELECTOR, f"tr[data-job='{hanging}'] button[data-cancel]")
    cancel.click()
    rows = wait_until(page, job_rows, lambda found: found.get(hanging, {}).get("state") == "cancelled")
    assert rows[hanging]["state"] == "cancelled", rows
    assert httpx.get(f"{jobs_server.url}/jobs/{hanging}").json()["state"] == "cancelled"
    assert not page.find_elements(By.CSS_SELECTOR, f"tr[data-job='{hanging}'] button[data-cancel]")

    page.find_element(By.XPATH, f"//tr[@data-job='{trained}']//button[text()='Log']").click()
    log = wait_until(page, lambda b: b.find_element(By.ID, "job-log").text, lambda text: "new version" in text)
    assert f"Log of job {trained}" in log and "serving the new version" in log, log
    assert_offline_and_clean(page, jobs_server)
