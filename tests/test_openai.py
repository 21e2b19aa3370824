"""The OpenAI-compatible routes against a real ``stevedore-server run`` serving the contrib text plugin
(``ngram-lm``, ``ngram-embed``) and the test text models (``text_models``), through the official ``openai`` SDK,
sync and async: chat, completions and embeddings, streamed and not, their parameters, usage, errors in OpenAI's
format, API keys, ``/openai/v1``, a client leaving mid-stream, and ``--workers 2``."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from stevedore_server.frontends.openai.error_format import EXCEPTION_HANDLERS
from stevedore_server.frontends.web.routing import ProtocolMount

from .counting import metric
from .documentation import block, page
from .helpers import record_distribution, wait_until
from .test_docs_examples import check_answer, commands, curl
from .text_models import TEXT_MODELS
from .text_plugin import EMBEDDING_MODEL, LANGUAGE_MODEL, TEXT_PLUGIN, text_site
from .venvs import REPO, Server, Venv, ready_server

pytestmark = pytest.mark.server

ADMIN_KEY = "openai-admin-key"
INFER_KEY = "openai-infer-key"
#: Words of the plugin's text (Coriolanus, Richard III): a continuation is made of the text's words.
PLUGIN_TEXT = sorted((REPO / "contrib" / "text_ngram" / "stevedore_text_ngram" / "data").glob("*.txt"))


def serve(directory: Path, *args: str, **env: str) -> Server:
    """The real server serving the text plugin and the test text models, ready."""
    site = directory / "site"
    record_distribution(site, *TEXT_MODELS)
    plugins = f"{TEXT_PLUGIN[0]},{TEXT_MODELS[0]}"
    here = Venv(Path(sys.prefix), ())
    python_path = f"{REPO}:{site}:{text_site(directory)}"
    return ready_server(here, directory / "server.log", "--plugins", plugins, *args, PYTHONPATH=python_path, **env)


#: The first server's settings: ``tool-user`` loaded on its first request, a traffic name for ``words``, which
#: runs four generations at once.
CONFIG = """
[models.tool-user]
load = "lazy"

[models.words]
max_concurrency = 4

