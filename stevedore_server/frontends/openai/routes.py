"""The OpenAI-compatible routes: one handler each, mounted under ``/v1`` and under ``/openai/v1`` (as KServe
places them), with OpenAI's error format (``error_format``).

    GET  /v1/models                 the served models with a text capability
    GET  /v1/models/{model}         one of them
    POST /v1/chat/completions       a model's ``chat``
    POST /v1/completions            a model's ``complete``
    POST /v1/embeddings             a model's ``embed``

Each decodes its body (``parameters``), calls the inference core (``Inference.generations``,
``Inference.embed``) and writes OpenAI's shapes; ``stream: true`` answers Server-Sent Events of chunks
(``chunks``), ending with ``data: [DONE]``. The payload log records each answer as the other inference routes'
(a stream's chunks up to its bound).
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Awaitable, Iterator
from datetime import datetime
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from stevedore_server.base.errors import UnknownModel, Unsupported
from stevedore_server.base.serialization import dumps
from stevedore_server.core.deadlines import bounded
from stevedore_server.core.payload_log import RecordedItems
from stevedore_server.core.served_models import Registry
from stevedore_server.core.serving import ServingModel
from stevedore_server.core.text import TextStream, serving_runtime
from stevedore_server.frontends.auth import INFER
from stevedore_server.frontends.payload_notes import from_json, http_exchange, note_request, note_response
from stevedore_server.frontends.web.bodies import JSONBytesResponse, parse_json, read_json_text, served_by, server_of
from stevedore_server.frontends.web.routing import ApiRoute, ProtocolMount
from stevedore_server.frontends.web.watching import request_bound, while_connected
from stevedore_server.predictor import CAPABILITY_METHODS
from stevedore_server.processes.predictor import ProcessPredictor

from . import parameters
from .choices import Choice, StopCutter, collected, prompt_tokens, usage
from .chunks import ID_PREFIXES, OBJECTS, EventsResponse, chunks
from .error_format import EXCEPTION_HANDLERS
from .parameters import Generating, words

PREFIXES = ("/v1", "/openai/v1")
OWNER = "stevedore-server"


# -- chat and completions ---------------------------------------------------------


async def chat_completions(request: Request) -> Response:
    return await generate(request, "chat")


async def completions(request: Request) -> Response:
    return await generate(request, "complete")


async def generate(request: Request, capability: str) -> Response:
    """A chat or completions request: its choices streamed as they come, or collected into one answer."""
    bound = request_bound(request)
    text = await read_json_text(request)
    asked = parameters.generating(capability, await parse_json(request, text))
    inference = server_of(request).inference
    # ``n`` choices an input, each its own call of the model, indexed in order.
    arguments = [given for given in asked.inputs for _ in range(asked.n)]
    if asked.stream:
        with bounded(bound):  # the streams keep it (``Admission.reserve``)
            streams = await inference.generations(asked.ref, capability, arguments, asked.params)
        return streamed(request, text, asked, streams)
    pending = inference.generations(asked.ref, capability, arguments, asked.params)
    body, model = await while_connected(request, bound, answered(asked, pending))
    return whole_answer(request, text, model, body)


def whole_answer(request: Request, text: bytes, model: ServingModel, body: dict[str, Any]) -> Response:
    """``body`` as the response, noted for the payload log with the request as read."""
    content = dumps(body)
    note_request(request.scope, server_of(request), model, from_json, text)
    note_response(request.scope, from_json, content)
    return JSONBytesResponse(content, headers=served_by(model))


async def answered(asked: Generating, generations: Awaitable[list[TextStream]]) -> tuple[dict[str, Any], ServingModel]:
    """The whole answer (``chat.completion`` or ``text_completion``) and the model that gave it."""
    streams = await generations
    try:
        choices = await all_collected(asked, streams)
    finally:
        for stream in streams:
            stream.release()
    capability = asked.capability
    body = {
        "id": ID_PREFIXES[capability] + uuid.uuid4().hex,
        "object": OBJECTS[capability][1],
        "created": int(time.time()),
        "model": asked.model,
        "choices": [whole_choice(capability, choice) for choice in choices],
        "usage": usage(prompt_tokens(asked, choices), choices),
    }
    return body, streams[0].model


async def all_collected(asked: Generating, streams: list[TextStream]) -> list[Choice]:
    """Every choice whole, their generations run side by side (each its own call of the model, its place in the
    bound taken already): ``n`` choices take as long as the slowest where the model runs several at once, not
    the sum. The first error ends them all (each generation closed) and is the answer's."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(collected(stream, Choice(index, StopCutter(asked.stop))))
                for index, stream in enumerate(streams)
            ]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


def whole_choice(capability: str, choice: Choice) -> dict[str, Any]:
    if capability == "complete":
        return {"index": choice.index, "text": choice.text, "logprobs": None, "finish_reason": choice.finish_reason}
    message: dict[str, Any] = {"role": "assistant", "content": choice.text, "refusal": None}
    if choice.tool_calls:
        message["tool_calls"] = choice.tool_calls
        message["content"] = choice.text or None
    return {"index": choice.index, "message": message, "logprobs": None, "finish_reason": choice.finish_reason}


