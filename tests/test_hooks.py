"""The pluggy hooks: each documented, each tested, unknown ones rejected."""

from __future__ import annotations

import inspect
import re
import types
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from stevedore_server import Predictor, hookimpl, hookspecs
from stevedore_server.base.errors import StartupError
from stevedore_server.base.settings import Settings
from stevedore_server.core import startup
from stevedore_server.core.server import ModelServer
from stevedore_server.plugins.manager import get_plugin_manager

from .documentation import page
from .helpers import Registers, fresh_manager, wait_until
from .predictors import NoScore, RowSum


def load(settings: Settings, manager: Any) -> Any:
    """Every model loaded and the hooks run, as a server's startup does (without serving)."""
    return startup.build_server(settings, startup.load(settings, manager))


HOOK_NAMES = [name for name, value in vars(hookspecs).items() if hasattr(value, "stevedore_spec")]


def test_there_are_hooks() -> None:
    assert set(HOOK_NAMES) >= {
        "stevedore_health_checks",
        "stevedore_catalogue_metadata",
        "stevedore_register_predictors",
    }


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_every_hook_is_documented(hook: str) -> None:
    docstring = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert re.search(r"\bCalled\b", docstring), f"{hook}: the docstring must say when it is called"
    assert re.search(r"\b[Rr]eturn", docstring), f"{hook}: the docstring must say what it returns"
    assert f"`{hook}" in page("concepts.md"), f"{hook} is missing from the hooks of docs/concepts.md"


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_every_hook_has_a_test(hook: str) -> None:
    assert callable(globals().get(f"test_hook_{hook}")), f"write test_hook_{hook} in {__file__}"


class HealthPlugin:
    def __init__(self, ok: bool) -> None:
        self.ok = ok

    @hookimpl
    def stevedore_health_checks(self) -> Mapping[str, Callable[[], tuple[bool, str]]]:
        return {"disk": lambda: (self.ok, "disk fine" if self.ok else "disk full"), "raises": self.raises}

    def raises(self) -> tuple[bool, str]:
        if not self.ok:
            raise RuntimeError("probe crashed")
        return True, "fine"


def test_hook_stevedore_health_checks(make_client: Callable[..., TestClient]) -> None:
    plugin = HealthPlugin(ok=True)
    client = make_client(Registers(RowSum()), plugin)
    checks = client.get("/healthz").json()["checks"]
    assert checks["disk"] == {"ok": True, "detail": "disk fine"}
    assert set(checks) == {"disk", "raises", "models", "plugins"}
    assert client.get("/readyz").status_code == 200
    plugin.ok = False  # the checks run again, not once: when their results are a second old (``health.MAX_AGE``)
    wait_until(lambda: client.get("/readyz").status_code == 503, "the probe to see the check fail")
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["reasons"] == ["disk: disk full", "raises: check raised RuntimeError: probe crashed"]
    assert client.get("/healthz").status_code == 503
    assert client.get("/livez").status_code == 200


def test_a_health_check_name_given_twice_is_a_startup_error() -> None:
    class Again:
        @hookimpl
        def stevedore_health_checks(self) -> dict[str, Any]:
            return {"models": lambda: (True, "")}

    with pytest.raises(StartupError, match="health check 'models' is given by both"):
        load(Settings(), fresh_manager(Registers(RowSum()), Again()))


class Audit:
    """A payload log plugin: keeps each record it receives, or raises on each."""

    def __init__(self, fails: bool = False) -> None:
        self.fails = fails
        self.records: list[Any] = []

    @hookimpl
    def stevedore_inference_logged(self, record: Any, server: ModelServer) -> None:
        if self.fails:
            raise OSError("audit store down")
        self.records.append((record, server.settings.payload_log))


