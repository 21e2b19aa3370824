"""The jobs routes: start a training, list, watch and cancel jobs. The work is ``jobs.Jobs``'s, off the event loop.

With API keys, a job is its starter's: a caller sees, follows and cancels the jobs its key started, and an admin
every job; to anyone else a job is not there (404), whichever route asks (``viewer_of``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from stevedore_server.base.errors import BadRequest, NotFound, quoted
from stevedore_server.base.serialization import ascii_digits, dumps
from stevedore_server.core.inference import Action
from stevedore_server.frontends.auth import ADMIN, INFER, TRAIN, caller_of
from stevedore_server.frontends.state import of_request
from stevedore_server.jobs.followers import LogFollowers
from stevedore_server.jobs.records import FINISHED, Job, JobState, Viewer, iso
from stevedore_server.jobs.service import Jobs

from .bodies import JSONBytesResponse, model_ref, read_json_text, server_of
from .routing import ApiRoute
from .stevedore_routes import MODEL, VERSIONED

DEFAULT_PAGE = 50
MAX_PAGE = 1000
#: Seconds between a followed log's looks at the store.
FOLLOW_INTERVAL = 0.5
#: Most digits of an integer query parameter: few enough for ``int`` (past 4300 digits it refuses them).
MAX_DIGITS = 20
#: Characters of a refused query parameter's value repeated in the error.
SHOWN_VALUE = 40


def jobs_of(request: Request) -> Jobs:
    jobs: Jobs = of_request(request).jobs
    return jobs


def viewer_of(request: Request) -> Viewer:
    """The jobs the request's caller may see: every job for an admin (anyone, with keys off), else its key's."""
    caller = caller_of(request.scope)
    return Viewer(caller.key_id, every=caller.can(ADMIN))


def int_parameter(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not ascii_digits(raw) or len(raw) > MAX_DIGITS or not low <= int(raw) <= high:
        raise BadRequest(f"query parameter {name}: {quoted(raw, SHOWN_VALUE)} is not an integer from {low} to {high}")
    return int(raw)


async def submit(request: Request, action: Action) -> Job:
    """Queue a job of ``action`` on the body (checked against the model's schema of it), for the caller's key."""
    inference = server_of(request).inference
    ref = model_ref(request)
    await inference.loaded(ref)  # an unknown or unready model, or a full queue, is answered before the body is read
    await to_thread.run_sync(jobs_of(request).check_room)
    model, params = await inference.job_parameters(ref, action, await read_json_text(request))
    started_by = caller_of(request.scope).key_id
    return await to_thread.run_sync(jobs_of(request).submit, model.name, model.version, params, action, started_by)


async def train(request: Request) -> Response:
    """Start training the model on the body's parameters (checked against its train schema): 202 with the job;
    429 once ``max_queued_jobs`` jobs wait."""
    job = await submit(request, Action.TRAIN)
    return JSONBytesResponse(job.as_dict(), status_code=202, headers={"Location": f"/jobs/{job.id}"})


async def predict_job(request: Request) -> Response:
    """A long predict as a job: the body is checked against the predict schema; 202 with the job, whose result
    is the predictions, kept for ``job_retention``."""
    job = await submit(request, Action.PREDICT)
    return JSONBytesResponse(job.as_dict(), status_code=202, headers={"Location": f"/jobs/{job.id}"})


async def list_jobs(request: Request) -> Response:
    """Jobs, newest first (with API keys, those the caller's key started; an admin's: all); filter by ``model``
    and ``state``, page with ``limit`` and ``offset``."""
    state = request.query_params.get("state")
    if state is not None and state not in {item.value for item in JobState}:
        raise BadRequest(f"query parameter state: {quoted(state, SHOWN_VALUE)} is not one of {', '.join(JobState)}")
    limit = int_parameter(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    offset = int_parameter(request, "offset", 0, 0, 2**31)
    model = request.query_params.get("model")
    found = await to_thread.run_sync(jobs_of(request).find, model, state, limit, offset, viewer_of(request))
    body: dict[str, Any] = {"jobs": [job.as_dict() for job in found], "limit": limit, "offset": offset}
    return JSONBytesResponse(body)


async def job_detail(request: Request) -> Response:
    """One job: its state, progress, parameters, timestamps, and result or error."""
    job = await to_thread.run_sync(jobs_of(request).get, request.path_params["id"], viewer_of(request))
    return JSONBytesResponse(job.as_dict())


async def job_logs(request: Request) -> Response:
    """The job's log lines, oldest first; ``after`` (a line's id) for the lines since. ``follow=true``: a stream
    of Server-Sent Events, one a line (its id as the event id), that ends once the job has; 429 beyond
    ``max_log_followers`` such streams."""
    jobs = jobs_of(request)
    job_id = request.path_params["id"]
    viewer = viewer_of(request)
    after = int_parameter(request, "after", 0, 0, 2**62)
    limit = int_parameter(request, "limit", MAX_PAGE, 1, MAX_PAGE)
    if request.query_params.get("follow") in ("true", "1"):
        await to_thread.run_sync(jobs.get, job_id, viewer)  # 404 before the stream starts
        jobs.followers.join()
        return FollowedLog(follow_logs(jobs, job_id, after), jobs.followers)
    lines = await to_thread.run_sync(jobs.logs, job_id, after, limit, viewer)
    return JSONBytesResponse({"id": job_id, "lines": lines})


class FollowedLog(StreamingResponse):
    """A followed log's stream, which gives its place among the followers back when it ends, however it ends (the
    job done, the client gone, the server stopping)."""

    def __init__(self, lines: AsyncIterator[bytes], followers: LogFollowers) -> None:
        super().__init__(lines, media_type="text/event-stream")
        self.followers = followers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.followers.leave()


def log_page(jobs: Jobs, job_id: str, after: int) -> list[dict[str, Any]]:
    return jobs.logs(job_id, after, MAX_PAGE)


async def follow_logs(jobs: Jobs, job_id: str, after: int) -> AsyncIterator[bytes]:
    """The job's log lines as Server-Sent Events, polled from the store until the job has finished."""
    while True:
        finished = (await to_thread.run_sync(jobs.get, job_id)).state in FINISHED
        lines = await to_thread.run_sync(log_page, jobs, job_id, after)
        for line in lines:
            after = line["id"]
            yield b"id: %d\nevent: log\ndata: %s\n\n" % (line["id"], dumps(line))
        if finished and not lines:
            yield b"event: end\ndata: %s\n\n" % dumps((await to_thread.run_sync(jobs.get, job_id)).as_dict())
            return
        if not lines:
            await anyio.sleep(FOLLOW_INTERVAL)


