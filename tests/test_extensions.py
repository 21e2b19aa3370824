"""Plugins' own routes (``stevedore_routes``): served under their model or distribution, behind the same
middleware as every route, in the OpenAPI document, and refused at startup where they would shadow a route."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from stevedore_server import hookimpl
from stevedore_server.base.errors import StartupError
from stevedore_server.base.settings import Settings
from stevedore_server.core import startup

from .helpers import Registers, fresh_manager
from .predictors import RowSum
from .showcase import showcase_module

KEY = "s3cret"


class Explainer:
    """A plugin with a route under its model and one under its distribution (a fresh manager has none: the
    plugin's name stands for it)."""

    def __init__(self, routes: list[tuple[str, list[str], str | None]] | None = None) -> None:
        self.routes = (
            routes if routes is not None else [("/explain/{row:int}", ["GET"], "rowsum"), ("/info", ["GET"], None)]
        )

    @hookimpl
    def stevedore_routes(self, register: Callable[..., None]) -> None:
        for path, methods, model in self.routes:
            register(path, self.answer, methods, model=model)

    async def answer(self, request: Request) -> Response:
        await request.body()
        return JSONResponse({"path": request.url.path, "params": request.path_params})


def start(make_client: Callable[..., TestClient], plugin: Any, **settings: Any) -> TestClient:
    return make_client(Registers(RowSum()), plugin, settings=Settings(**settings))


def plugin_base(client: TestClient) -> str:
    (path,) = [path for path in client.get("/openapi.json").json()["paths"] if path.startswith("/plugins/")]
    return path.removesuffix("/info")


def test_routes_under_the_model_and_the_distribution(
    make_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    client = start(make_client, Explainer())
    with caplog.at_level(logging.INFO, logger="stevedore.access"):
        answer = client.get("/models/rowsum/explain/3")
    assert any("/models/rowsum/explain/3" in record.getMessage() for record in caplog.records)
    assert answer.status_code == 200 and answer.json() == {"path": "/models/rowsum/explain/3", "params": {"row": 3}}
    assert answer.headers["x-request-id"]  # through the request context middleware
    assert client.get(plugin_base(client) + "/info").status_code == 200
    assert client.post("/models/rowsum/explain/3").status_code == 405
    assert client.get("/models/rowsum/explain/x").status_code == 404
    assert client.post("/models/rowsum/predict", json=[[1, 2]]).json()["predictions"] == [3]


def test_the_routes_are_documented_and_counted(make_client: Callable[..., TestClient]) -> None:
    client = start(make_client, Explainer())
    paths = client.get("/openapi.json").json()["paths"]
    operation = paths["/models/rowsum/explain/{row}"]["get"]
    assert operation["tags"] == ["model rowsum"]
    assert operation["parameters"][0]["name"] == "row"
    client.get("/models/rowsum/explain/1")
    metrics = client.get("/metrics").text
    assert 'method="GET",route="/models/rowsum/explain/{row:int}",status="200"} 1.0' in metrics


def test_api_keys_protect_the_routes(make_client: Callable[..., TestClient]) -> None:
    client = start(make_client, Explainer(), api_keys=(KEY,))
    assert client.get("/models/rowsum/explain/1").status_code == 401
    answer = client.get("/models/rowsum/explain/1", headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 200


def test_an_options_request_to_a_plugin_route_needs_a_key_unless_it_is_a_cors_preflight(
    make_client: Callable[..., TestClient],
) -> None:
    """Only a CORS preflight (``Access-Control-Request-Method``) skips the key: a plugin's own OPTIONS route is
    served to key holders alone."""
    client = start(make_client, Explainer([("/options", ["OPTIONS"], "rowsum")]), api_keys=(KEY,))
    assert client.options("/models/rowsum/options").status_code == 401
    answer = client.options("/models/rowsum/options", headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 200 and answer.json()["path"] == "/models/rowsum/options"


class Resetter(Explainer):
    """A plugin with a route that changes state, for admins only, beside one for any key."""

    @hookimpl
    def stevedore_routes(self, register: Callable[..., None]) -> None:
        register("/explain", self.answer, ["GET"], model="rowsum")
        register("/reset", self.answer, ["POST"], model="rowsum", scope="admin")


def test_a_plugin_route_needs_the_scope_it_names_and_infer_by_default(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    admin = "an-admins-key"
    keys.write_text(
        f"{hashlib.sha256(KEY.encode()).hexdigest()}\tinfer\n{hashlib.sha256(admin.encode()).hexdigest()} admin\n"
    )
    client = start(make_client, Resetter(), api_key_file=str(keys))
    infer, admins = {"Authorization": f"Bearer {KEY}"}, {"Authorization": f"Bearer {admin}"}
    assert client.get("/models/rowsum/explain", headers=infer).status_code == 200
    refused = client.post("/models/rowsum/reset", headers=infer)
    assert refused.status_code == 403 and "admin scope" in refused.json()["error"]
    assert client.post("/models/rowsum/reset", headers=admins).status_code == 200


def test_a_plugin_route_of_an_unknown_scope_fails_its_plugin(make_client: Callable[..., TestClient]) -> None:
    class Unknown(Explainer):
        @hookimpl
        def stevedore_routes(self, register: Callable[..., None]) -> None:
            register("/reset", self.answer, ["POST"], model="rowsum", scope="root")

    client = start(make_client, Unknown())
    assert client.post("/models/rowsum/reset").status_code == 404
    failures = client.get("/healthz").json()["failed_plugins"]
    assert any("scope of /reset must be one of infer, train, admin" in failure["error"] for failure in failures)


def test_the_body_size_limit_applies(make_client: Callable[..., TestClient]) -> None:
    client = start(make_client, Explainer([("/echo", ["POST"], "rowsum")]), max_body_size=100)
    assert client.post("/models/rowsum/echo", content=b"x" * 100).status_code == 200
    refused = client.post("/models/rowsum/echo", content=b"x" * 101)
    assert refused.status_code == 413 and "exceeds the limit of 100 bytes" in refused.json()["error"]

    def chunks() -> Any:
        yield b"x" * 60
        yield b"x" * 60

    assert client.post("/models/rowsum/echo", content=chunks()).status_code == 413  # no content-length


@pytest.mark.parametrize(
    ("route", "builtin"),
    [
        (("/predict", ["POST"], "rowsum"), "POST /models/{name}/predict"),
        (("/schemas/{which}", ["GET"], "rowsum"), "GET /models/{name}/schemas/predict"),
        (("/{anything}", ["GET", "POST"], "rowsum"), "/models/{name}/"),
    ],
)
def test_a_route_that_would_shadow_a_builtin_is_refused(
    make_client: Callable[..., TestClient], route: tuple[str, list[str], str | None], builtin: str
) -> None:
    with pytest.raises(StartupError, match="would shadow the built-in route") as refused:
        start(make_client, Explainer([route]))
    assert f"/models/rowsum{route[0]}" in str(refused.value) and builtin in str(refused.value)


def test_a_route_given_by_two_plugins_is_refused(make_client: Callable[..., TestClient]) -> None:
    with pytest.raises(StartupError, match="would shadow GET /models/rowsum/explain"):
        make_client(
            Registers(RowSum()),
            Explainer([("/explain", ["GET"], "rowsum")]),
            Explainer([("/explain", ["GET"], "rowsum")]),
        )


def test_a_method_the_builtin_does_not_take_is_not_a_shadow(make_client: Callable[..., TestClient]) -> None:
    client = start(make_client, Explainer([("/schemas/predict", ["PUT"], "rowsum")]))
    assert client.put("/models/rowsum/schemas/predict").status_code == 200
    assert client.get("/models/rowsum/schemas/predict").json()["type"] == "array"


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        (("explain", ["GET"], "rowsum"), "must be a string starting with one '/'"),
        (("/explain", "GET", "rowsum"), "must be a list of strings"),
        (("/explain", ["GET"], "nope"), "there is no model 'nope'"),
    ],
)
def test_a_plugin_registering_a_bad_route_is_reported_and_the_server_serves(
    make_client: Callable[..., TestClient], route: tuple[str, list[str], str | None], reason: str
) -> None:
    client = start(make_client, Explainer([route]))
    failures = client.get("/healthz").json()
    assert reason in str(failures), failures
    assert client.post("/models/rowsum/predict", json=[[1, 2]]).status_code == 200


def test_the_documented_example(make_client: Callable[..., TestClient]) -> None:
    """The showcase's routes, which the custom routes' page shows: one under its own model, next-day, whose
    answer next-day takes, and one under its distribution (here the module: a fresh manager has no distribution)."""
    client = make_client(Registers(showcase_module("next_day").NextDay()), showcase_module("routes"))
    example = client.get("/models/next-day/example")
    assert example.status_code == 200
    answer = client.post("/v2/models/next-day/infer", json=example.json())
    assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == ["2022-01-12T11:09:10"]
    answer = client.post("/plugins/showcase_routes/feedback", json={"label": 2})
    assert answer.status_code == 201 and answer.json() == {"received": {"label": 2}}


def test_a_server_that_serves_no_http_asks_for_no_routes() -> None:
    """A Ray replica holds one model and answers its ingress only: a route under another model is no failure."""
    settings = Settings()
    manager = fresh_manager(Registers(RowSum()), Explainer([("/x", ["GET"], "elsewhere")]))
    replica = startup.build_server(settings, startup.load(settings, manager), serves_http=False)
    assert replica.plugin_routes == [] and replica.registry.plugin_failures == []
    ingress = startup.build_server(settings, startup.load(settings, manager))
    assert "there is no model 'elsewhere'" in ingress.registry.plugin_failures[0].error