[traffic.talk]
split = [{ model = "words:1", weight = 1 }]
"""


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("openai")


@pytest.fixture(scope="module")
def server(directory: Path) -> Iterator[Server]:
    """One worker, API keys on (an admin key and a key that may only infer), the payload log in a file."""
    keys = directory / "api-keys"
    lines = [f"{hashlib.sha256(key.encode()).hexdigest()} {scope}" for key, scope in
             [(ADMIN_KEY, "admin"), (INFER_KEY, "infer")]]  # fmt: skip
    keys.write_text("\n".join(lines) + "\n")
    (directory / "stevedore.toml").write_text(CONFIG)
    settings = ("--config", str(directory / "stevedore.toml"), "--payload-log", f"file:{directory / 'payloads.jsonl'}")
    running = serve(directory, *settings, STEVEDORE_API_KEY_FILE=str(keys))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=INFER_KEY, max_retries=0)


@pytest.fixture(scope="module")
def raw(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {INFER_KEY}"}, timeout=30) as http:
        yield http


def text_words() -> set[str]:
    return {word.lower() for path in PLUGIN_TEXT for word in re.findall(r"[A-Za-z']+", path.read_text())}


def test_chat_answers_in_words_of_the_text_with_usage_and_the_model_named(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "What says the king?"}]
    raw = client.chat.completions.with_raw_response.create(
        model=LANGUAGE_MODEL, messages=messages, max_tokens=12, temperature=0
    )  # type: ignore[arg-type]
    assert (raw.headers["X-Model-Name"], raw.headers["X-Model-Version"]) == (LANGUAGE_MODEL, "1")
    answer = raw.parse()
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    assert answer.model == LANGUAGE_MODEL and abs(answer.created - time.time()) < 60
    choice = answer.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason in ("length", "stop")
    said = re.findall(r"[A-Za-z']+", choice.message.content or "")
    assert said and {word.lower() for word in said} <= text_words()
    assert answer.usage is not None and answer.usage.prompt_tokens > 0
    assert 0 < answer.usage.completion_tokens <= 12
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_a_streamed_chat_is_the_same_text_in_chunks_ending_with_usage_and_done(
    client: openai.OpenAI, raw: httpx.Client
) -> None:
    asked = {"model": LANGUAGE_MODEL, "messages": [{"role": "user", "content": "My lord"}], "max_tokens": 10,
             "seed": 7, "temperature": 0.8}  # fmt: skip
    whole = client.chat.completions.create(**asked)  # type: ignore[call-overload]
    chunks = list(client.chat.completions.create(**asked, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {chunk.id for chunk in chunks} == {chunks[0].id} and chunks[0].object == "chat.completion.chunk"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content  # the same seed, the same text
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(chunk.usage is None for chunk in chunks[:-1])
    with raw.stream("POST", "/v1/chat/completions", json={**asked, "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)


def test_stream_options_the_sdk_may_send_are_accepted(client: openai.OpenAI) -> None:
    options = {"include_usage": True, "include_obfuscation": False}  # the SDK's ChatCompletionStreamOptionsParam
    messages: Any = [{"role": "user", "content": "plain text"}]
    chunks = list(client.chat.completions.create(model="words", messages=messages, stream=True, stream_options=options))
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) == "plain text"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2


def test_completions_take_n_seed_max_tokens_and_several_prompts(client: openai.OpenAI) -> None:
    answer = client.completions.create(model=LANGUAGE_MODEL, prompt="The king", max_tokens=5, n=3, seed=11)
    assert answer.object == "text_completion" and answer.id.startswith("cmpl-")
    assert [choice.index for choice in answer.choices] == [0, 1, 2]
    assert all(choice.finish_reason == "length" for choice in answer.choices)
    again = client.completions.create(model=LANGUAGE_MODEL, prompt="The king", max_tokens=5, n=3, seed=11)
    assert [c.text for c in again.choices] == [c.text for c in answer.choices]
    assert answer.usage is not None and answer.usage.prompt_tokens == 2  # the prompt counted once, not once a choice
    assert answer.usage.completion_tokens == 15
    two = client.completions.create(model=LANGUAGE_MODEL, prompt=["The king", "My lord"], max_tokens=3, n=2)
    assert [choice.index for choice in two.choices] == [0, 1, 2, 3]
    assert two.usage is not None and two.usage.prompt_tokens == 4


def test_the_choices_of_a_whole_answer_are_generated_side_by_side(client: openai.OpenAI) -> None:
    started = time.monotonic()
    answer = client.completions.create(
        model="words", prompt="tick tock", n=4, extra_body={"metadata": {"delay": "0.4"}}
    )  # type: ignore[call-overload]
    took = time.monotonic() - started
    assert [choice.text for choice in answer.choices] == ["tick tock"] * 4
    assert took < 2.0, took  # one after the other: 4 choices of 2 words, 0.4 s each, 3.2 s


def test_streamed_choices_are_generated_side_by_side_their_chunks_as_they_come(client: openai.OpenAI) -> None:
    started = time.monotonic()
    stream = client.chat.completions.create(
        model="words", messages=[{"role": "user", "content": "tick tock"}], n=4, stream=True,
        extra_body={"metadata": {"delay": "0.4"}},
    )  # fmt: skip
    chunks = list(stream)
    took = time.monotonic() - started
    indexes = [chunk.choices[0].index for chunk in chunks]
    texts = ["".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices[0].index == index)
             for index in range(4)]  # fmt: skip
    assert texts == ["tick tock"] * 4
    firsts = [indexes.index(index) for index in range(4)]
    lasts = [len(indexes) - 1 - indexes[::-1].index(index) for index in range(4)]
    assert max(firsts) < min(lasts), indexes  # every choice began before any ended: their chunks interleave
    assert all(chunks[first].choices[0].delta.role == "assistant" for first in firsts)
    assert took < 2.0, took  # one after the other: 4 choices of 2 words, 0.4 s each, 3.2 s


def test_a_streamed_request_the_model_refuses_when_called_is_answered_with_its_status(
    client: openai.OpenAI,
) -> None:
    """The response starts with the first piece: an error calling the model is the request's, not an event."""
    with pytest.raises(openai.BadRequestError, match="max_tokens must be an integer") as refused:
        client.completions.create(model=LANGUAGE_MODEL, prompt="The king", max_tokens=200_000, stream=True)
    assert refused.value.status_code == 400 and refused.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError, match="max_tokens must be an integer"):
        client.chat.completions.create(
            model=LANGUAGE_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=200_000, n=2, stream=True
        )
    with pytest.raises(openai.InternalServerError, match="error id") as failed:
        client.chat.completions.create(model="failing", messages=[{"role": "user", "content": "fail"}], stream=True)
    assert failed.value.type == "server_error" and "asked to fail" not in failed.value.message
    chunks = list(client.completions.create(model=LANGUAGE_MODEL, prompt="The king", max_tokens=3, stream=True))
    assert chunks[-1].choices[0].finish_reason == "length"