def test_hook_stevedore_inference_logged(make_client: Callable[..., TestClient]) -> None:
    """A plugin turns the payload log on without a sink; one that raises harms neither serving nor the others.
    More in test_payload_log.py."""
    audit, broken = Audit(), Audit(fails=True)
    client = make_client(Registers(RowSum()), audit, broken)
    answer = client.post("/models/rowsum/predict", json=[[1, 2]], headers={"x-request-id": "audited"})
    assert answer.status_code == 200
    wait_until(lambda: bool(audit.records), "the record handed to the plugin")
    ((record, sink),) = audit.records
    assert sink is None  # no built-in sink chosen: the plugin alone turned the log on
    assert (record.request_id, record.model, record.version) == ("audited", "rowsum", "1")
    assert (record.status, record.ok, record.protocol) == (200, True, "http")
    assert (record.request, record.response) == ([[1, 2]], answer.json())
    assert record.route == "POST /models/{name}/predict"
    counted = 'stevedore_payload_log_dropped_total{reason="sink_error"} 1.0'
    wait_until(lambda: counted in client.get("/metrics").text, "the broken plugin's record counted as dropped")


class Team:
    @hookimpl
    def stevedore_catalogue_metadata(self, predictor: Predictor) -> dict[str, Any] | None:
        if predictor.name == "noscore":
            return None
        return {"team": "vision", "distribution": "overridden"}


class RoutePlugin:
    @hookimpl
    def stevedore_routes(self, server: ModelServer, register: Callable[..., None]) -> None:
        async def models(request: Request) -> Response:
            return JSONResponse(sorted(model.name for model in server.registry.models))

        register("/names", models, model="rowsum")


def test_hook_stevedore_routes(make_client: Callable[..., TestClient]) -> None:
    """More in test_extensions.py."""
    client = make_client(Registers(RowSum()), RoutePlugin())
    assert client.get("/models/rowsum/names").json() == ["rowsum"]
    assert "/models/rowsum/names" in client.get("/openapi.json").json()["paths"]


def test_hook_stevedore_catalogue_metadata(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Registers(RowSum(), NoScore()), Team())
    models = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert models["rowsum"]["metadata"]["team"] == "vision"
    assert models["rowsum"]["metadata"]["distribution"] == "overridden"  # plugins beat the built-in fields
    assert "team" not in models["noscore"]["metadata"]


def test_a_failing_catalogue_hook_is_reported_not_fatal(make_client: Callable[..., TestClient]) -> None:
    class Broken:
        @hookimpl
        def stevedore_catalogue_metadata(self, predictor: Predictor) -> dict[str, Any]:
            raise KeyError("oops")

    client = make_client(Registers(RowSum()), Broken())
    failed = client.get("/models").json()["failed_plugins"]
    assert failed and failed[0]["group"] == "stevedore_catalogue_metadata" and "KeyError" in failed[0]["error"]
    assert client.post("/models/rowsum/predict", json=[[1]]).status_code == 200


def test_hook_stevedore_register_predictors(make_client: Callable[..., TestClient]) -> None:
    class Broken:
        @hookimpl
        def stevedore_register_predictors(self, register: Callable[[Predictor], None]) -> None:
            register(RowSum(name="half-registered"))
            raise RuntimeError("plugin bug")

    client = make_client(Registers(RowSum(), NoScore()), Broken())
    names = [m["name"] for m in client.get("/models").json()["models"]]
    assert names == ["rowsum", "noscore"]  # a failing plugin's partial registrations are dropped
    failed = client.get("/healthz").json()["failed_plugins"]
    assert len(failed) == 1 and "RuntimeError: plugin bug" in failed[0]["error"]


def test_registering_something_else_is_a_plugin_failure() -> None:
    loaded = load(Settings(), fresh_manager(Registers("not a predictor")))
    assert loaded.registry.models == ()
    assert "register() takes a Predictor instance" in loaded.registry.plugin_failures[0].error