def streamed(request: Request, text: bytes, asked: Generating, streams: list[TextStream]) -> Response:
    """The chunks of the choices as they come, as Server-Sent Events (``chunks``); the payload log records the
    request as read and the chunks sent (up to a bound), once the stream ends."""
    model = streams[0].model
    note_request(request.scope, server_of(request), model, from_json, text)
    recorded: RecordedItems | None = None
    if http_exchange(request.scope) is not None:
        recorded = RecordedItems()
        note_response(request.scope, RecordedItems.value, recorded)
    body = chunks(asked, streams, recorded)
    headers = {"Cache-Control": "no-cache"} | served_by(model)
    return EventsResponse(streams, body, media_type="text/event-stream", headers=headers)


# -- embeddings -------------------------------------------------------------------


async def embeddings(request: Request) -> Response:
    """A vector a text, as floats or as base64 of little-endian float32."""
    bound = request_bound(request)
    text = await read_json_text(request)
    asked = parameters.embedding(await parse_json(request, text))
    inference = server_of(request).inference
    answer = await while_connected(request, bound, inference.embed(asked.ref, asked.texts, asked.params))
    vectors: np.ndarray[Any, Any] = answer.result
    data = [
        {"object": "embedding", "index": index, "embedding": encoded(vector, asked.base64)}
        for index, vector in enumerate(vectors)
    ]
    counted = sum(words(text) for text in asked.texts)
    body = {
        "object": "list",
        "data": data,
        "model": asked.model,
        "usage": {"prompt_tokens": counted, "total_tokens": counted},
    }
    return whole_answer(request, text, answer.model, body)


def encoded(vector: np.ndarray[Any, Any], as_base64: bool) -> Any:
    if as_base64:
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


# -- models -----------------------------------------------------------------------


async def list_models(request: Request) -> Response:
    entries = [entry for entry, _ in text_models(server_of(request).registry)]
    return JSONBytesResponse({"object": "list", "data": entries})


async def retrieve_model(request: Request) -> Response:
    """One model as the list names it, or by ``name:version`` for a default version (as the other routes take
    it)."""
    asked = request.path_params["model"]
    models = list(text_models(server_of(request).registry))
    for entry, model in models:
        if asked in (entry["id"], f"{model.name}:{model.version}"):
            return JSONBytesResponse(entry | {"id": asked})
    ids = [entry["id"] for entry, _ in models]
    raise UnknownModel.named(asked, ids, f"no model named {asked!r} with a text capability")


def text_models(registry: Registry) -> Iterator[tuple[dict[str, Any], ServingModel]]:
    """Every served model the text routes serve, as ``/v1/models`` lists it: its default version by its name, the
    others as ``name:version``."""
    for name, versions in registry.snapshot.by_name.items():
        for number, model in enumerate(versions):
            capabilities = sorted(model.predictor.text_capabilities)
            if not capabilities or not serves_text(model):
                continue
            entry_id = name if number == 0 else f"{name}:{model.version}"
            yield (
                {"id": entry_id, "object": "model", "created": epoch(model.loaded.created), "owned_by": OWNER,
                 "capabilities": capabilities},
                model,
            )  # fmt: skip


def serves_text(model: ServingModel) -> bool:
    """Whether the text routes serve ``model`` where it runs (``core.text.serving_runtime``: not in worker
    processes, not on Ray Serve). A lazy model has no runtime until its first request loads it: it serves unless
    its predictor is a worker processes' proxy."""
    if not model.servable:
        return False
    if model.runtime is None:
        return not isinstance(model.predictor, ProcessPredictor)
    methods = [name for name in CAPABILITY_METHODS if name in model.predictor.text_capabilities]
    try:
        for capability in methods:
            serving_runtime(model, capability)
    except Unsupported:
        return False
    return True


def epoch(created: str | None) -> int:
    """An ISO 8601 time (``...Z``) as seconds since the epoch; 0 where unknown (a model not loaded yet)."""
    if created is None:
        return 0
    return int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())


def routes() -> list[BaseRoute]:
    """The routes under each prefix, each prefix a mount with OpenAI's error format."""
    tags = ["OpenAI-compatible"]
    handlers = [
        ("/models", list_models, "GET"),
        ("/models/{model}", retrieve_model, "GET"),
        ("/chat/completions", chat_completions, "POST"),
        ("/completions", completions, "POST"),
        ("/embeddings", embeddings, "POST"),
    ]
    mounts: list[BaseRoute] = []
    for prefix in PREFIXES:
        mounted: list[BaseRoute] = [
            ApiRoute(path, handler, [method], tags, template=prefix + path, needs=INFER,
                     include_in_schema=prefix == PREFIXES[0])
            for path, handler, method in handlers
        ]  # fmt: skip
        mounts.append(ProtocolMount(prefix, mounted, EXCEPTION_HANDLERS))
    return mounts