def test_the_server_cuts_the_text_at_a_stop_sequence_and_closes_the_generation(
    server: Server, client: openai.OpenAI, tmp_path: Path
) -> None:
    counted = metric(server, "stevedore_inferences_total", action="complete", model="words")
    marker = tmp_path / "closed"
    asked = {"model": "words", "prompt": "one two three four five", "stop": ["hree", "five"],
             "extra_body": {"metadata": {"marker": str(marker)}}}  # fmt: skip
    answer = client.completions.create(**asked)  # type: ignore[call-overload]
    assert answer.choices[0].text == "one two t" and answer.choices[0].finish_reason == "stop"
    wait_until(marker.exists, "the generation cut at its stop sequence closed")
    marker.unlink()
    streamed = list(client.completions.create(**asked, stream=True))  # type: ignore[call-overload]
    assert "".join(chunk.choices[0].text for chunk in streamed) == "one two t"
    assert streamed[-1].choices[0].finish_reason == "stop"
    wait_until(marker.exists, "the streamed generation cut at its stop sequence closed")
    # Each an inference done (a generation cut short is counted as one, as it ends), under the action complete.
    assert metric(server, "stevedore_inferences_total", action="complete", model="words") == counted + 2


def test_embeddings_as_floats_and_base64_are_the_same_vectors_and_close_in_meaning(
    client: openai.OpenAI, raw: httpx.Client
) -> None:
    texts = ["the king and his crown", "the crown of the king", "a soldier's sword in battle"]
    floats = client.embeddings.create(model=EMBEDDING_MODEL, input=texts, encoding_format="float")
    assert floats.object == "list" and [item.index for item in floats.data] == [0, 1, 2]
    vectors = np.array([item.embedding for item in floats.data])
    encoded = raw.post("/v1/embeddings", json={"model": EMBEDDING_MODEL, "input": texts, "encoding_format": "base64"})
    decoded = np.array([np.frombuffer(base64.b64decode(item["embedding"]), "<f4") for item in encoded.json()["data"]])
    assert np.allclose(decoded, vectors, atol=1e-6)
    by_sdk = client.embeddings.create(model=EMBEDDING_MODEL, input=texts)  # the SDK asks base64 and decodes it
    assert np.allclose(np.array([item.embedding for item in by_sdk.data]), vectors, atol=1e-6)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2]
    assert floats.usage.prompt_tokens == sum(len(text.split()) for text in texts)
    short = client.embeddings.create(model=EMBEDDING_MODEL, input="the king", dimensions=8, encoding_format="float")
    assert len(short.data[0].embedding) == 8
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        client.embeddings.create(model=EMBEDDING_MODEL, input="the king", dimensions=100_000)


def test_concurrent_embeddings_are_batched(server: Server, client: openai.OpenAI) -> None:
    def embed(number: int) -> list[float]:
        answer = client.embeddings.create(model=EMBEDDING_MODEL, input=f"text {number}", encoding_format="float")
        return answer.data[0].embedding

    before = batches(server)
    with ThreadPoolExecutor(16) as pool:
        vectors = list(pool.map(embed, range(64)))
    assert len(vectors) == 64
    counted, rows = batches(server)[0] - before[0], batches(server)[1] - before[1]
    assert rows == 64 and counted < 64, (counted, rows)