def test_an_unknown_hook_is_rejected_at_startup() -> None:
    class Typo:
        @hookimpl
        def stevedore_helth_checks(self) -> dict[str, Any]:
            return {}

    manager, _ = get_plugin_manager(load_entry_points=False)
    manager.register(Typo(), name="typo")
    with pytest.raises(StartupError, match=r"typo.*unknown hook"):
        load(Settings(), manager)


def test_duplicate_name_and_version_is_a_startup_error() -> None:
    with pytest.raises(StartupError, match=r"'rowsum' version '1' is provided twice"):
        load(Settings(), fresh_manager(Registers(RowSum()), Registers(RowSum())))


def test_strict_makes_any_failure_fatal() -> None:
    from .predictors import FailsLoad

    manager = fresh_manager(Registers(RowSum(), FailsLoad()))
    with pytest.raises(StartupError, match=r"(?s)--strict.*failsload.*artifact missing"):
        load(Settings(strict=True), manager)


@pytest.mark.parametrize("name", ["has space", "../etc", "", "a/b", "ü"])
def test_a_name_that_is_not_url_safe_is_refused(name: str) -> None:
    loaded = load(Settings(), fresh_manager(Registers(RowSum(name=name), NoScore())))
    assert [entry.name for entry in loaded.registry.models] == ["noscore"]
    assert "must be a non-empty string of letters" in loaded.registry.plugin_failures[0].error


class ServerAware:
    """Hooks that take the server they extend, as the specifications now offer."""

    @hookimpl
    def stevedore_health_checks(self, server: ModelServer) -> Mapping[str, Callable[[], tuple[bool, str]]]:
        return {"scored": lambda: (True, ", ".join(m.name for m in server.registry.models if m.predictor.has_score))}

    @hookimpl
    def stevedore_catalogue_metadata(self, predictor: Predictor, server: ModelServer) -> dict[str, Any]:
        source = server.source_of(predictor)
        return {"registered_by": source.entry_point if source else None, "strict": server.settings.strict}


def test_hooks_receive_the_server_and_hooks_without_it_keep_working(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Registers(RowSum(), NoScore()), ServerAware(), HealthPlugin(ok=True), Team())
    checks = client.get("/healthz").json()["checks"]
    assert checks["scored"] == {"ok": True, "detail": "rowsum"}
    assert checks["disk"]["ok"]  # a hook written before the server argument existed
    metadata = {m["name"]: m["metadata"] for m in client.get("/models").json()["models"]}
    assert metadata["rowsum"]["team"] == "vision" and metadata["rowsum"]["strict"] is False
    assert str(metadata["noscore"]["registered_by"]).isdigit()  # the name pluggy gave the unnamed Registers


def test_a_wrapper_implementation_is_refused_where_a_result_is_expected(make_client: Callable[..., TestClient]) -> None:
    class Wraps:
        @hookimpl(wrapper=True)
        def stevedore_catalogue_metadata(self, predictor: Predictor) -> Any:
            result = yield
            return result

    client = make_client(Registers(RowSum()), Wraps(), Team())
    catalogue = client.get("/models").json()
    failed = [f for f in catalogue["failed_plugins"] if f["group"] == "stevedore_catalogue_metadata"]
    assert len(failed) == 1 and "a wrapper implementation cannot give one" in failed[0]["error"]
    assert catalogue["models"][0]["metadata"]["team"] == "vision"  # the other plugins' results are kept
    assert client.post("/models/rowsum/predict", json=[[1]]).status_code == 200


def test_the_default_plugins_are_modules_on_every_fresh_manager() -> None:
    manager, _ = get_plugin_manager(load_entry_points=False)
    names = {manager.get_name(plugin) for plugin in manager.get_plugins()}
    assert names == {
        "stevedore_server.plugins.builtin.health",
        "stevedore_server.plugins.builtin.catalogue",
        "stevedore_server.plugins.builtin.payload_log",
    }
    assert all(isinstance(plugin, types.ModuleType) for plugin in manager.get_plugins())
