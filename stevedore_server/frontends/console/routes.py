"""The console's routes: its pages, the fragments they load, and the console's files.

A page (``/``, ``/console/models/NAME``, ``/console/jobs``) holds no data: it
loads its fragments with htmx, which sends the API key typed in the page, so the
pages are open when keys are on while the fragments, like the catalogue, need
one. The fragments show what the JSON routes answer (``catalogue_document``,
``health_document`` and ``catalogue_entry`` of ``stevedore_routes``, the jobs'
``as_dict``, the pipelines' ``listing``, under the models), read from the same place; the jobs page cancels through
``DELETE /jobs/{id}``.
"""

from __future__ import annotations

import re
from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from stevedore_server.base import exposure
from stevedore_server.base.errors import NotReady
from stevedore_server.core.serving import ServingModel
from stevedore_server.frontends.web import docs, stevedore_routes
from stevedore_server.frontends.web.bodies import server_of
from stevedore_server.frontends.web.jobs_routes import jobs_of, viewer_of
from stevedore_server.frontends.web.routing import model_tag
from stevedore_server.jobs.records import FINISHED

from .forms import form_for
from .pages import ASSETS_DIRECTORY, ASSETS_PACKAGE, ASSETS_PATH, render, segment

FRAGMENTS = "/console/fragments"
#: Seconds between refreshes of the models page, of a model's state and of the jobs page.
REFRESH_SECONDS = 5
#: The jobs the jobs page lists (the newest), and the log lines it shows of one.
JOBS_SHOWN = 50
LOG_LINES_SHOWN = 200
#: The paths that hold no data, open without an API key: the pages and the console's files.
PAGES = re.compile(r"/\Z|/console/models/[^/]+(/versions/[^/]+)?\Z|/console/jobs\Z|/console/assets/")


def routes() -> list[BaseRoute]:
    """The console's routes, none of them in the OpenAPI document (plain routes are not)."""
    table: list[BaseRoute] = [
        Route("/", models_page, methods=["GET"], name="console"),
        Route(f"{FRAGMENTS}/models", models_fragment, methods=["GET"]),
        Route("/console/jobs", jobs_page, methods=["GET"]),
        Route(f"{FRAGMENTS}/jobs", jobs_fragment, methods=["GET"]),
        Route(f"{FRAGMENTS}/jobs/{{id}}/logs", job_log_fragment, methods=["GET"]),
    ]
    for base in (stevedore_routes.MODEL, stevedore_routes.VERSIONED):
        table += [
            Route(f"/console{base}", model_page, methods=["GET"]),
            Route(f"{FRAGMENTS}{base}", model_fragment, methods=["GET"]),
            Route(f"{FRAGMENTS}{base}/state", state_fragment, methods=["GET"]),
        ]
    table.append(Mount(ASSETS_PATH, app=docs.assets_app(ASSETS_DIRECTORY, ASSETS_PACKAGE), name="console_assets"))
    return table


def keys_on(request: Request) -> bool:
    return exposure.keys_on(server_of(request).settings)


# -- pages ------------------------------------------------------------------------


async def models_page(request: Request) -> Response:
    """Every model with its state, the failed plugins, the health checks: refreshed in place."""
    fragment = f"{FRAGMENTS}/models"
    return render("models.html", keys=keys_on(request), fragment=fragment, refresh=REFRESH_SECONDS)


async def model_page(request: Request) -> Response:
    """One model: what it is, how to call it, and a form to try it."""
    name, version = request.path_params["name"], request.path_params.get("version")
    fragment = model_path(FRAGMENTS, name, version)
    return render("model.html", keys=keys_on(request), fragment=fragment, name=name)


async def jobs_page(request: Request) -> Response:
    """The newest jobs (trainings and long predictions) with their state and progress, refreshed in place; a
    running one can be cancelled and any one's log read."""
    return render("jobs.html", keys=keys_on(request), fragment=f"{FRAGMENTS}/jobs", refresh=REFRESH_SECONDS)


def model_path(prefix: str, name: str, version: str | None = None) -> str:
    path = f"{prefix}/models/{segment(name)}"
    return path if version is None else f"{path}/versions/{segment(version)}"


# -- fragments --------------------------------------------------------------------


async def models_fragment(request: Request) -> Response:
    server = server_of(request)
    catalogue = stevedore_routes.catalogue_document(server.registry)
    health = await stevedore_routes.health_document(request)
    await server.pipelines.recheck()
    pipelines = server.pipelines.listing()
    context = {"catalogue": catalogue, "health": health, "model_path": model_path, "pipelines": pipelines}
    return render("models_fragment.html", **context)


async def model_fragment(request: Request) -> Response:
    model = stevedore_routes.addressed_model(request)
    entry = stevedore_routes.catalogue_entry(server_of(request).registry, model)
    predict_schema = schema_of(model, "predict")
    fixture = model.loaded.predict_fixture
    context: dict[str, Any] = {
        "entry": entry,
        "model_path": model_path,
        "predict_schema": predict_schema,
        "score_schema": schema_of(model, "score") if model.predictor.has_score else None,
        "fixture": fixture,
        "form": form_for(predict_schema, fixture) if predict_schema is not None else None,
        "docs_section": f"/docs#/{segment(model_tag(model.name))}" if model.ready else None,
        "state_url": model_path(FRAGMENTS, model.name, model.version) + "/state",
        "refresh": REFRESH_SECONDS,
    }
    return render("model_fragment.html", **context)


async def state_fragment(request: Request) -> Response:
    """A model's state, and the buttons that load and unload it."""
    model = stevedore_routes.addressed_model(request)
    return render("state_fragment.html", entry=stevedore_routes.catalogue_entry(server_of(request).registry, model))


async def jobs_fragment(request: Request) -> Response:
    """The newest jobs, as ``GET /jobs`` answers them: those the caller may see."""
    found = await to_thread.run_sync(jobs_of(request).find, None, None, JOBS_SHOWN, 0, viewer_of(request))
    jobs = [job.as_dict() for job in found]
    finished = [str(state) for state in FINISHED]
    return render("jobs_fragment.html", jobs=jobs, finished=finished, model_path=model_path, fragments=FRAGMENTS)


async def job_log_fragment(request: Request) -> Response:
    """A job's log: its first lines (NotFound for no such job, or one the caller may not see)."""
    job_id = request.path_params["id"]
    jobs = jobs_of(request)
    job = await to_thread.run_sync(jobs.get, job_id, viewer_of(request))
    lines = await to_thread.run_sync(jobs.logs, job_id, 0, LOG_LINES_SHOWN)
    return render("job_log_fragment.html", job=job.as_dict(), lines=lines, shown=LOG_LINES_SHOWN)


def schema_of(model: ServingModel, kind: str) -> dict[str, Any] | None:
    """A schema, or None for a model that failed before its schemas compiled."""
    try:
        return model.schema(kind)
    except NotReady:
        return None