def test_a_text_refused_in_a_batch_is_refused_to_its_own_client_alone(server: Server, client: openai.OpenAI) -> None:
    def embed(text: str) -> str:
        try:
            return str(client.embeddings.create(model="vectors", input=text, encoding_format="float").data[0].embedding)
        except openai.BadRequestError as error:
            return str(error.body["message"])  # type: ignore[index]

    texts = [f"text {number}" for number in range(11)] + ["refuse me"]
    before = metric(server, "stevedore_batch_size_count", model="vectors")
    with ThreadPoolExecutor(12) as pool:
        answers = dict(zip(texts, pool.map(embed, texts), strict=True))
    assert metric(server, "stevedore_batch_size_count", model="vectors") - before < 12  # some were batched
    assert answers.pop("refuse me") == "the text 'refuse me' is refused"
    assert answers == {text: str([float(len(text)), 1.0]) for text in answers}


def batches(server: Server) -> tuple[float, float]:
    """The batches run of the embedding model, and the requests they held (``stevedore_batch_size``)."""
    return (
        metric(server, "stevedore_batch_size_count", model=EMBEDDING_MODEL),
        metric(server, "stevedore_batch_size_sum", model=EMBEDDING_MODEL),
    )


def test_the_async_client_streams_and_answers(server: Server) -> None:
    asyncio.run(async_client_calls(server))


async def async_client_calls(server: Server) -> None:
    client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=INFER_KEY, max_retries=0)
    stream = await client.chat.completions.create(
        model="words", messages=[{"role": "user", "content": "alpha beta gamma"}], stream=True
    )
    pieces = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]
    assert "".join(piece or "" for piece in pieces) == "alpha beta gamma"
    answer = await client.completions.create(model="failing", prompt="all good")  # an async generator
    assert answer.choices[0].text == "first second"
    vectors = await client.embeddings.create(model=EMBEDDING_MODEL, input=["a", "b"])
    assert len(vectors.data) == 2
    await client.close()


def test_a_traffic_name_routes_to_its_variant(client: openai.OpenAI) -> None:
    raw = client.completions.with_raw_response.create(model="talk", prompt="routed here")
    assert (raw.headers["X-Model-Name"], raw.headers["X-Model-Version"]) == ("words", "1")
    answer = raw.parse()
    assert answer.model == "talk" and answer.choices[0].text == "routed here"


def test_the_payload_log_records_requests_and_answers_streamed_or_not(client: openai.OpenAI, directory: Path) -> None:
    path = directory / "payloads.jsonl"
    whole = client.with_options(default_headers={"X-Request-ID": "logged-whole"}).completions.create(
        model="words", prompt="note this"
    )
    streamed = client.with_options(default_headers={"X-Request-ID": "logged-stream"}).chat.completions.create(
        model="words", messages=[{"role": "user", "content": "and this"}], stream=True
    )
    assert [chunk.choices[0].delta.content for chunk in streamed] == ["", "and", " this", None]
    client.with_options(default_headers={"X-Request-ID": "logged-vectors"}).embeddings.create(
        model=EMBEDDING_MODEL, input="a king", encoding_format="float"
    )

    def records() -> dict[str, dict[str, object]]:
        lines = path.read_text().splitlines() if path.exists() else []
        return {record["id"]: record for record in map(json.loads, lines) if record["id"].startswith("logged-")}

    wait_until(lambda: len(records()) == 3, "three records in the payload log")
    logged = records()
    assert logged["logged-whole"]["request"] == {"model": "words", "prompt": "note this"}
    assert logged["logged-whole"]["response"] == whole.model_dump(exclude_unset=True)
    chunks = logged["logged-stream"]["response"]
    assert isinstance(chunks, list) and [chunk["object"] for chunk in chunks] == ["chat.completion.chunk"] * 4
    assert (logged["logged-vectors"]["model"], logged["logged-vectors"]["route"]) == (
        EMBEDDING_MODEL,
        "POST /v1/embeddings",
    )


def test_the_routes_answer_under_openai_v1_too(server: Server) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key=INFER_KEY, max_retries=0)
    answer = client.completions.create(model="words:1", prompt="under kserve's prefix")
    assert answer.choices[0].text == "under kserve's prefix" and answer.model == "words:1"
    assert {model.id for model in client.models.list()} >= {LANGUAGE_MODEL, EMBEDDING_MODEL, "words"}