async def cancel_job(request: Request) -> Response:
    """Cancel the job: a queued one at once (200), a running one is stopped (202 until it has); 409 if finished."""
    job = await to_thread.run_sync(jobs_of(request).cancel, request.path_params["id"], viewer_of(request))
    return JSONBytesResponse(job.as_dict(), status_code=200 if job.state is JobState.CANCELLED else 202)


# -- the DEEPaaS V2 train routes, as aliases ----------------------------------

#: DEEPaaS's training statuses for ours.
DEEPAAS_STATUS = {
    JobState.QUEUED: "pending",
    JobState.RUNNING: "running",
    JobState.SUCCEEDED: "done",
    JobState.FAILED: "error",
    JobState.CANCELLED: "cancelled",
    JobState.INTERRUPTED: "error",
}
DEEPAAS_TRAIN = "/v2/models/{name}/train"


def deepaas_view(job: Job) -> dict[str, Any]:
    """A job in DEEPaaS's shape: ``{date, args, uuid, status}``, ``result`` when done, ``message`` on error."""
    view: dict[str, Any] = {
        "date": iso(job.created),
        "args": job.params,
        "uuid": job.id,
        "status": DEEPAAS_STATUS[job.state],
    }
    if job.state is JobState.SUCCEEDED:
        view["result"] = job.result
    if job.error is not None:
        view["message"] = job.error
    return view