def test_the_models_list_names_the_text_models_alone(client: openai.OpenAI) -> None:
    models = {model.id: model for model in client.models.list()}
    assert set(models) == {LANGUAGE_MODEL, EMBEDDING_MODEL, "words", "tool-user", "failing", "vectors"}
    assert models[LANGUAGE_MODEL].owned_by == "stevedore-server" and models[LANGUAGE_MODEL].created > 0
    assert client.models.retrieve(EMBEDDING_MODEL).id == EMBEDDING_MODEL
    assert client.models.retrieve(f"{EMBEDDING_MODEL}:1").id == f"{EMBEDDING_MODEL}:1"  # as the other routes take it
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    assert missing.value.code == "model_not_found"


def test_errors_are_openais_for_unknown_models_and_capabilities_a_model_lacks(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert unknown.value.code == "model_not_found" and unknown.value.type == "invalid_request_error"
    with pytest.raises(openai.NotFoundError) as version:
        client.completions.create(model=f"{LANGUAGE_MODEL}:9", prompt="hi")
    assert version.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError, match="does not support chat") as lacking:
        client.chat.completions.create(model=EMBEDDING_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert lacking.value.code is None and lacking.value.param == "model"  # as OpenAI names it
    with pytest.raises(openai.NotFoundError, match="does not support embed"):
        client.embeddings.create(model=LANGUAGE_MODEL, input="hi")


TOOL = {"type": "function", "function": {"name": "shout", "parameters": {"type": "object", "properties": {}}}}


def test_tools_go_to_a_model_declaring_them_and_are_refused_to_others(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model=LANGUAGE_MODEL,
            messages=[{"role": "user", "content": "hi"}],
            tools=[TOOL],  # type: ignore[list-item]
        )
    assert refused.value.param == "tools" and refused.value.code is None
    with pytest.raises(openai.BadRequestError) as format_refused:
        client.chat.completions.create(
            model="words", messages=[{"role": "user", "content": "hi"}], response_format={"type": "json_object"}
        )
    assert format_refused.value.param == "response_format"
    answer = client.chat.completions.create(
        model="tool-user",
        messages=[{"role": "user", "content": "hello"}],
        tools=[TOOL],  # type: ignore[list-item]
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls or []
    assert [(call.function.name, call.function.arguments) for call in calls] == [("shout", '{"text": "hello"}')]  # type: ignore[union-attr]
    streamed = list(client.chat.completions.create(
        model="tool-user", messages=[{"role": "user", "content": "hello"}], tools=[TOOL], stream=True  # type: ignore[list-item]
    ))  # fmt: skip
    deltas = [call for chunk in streamed for call in chunk.choices[0].delta.tool_calls or []]
    assert [(call.index, call.id, call.type, call.function.name) for call in deltas] == [  # type: ignore[union-attr]
        (0, "call_1", "function", "shout")
    ]
    assert [chunk.choices[0].finish_reason for chunk in streamed] == [None] * (len(streamed) - 1) + ["tool_calls"]


def test_tools_and_response_format_reach_a_model_declaring_them_unchanged(client: openai.OpenAI) -> None:
    declared = {
        "tools": [TOOL, {"type": "function", "function": {"name": "whisper", "description": "quietly", "strict": True,
                                                          "parameters": {"type": "object", "properties": {}}}}],
        "tool_choice": {"type": "function", "function": {"name": "whisper"}},
        "parallel_tool_calls": False,
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "said", "schema": {"type": "object"}, "strict": True}},
    }  # fmt: skip
    answer = client.chat.completions.create(
        model="tool-user",
        messages=[{"role": "user", "content": "echo"}],
        **declared,  # type: ignore[arg-type]
    )
    assert json.loads(answer.choices[0].message.content or "") == declared


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b'{"model": "words", "prompt": "a", "n": "two"}', 400, "n"),
        (b'{"model": "words", "prompt": "a", "n": 9}', 400, "n"),
        (b'{"model": "words", "prompt": "a", "frobnicate": 1}', 400, "frobnicate"),
        (b'{"model": "words", "prompt": [1, 2, 3]}', 400, "prompt"),
        (b'{"model": "words", "prompt": "a", "echo": true}', 400, "echo"),
        (b'{"model": "words", "prompt": "a", "logprobs": 2}', 400, "logprobs"),
        (b'{"model": "words", "prompt": "a", "stop": ["a", "b", "c", "d", "e"]}', 400, "stop"),
        (b'{"prompt": "a"}', 400, None),
        (b"[1, 2]", 400, None),
    ],
)
def test_bad_bodies_get_openais_errors_and_the_server_serves_on(
    raw: httpx.Client, body: bytes, status: int, param: str | None
) -> None:
    response = raw.post("/v1/completions", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["param"] == param and "Traceback" not in error["message"]
    if param == "frobnicate":
        assert error["message"] == "Unrecognized request argument supplied: frobnicate"
    assert raw.post("/v1/completions", json={"model": "words", "prompt": "still here"}).status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/embeddings", {"model": EMBEDDING_MODEL, "input": ""}, "input"),
        ("/v1/embeddings", {"model": EMBEDDING_MODEL, "input": ["a king", ""]}, "input"),
        ("/v1/completions", {"model": "words", "prompt": "a", "stream_options": {"include_usage": True}},
         "stream_options"),
        ("/v1/completions", {"model": "words", "prompt": ["a"] * 65}, "prompt"),
        ("/v1/chat/completions", {"model": "words", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
         "messages[0].content[0]"),
    ],
)  # fmt: skip
def test_what_openai_refuses_is_refused_before_the_model_runs(
    raw: httpx.Client, path: str, body: dict[str, object], param: str
) -> None:
    response = raw.post(path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param and response.json()["error"]["type"] == "invalid_request_error"


def test_a_body_past_the_size_limit_is_a_413_in_openais_format(raw: httpx.Client) -> None:
    body = b'{"model": "words", "prompt": "' + b"a" * (17 * 1024 * 1024) + b'"}'  # the limit: 16 MiB
    response = raw.post("/v1/completions", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["type"] == "invalid_request_error"


def test_more_generations_than_the_model_ever_takes_is_the_clients_mistake(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="generations asked at once") as refused:
        client.completions.create(model="words", prompt=["a"] * 60, n=8)  # 480: past words' bound, always
    assert refused.value.code is None and refused.value.status_code == 400 and refused.value.param == "n"
    assert client.completions.create(model="words", prompt=["a"] * 4, n=8).choices[31].text == "a"


def test_a_chat_with_an_image_is_refused(raw: httpx.Client) -> None:
    parts = [{"type": "text", "text": "what is it?"}, {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]
    body = {"model": "words", "messages": [{"role": "user", "content": parts}]}
    response = raw.post("/v1/chat/completions", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages[0].content[1]"


def test_a_models_failure_is_a_500_with_an_error_id_before_and_while_streaming(
    server: Server, client: openai.OpenAI
) -> None:
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="failing", messages=[{"role": "user", "content": "please fail"}])
    message = str(failed.value.message)
    error_id = re.search(r"error id ([0-9a-f]{32})", message)
    assert error_id and "Traceback" not in message and "asked to fail" not in message
    logged = error_id.group(1)
    wait_until(lambda: logged in server.log(), "the failure logged under its error id")
    with pytest.raises(openai.InternalServerError) as one_of_two:  # choices generated side by side: the first error
        client.chat.completions.create(model="failing", messages=[{"role": "user", "content": "fail"}], n=2)
    assert one_of_two.value.type == "server_error" and "error id" in one_of_two.value.message
    stream = client.completions.create(model="failing", prompt="fail now", stream=True)
    with pytest.raises(openai.APIError, match="error id"):
        for chunk in stream:
            assert chunk.choices[0].text == "first"
    assert client.chat.completions.create(model="failing", messages=[{"role": "user", "content": "ok"}])


@pytest.mark.parametrize("choices", [1, 2])
def test_a_client_leaving_mid_stream_closes_the_generation(server: Server, tmp_path: Path, choices: int) -> None:
    marker = tmp_path / "closed"
    body = {"model": "words", "prompt": "tick " * 50, "stream": True, "max_tokens": 50, "n": choices,
            "metadata": {"marker": str(marker), "delay": "0.2"}}  # fmt: skip
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {INFER_KEY}"}, timeout=30) as http:
        with http.stream("POST", "/v1/completions", json=body) as response:
            lines = response.iter_lines()
            assert next(line for line in lines if line).startswith("data: ")
        started = time.monotonic()
    wait_until(marker.exists, "the generation's finally after its client left", deadline=20)
    assert time.monotonic() - started < 5  # closed when the client left, not after its 50 pieces (10 s)


def test_a_client_leaving_before_a_whole_answer_closes_the_generation(server: Server, tmp_path: Path) -> None:
    marker = tmp_path / "closed"
    body = {"model": "words", "prompt": "tock " * 50, "max_tokens": 50,
            "metadata": {"marker": str(marker), "delay": "0.2"}}  # fmt: skip
    headers = {"Authorization": f"Bearer {INFER_KEY}"}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/completions", json=body, headers=headers, timeout=0.5)
    started = time.monotonic()
    wait_until(marker.exists, "the generation's finally after its client left", deadline=20)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("prefix", ["/v1", "/openai/v1"])
def test_api_key_refusals_are_openais_errors(server: Server, prefix: str) -> None:
    wrong = openai.OpenAI(base_url=f"{server.url}{prefix}", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        wrong.completions.create(model="words", prompt="hi")
    assert refused.value.code == "invalid_api_key" and refused.value.type == "invalid_request_error"
    assert refused.value.body == {
        "message": "a valid API key is required: send Authorization: Bearer <key>",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
    assert refused.value.response.headers["WWW-Authenticate"] == 'Bearer realm="stevedore", error="invalid_token"'
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    # The SDK never sends a request without a key: a client of plain HTTP does.
    missing = httpx.post(f"{server.url}{prefix}/completions", json={"model": "words", "prompt": "hi"})
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == 'Bearer realm="stevedore"'
    assert missing.json()["error"] == {"message": "an API key is required: send Authorization: Bearer <key>",
                                       "type": "invalid_request_error", "param": None, "code": None}  # fmt: skip
    # A write from another site's page (``--cors-origins`` allows none): 403, in the same format.
    client = openai.OpenAI(base_url=f"{server.url}{prefix}", api_key=INFER_KEY, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as cross_site:
        client.completions.create(model="words", prompt="hi", extra_headers={"Origin": "http://elsewhere.example"})
    assert cross_site.value.type == "invalid_request_error" and "cross-site" in cross_site.value.message
    assert set(cross_site.value.body) == {"message", "type", "param", "code"}  # type: ignore[arg-type]
    admin = openai.OpenAI(base_url=f"{server.url}{prefix}", api_key=ADMIN_KEY, max_retries=0)
    assert admin.completions.create(model="words", prompt="hi").choices[0].text == "hi"
    assert httpx.get(f"{server.url}/v2/models/words", timeout=5).json() == {
        "error": "an API key is required: send Authorization: Bearer <key>"
    }  # the V2 routes answer in their own format still


def test_the_openapi_document_shows_the_routes_bodies_and_openais_errors(raw: httpx.Client) -> None:
    spec = raw.get("/openapi.json").json()
    chat = spec["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"]["required"] == ["model", "messages"]
    assert chat["responses"]["404"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OpenAIError"
    }
    assert spec["components"]["schemas"]["OpenAIError"]["required"] == ["error"]
    (model,) = spec["paths"]["/v1/models/{model}"]["get"]["parameters"]
    assert re.fullmatch(model["schema"]["pattern"], "words:1")


def test_an_unexpected_error_under_the_routes_is_openais_500_with_an_error_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No request reaches a bug on purpose: a route of the mount that raises stands for one."""

    async def broken(request: Request) -> Response:
        raise RuntimeError("a bug")

    app = Starlette(routes=[ProtocolMount("/v1", [Route("/broken", broken)], EXCEPTION_HANDLERS)])
    with TestClient(app) as http, caplog.at_level(logging.ERROR, "stevedore.openai"):
        response = http.get("/v1/broken")
    assert response.status_code == 500
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("server_error", None, None)
    error_id = re.fullmatch(r"internal server error; see the server log for error id ([0-9a-f]{32})", error["message"])
    assert error_id is not None and "a bug" not in error["message"]
    (logged,) = [record for record in caplog.records if error_id.group(1) in record.getMessage()]
    assert logged.exc_info is not None and str(logged.exc_info[1]) == "a bug"


#: The second server's settings: ``tool-user`` in a worker process, ``words`` bounded to one call at a time, 1 s.
WORKERS_CONFIG = """
[models.tool-user]
processes = 1

[models.words]
max_concurrency = 1
max_queue = 0
timeout = 1
"""


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("openai-workers")
    (directory / "stevedore.toml").write_text(WORKERS_CONFIG)
    running = serve(directory, "--workers", "2", "--config", str(directory / "stevedore.toml"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def workers_client(workers: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{workers.url}/v1", api_key="unused", max_retries=0)


def test_two_workers_answer_every_route(workers_client: openai.OpenAI) -> None:
    client = workers_client

    def one(number: int) -> tuple[str, int, int]:
        chat = client.chat.completions.create(
            model=LANGUAGE_MODEL, messages=[{"role": "user", "content": "the king"}], max_tokens=4, seed=number
        )
        streamed = list(
            client.completions.create(model=LANGUAGE_MODEL, prompt=f"n {number}", max_tokens=3, stream=True)
        )
        vectors = client.embeddings.create(model=EMBEDDING_MODEL, input=["a king", "a queen"])
        return chat.choices[0].message.content or "", len(streamed), len(vectors.data)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(24)))
    assert all(text and chunks == 4 and count == 2 for text, chunks, count in answers), answers


def test_a_model_in_worker_processes_is_refused_saying_so(workers_client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="runs in worker processes") as refused:
        workers_client.chat.completions.create(model="tool-user", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.code is None
    assert "tool-user" not in {model.id for model in workers_client.models.list()}


def slow(words: int) -> dict[str, object]:
    """A request of ``words``, a word every 0.4 s (``text_models.Words``)."""
    return {"model": "words", "prompt": "slow " * words, "extra_body": {"metadata": {"delay": "0.4"}}}


def test_the_models_bound_and_time_out_answer_openais_errors(workers_client: openai.OpenAI) -> None:
    def call(_: int) -> int:
        try:
            workers_client.completions.create(**slow(2))  # type: ignore[call-overload]
        except openai.APIStatusError as error:
            assert error.code == "overloaded" and error.response.headers["Retry-After"] == "1"
            return error.status_code
        return 200

    with ThreadPoolExecutor(4) as pool:  # one call at a time a worker, none waiting: two at most answered
        statuses = sorted(pool.map(call, range(4)))
    assert statuses.count(503) >= 2 and statuses.count(200) >= 1, statuses
    with pytest.raises(openai.APIStatusError) as late:
        workers_client.completions.create(**slow(5))  # type: ignore[call-overload]
    assert late.value.status_code == 504 and late.value.code == "timeout"
    time.sleep(0.5)  # the call timed out goes on to its next piece: its thread is the model's only one
    with pytest.raises(openai.APIError, match="did not complete within 1 s"):
        list(workers_client.completions.create(**slow(5), stream=True))  # type: ignore[call-overload]


# -- the page's examples (docs/llm/openai.md) ----------------------------------------------------------------------


def with_key(command: str) -> str:
    """A documented curl with the infer key this server asks for (the page's server has none)."""
    return command.replace("curl ", f"curl -H 'Authorization: Bearer {INFER_KEY}' ", 1)


def test_the_pages_curl_examples_answer_as_shown(server: Server) -> None:
    shown = commands(block("sh", "localhost:8000/v1/models", page("llm/openai.md")))
    for command in shown:
        check_answer(command, *curl(with_key(command.line), server.url))
    assert sum(command.shown.startswith("{") for command in shown) == 3
    (streamed,) = commands(block("sh", "curl -sN localhost:8000/v1/completions", page("llm/openai.md")))
    status, body = curl(with_key(streamed.line), server.url)
    events = [line for line in body.splitlines() if line]
    assert status == 200 and len(events) == 5 and streamed.shown.endswith(events[-1]) and events[-1] == "data: [DONE]"
    first, last = (json.loads(event.removeprefix("data: ")) for event in (events[0], events[-2]))
    assert first["object"] == "text_completion" and first["choices"][0]["finish_reason"] is None
    assert last["choices"][0] == {"index": 0, "text": "", "finish_reason": "length", "logprobs": None}


def test_the_pages_sdk_example_prints_as_shown(server: Server, tmp_path: Path) -> None:
    code = block("python", "from openai import OpenAI", page("llm/openai.md"))
    script = tmp_path / "example.py"
    script.write_text(
        code.replace("http://localhost:8000", server.url).replace('api_key="unused"', f'api_key="{INFER_KEY}"')
    )
    ran = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    said, streamed, sizes = ran.stdout.splitlines()
    assert said.strip() and streamed.strip() and sizes == "2 64"