def deepaas_job(request: Request, job: Job) -> Job:
    """The job of the path's uuid, as long as it trains the path's model (DEEPaaS's 404 otherwise)."""
    if job.model != request.path_params["name"]:
        raise NotFound(f"model {request.path_params['name']!r} has no training {job.id!r}")
    return job


async def deepaas_train(request: Request) -> Response:
    """DEEPaaS: start a training (``POST .../train/``); 200 with the training, as DEEPaaS answers."""
    return JSONBytesResponse(deepaas_view(await submit(request, Action.TRAIN)))


async def deepaas_list(request: Request) -> Response:
    """DEEPaaS: the model's trainings, a list."""
    name = request.path_params["name"]
    server_of(request).registry.get(name)
    found = await to_thread.run_sync(jobs_of(request).find, name, None, MAX_PAGE, 0, viewer_of(request))
    return JSONBytesResponse([deepaas_view(job) for job in found])


async def deepaas_detail(request: Request) -> Response:
    """DEEPaaS: one training."""
    job = await to_thread.run_sync(jobs_of(request).get, request.path_params["uuid"], viewer_of(request))
    return JSONBytesResponse(deepaas_view(deepaas_job(request, job)))


async def deepaas_cancel(request: Request) -> Response:
    """DEEPaaS: cancel a training; the answer says ``cancelled``, as DEEPaaS's does, once it was asked."""
    jobs, viewer = jobs_of(request), viewer_of(request)
    deepaas_job(request, await to_thread.run_sync(jobs.get, request.path_params["uuid"], viewer))
    job = await to_thread.run_sync(jobs.cancel, request.path_params["uuid"], viewer)
    return JSONBytesResponse(deepaas_view(job) | {"status": "cancelled"})


def deepaas_routes() -> list[BaseRoute]:
    """Before the Open Inference Protocol's mount, which would take every path under ``/v2``."""
    table: list[BaseRoute] = []
    for slash in ("/", ""):  # DEEPaaS's paths end with a slash; documented once
        shown = slash == "/"
        table += [
            ApiRoute(DEEPAAS_TRAIN + slash, deepaas_train, ["POST"], ["deepaas"], shown, needs=TRAIN),
            ApiRoute(DEEPAAS_TRAIN + slash, deepaas_list, ["GET"], ["deepaas"], shown, needs=INFER),
            ApiRoute(DEEPAAS_TRAIN + "/{uuid}" + slash, deepaas_detail, ["GET"], ["deepaas"], shown, needs=INFER),
            ApiRoute(DEEPAAS_TRAIN + "/{uuid}" + slash, deepaas_cancel, ["DELETE"], ["deepaas"], shown, needs=TRAIN),
        ]
    return table


def routes() -> list[BaseRoute]:
    return [
        *(ApiRoute(f"{base}/train", train, ["POST"], ["jobs"], needs=TRAIN) for base in (MODEL, VERSIONED)),
        *(
            ApiRoute(f"{base}/jobs/predict", predict_job, ["POST"], ["jobs"], needs=TRAIN)
            for base in (MODEL, VERSIONED)
        ),
        ApiRoute("/jobs", list_jobs, ["GET"], ["jobs"], needs=INFER),  # a caller sees its own jobs (admin: all)
        ApiRoute("/jobs/{id}", job_detail, ["GET"], ["jobs"], needs=INFER),
        ApiRoute("/jobs/{id}", cancel_job, ["DELETE"], ["jobs"], needs=TRAIN),
        ApiRoute("/jobs/{id}/logs", job_logs, ["GET"], ["jobs"], needs=INFER),
    ]
