"""Every model as an MCP tool: the official ``mcp`` SDK client (streamable HTTP, both the handshake era and the
2026-07-28 era) against a real ``stevedore-server run`` serving iris, the contrib text plugin and the test models
of ``mcp_models`` (one held back at startup), with a traffic name and a pipeline, API keys on.

The tools are listed with their schemas (a table's wrapped in an object) and fixtures as examples; iris called
with its fixture answers its predictions; invalid input and a failing model are tool errors; a model hidden by
``mcp = false`` is an unknown tool; loading (and unloading) the held-back model changes the list and tells the
sessions and listeners; ``--no-mcp`` serves no ``/mcp``; an open notification stream does not hold the shutdown.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import httpx2
import mcp_types as types
import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from starlette.applications import Starlette

from stevedore_server.base.settings import Settings
from stevedore_server.frontends.app import create_app
from stevedore_server.frontends.mcp import protocol
from stevedore_server.frontends.mcp.service import Endpoint
from stevedore_server.frontends.state import of_lifespan

from .documentation import block, page
from .helpers import Registers, fresh_manager, record_distribution, wait_until
from .mcp_models import RowSums
from .text_plugin import LANGUAGE_MODEL, TEXT_PLUGIN, text_site
from .venvs import REPO, Server, Venv, free_ports, ready_server

pytestmark = pytest.mark.server

ADMIN_KEY, INFER_KEY = "mcp-admin-key", "mcp-infer-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
INFER = {"Authorization": f"Bearer {INFER_KEY}"}
#: The test models' distribution and entry point.
MODELS = ("stevedore-test-mcp", {"mcp": "tests.mcp_models:models"})
PLUGINS = f"stevedore-sklearn-logreg,{MODELS[0]},{TEXT_PLUGIN[0]}"
LOADED = f"iris,iris-proba,adder,row-sums,hidden-sums,lazy-sums,{LANGUAGE_MODEL},ngram-embed"
LATE = "late-sums"
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [7.0, 3.2, 4.7, 1.4], [6.3, 3.3, 6.0, 2.5]]
CONFIG = """
[models.hidden-sums]
mcp = false

[models.lazy-sums]
load = "lazy"

[traffic.sums]
split = [{ model = "row-sums:1.0", weight = 1 }]
description = "Row sums, through a traffic name."

[pipelines.iris-then-sum]
type = "sequence"
steps = [{ model = "iris-proba" }, { model = "row-sums", data = "$response" }]
"""
#: Seconds a change of the tools takes to reach a client, at most (the watch looks twice a second).
TOLD_WITHIN = 20.0
#: A handshake-era client's first request, and what its requests accept.
INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}  # fmt: skip
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
LIST_TOOLS = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
ACCEPT = {"Accept": "application/json, text/event-stream"}

T = TypeVar("T")


def serve(directory: Path, *args: str, config: str = CONFIG, **env: str) -> Server:
    """The real server of the environment running the tests, serving iris, the text plugin and the test models,
    with API keys (admin, infer) on."""
    site = directory / "site"
    record_distribution(site, *MODELS)
    keys = directory / "api-keys"
    lines = [
        f"{hashlib.sha256(key.encode()).hexdigest()} {scope}"
        for key, scope in ((ADMIN_KEY, "admin"), (INFER_KEY, "infer"))
    ]
    keys.write_text("\n".join(lines) + "\n")
    (directory / "stevedore.toml").write_text(config)
    options = ("--config", str(directory / "stevedore.toml"), "--plugins", PLUGINS, *args)
    pythonpath = f"{REPO}:{site}:{text_site(directory)}"
    here = Venv(Path(sys.prefix), ())
    return ready_server(
        here, directory / "server.log", *options, deadline=120, PYTHONPATH=pythonpath, STEVEDORE_API_KEY_FILE=str(keys)
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = serve(tmp_path_factory.mktemp("mcp"), "--load-models", LOADED)
    yield running
    running.stop()


def connected(server: Server, mode: str = "legacy", key: str = INFER_KEY, **options: Any) -> Any:
    """An SDK client of the server's ``/mcp``, sending ``key``."""
    return connected_to(f"{server.url}/mcp", mode, key, **options)


@asynccontextmanager
async def connected_to(
    url: str, mode: str, key: str = INFER_KEY, http: httpx2.AsyncClient | None = None, **options: Any
) -> AsyncIterator[Client]:
    """An SDK client of ``url``, over ``http`` (by default a client sending ``key``)."""
    http = http or httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(30, read=300))
    async with (
        http,
        Client(streamable_http_client(url, http_client=http), mode=mode, **options) as client,
    ):
        yield client


def run(test: Callable[[], Awaitable[T]]) -> T:
    return anyio.run(test)


def tools_by_name(listed: types.ListToolsResult) -> dict[str, types.Tool]:
    return {tool.name: tool for tool in listed.tools}


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_the_tools_are_the_ready_models_traffic_names_and_pipelines(server: Server, mode: str) -> None:
    async def listed() -> tuple[str, dict[str, types.Tool]]:
        async with connected(server, mode) as client:
            return client.protocol_version, tools_by_name(await client.list_tools())

    version, tools = run(listed)
    assert version == ("2025-11-25" if mode == "legacy" else "2026-07-28")
    expected = {"iris", "iris-proba", "adder", "row-sums", LANGUAGE_MODEL, "ngram-embed", "sums", "iris-then-sum"}
    assert expected <= set(tools), sorted(tools)
    assert "hidden-sums" not in tools  # mcp = false
    # The held-back model is listed once loaded only (the notification tests load and unload it).
    iris = tools["iris"]
    assert iris.input_schema["type"] == "object" and iris.input_schema["required"] == ["payload"]
    assert iris.input_schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert iris.input_schema["properties"]["payload"]["items"]["minItems"] == 4
    assert iris.input_schema["examples"] == [{"payload": IRIS_ROWS}]
    assert iris.description is not None and iris.description.startswith("Logistic regression on the iris")
    assert "[[5.1,3.5,1.4,0.2]" in iris.description and iris.output_schema is None
    adder = tools["adder"]  # an object schema is the tool's as it is, its output schema declared
    assert adder.input_schema["properties"] == {"a": {"type": "number"}, "b": {"type": "number"}}
    assert adder.input_schema["examples"] == [{"a": 1, "b": 2}]
    assert adder.output_schema is not None and adder.output_schema["properties"]["predictions"] == {"type": "number"}
    assert tools["row-sums"].description is not None and "'row-sums' version '1.0'" in tools["row-sums"].description
    assert tools["sums"].description is not None and tools["sums"].description.startswith("Row sums, through")
    assert tools["iris-then-sum"].input_schema["properties"]["payload"]["items"]["minItems"] == 4


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_iris_called_with_its_fixture_answers_its_predictions(server: Server, mode: str) -> None:
    direct = httpx.post(f"{server.url}/models/iris/predict", json=IRIS_ROWS, headers=INFER, timeout=30).json()

    async def called() -> types.CallToolResult:
        async with connected(server, mode) as client:
            return await client.call_tool("iris", {"payload": IRIS_ROWS})

    result = run(called)
    assert not result.is_error
    expected = {"predictions": direct["predictions"], "model_name": "iris", "model_version": "1"}
    assert result.structured_content == expected
    assert isinstance(result.content[0], types.TextContent)
    assert httpx.Response(200, content=result.content[0].text).json() == expected


def test_objects_traffic_names_pipelines_and_the_text_plugin_answer(server: Server) -> None:
    async def called() -> list[types.CallToolResult]:
        async with connected(server) as client:
            return [
                await client.call_tool("adder", {"a": 2, "b": 3.5}),
                await client.call_tool("sums", {"payload": [[1, 2], [3, 4]]}),
                await client.call_tool("iris-then-sum", {"payload": IRIS_ROWS[:1]}),
                await client.call_tool(LANGUAGE_MODEL, {"payload": ["My lord, the king"]}),
            ]

    adder, sums, pipeline, text = run(called)
    assert adder.structured_content == {"predictions": 5.5, "model_name": "adder", "model_version": "2.1"}
    assert sums.structured_content == {"predictions": [3.0, 7.0], "model_name": "row-sums", "model_version": "1.0"}
    assert pipeline.structured_content is not None and pipeline.structured_content["model_name"] == "iris-then-sum"
    assert pipeline.structured_content["predictions"] == [pytest.approx(1.0)]
    assert text.structured_content is not None and text.structured_content["model_name"] == LANGUAGE_MODEL
    continuations = text.structured_content["predictions"]
    assert len(continuations) == 1 and isinstance(continuations[0], str) and continuations[0].strip()


def test_a_lazy_model_is_a_tool_before_its_first_call_loads_it(server: Server) -> None:
    """Listed from what its predictor declares (its schema and fixture) without loading it; called, it loads."""

    def state() -> str:
        entry = httpx.get(f"{server.url}/models/lazy-sums", headers=INFER, timeout=30).json()
        return str(entry["state"])

    async def listed_then_called() -> tuple[types.Tool, str, types.CallToolResult]:
        async with connected(server) as client:
            tool = tools_by_name(await client.list_tools())["lazy-sums"]
            before = await anyio.to_thread.run_sync(state)
            return tool, before, await client.call_tool("lazy-sums", tool.input_schema["examples"][0])

    tool, before, called = run(listed_then_called)
    assert before == "lazy"
    assert tool.input_schema["examples"] == [{"payload": [[1, 2]]}]
    assert tool.description is not None and tool.description.startswith("Row sums, loaded on the first call")
    assert called.structured_content == {"predictions": [3.0], "model_name": "lazy-sums", "model_version": "1.0"}
    assert state() == "ready"


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_invalid_input_and_a_failing_model_are_tool_errors_and_the_server_keeps_serving(
    server: Server, mode: str
) -> None:
    async def called() -> list[types.CallToolResult]:
        async with connected(server, mode) as client:
            return [
                await client.call_tool("iris", {"payload": [[5.1, 3.5]]}),
                await client.call_tool("iris", {"rows": IRIS_ROWS}),
                await client.call_tool("adder", {"a": "one", "b": 2}),
                await client.call_tool("row-sums", {"payload": [[-1, 2]]}),
                await client.call_tool("iris", {"payload": IRIS_ROWS[:1]}),
            ]

    short, unwrapped, wrong_type, failing, fine = run(called)
    for result in (short, unwrapped, wrong_type, failing):
        assert result.is_error and isinstance(result.content[0], types.TextContent), result
        assert "Traceback" not in result.content[0].text
    texts = [result.content[0].text for result in (short, unwrapped, wrong_type, failing)]  # type: ignore[union-attr]
    assert texts[0] == "payload does not match the model's schema: /0: [5.1,3.5] has less than 4 items"
    assert texts[1] == "the arguments of 'iris' must hold the predict body as 'payload'"
    assert texts[2].startswith("payload does not match the model's schema: /a: ") and '"one"' in texts[2]
    assert texts[3].startswith("model 'row-sums' version '1.0' failed to predict: ValueError; see the server log")
    error_id = texts[3].rsplit(" ", 1)[1]
    assert f"error id {error_id}" in server.log() and "a negative value, which this model refuses" in server.log()
    assert not fine.is_error and fine.structured_content == {"predictions": [0], "model_name": "iris",
                                                              "model_version": "1"}  # fmt: skip


@pytest.mark.parametrize("mode", ["legacy", "auto"])
@pytest.mark.parametrize("name", ["hidden-sums", "no-such-model"])
def test_a_hidden_or_unknown_model_is_an_unknown_tool(server: Server, mode: str, name: str) -> None:
    async def called() -> MCPError:
        async with connected(server, mode) as client:
            with pytest.raises(MCPError) as raised:
                await client.call_tool(name, {"payload": [[1, 2]]})
            return raised.value

    error = run(called)
    assert error.code == types.INVALID_PARAMS and error.message == f"Unknown tool: {name}"
    # The model itself still serves its own route: only the tool is hidden.
    if name == "hidden-sums":
        answer = httpx.post(f"{server.url}/models/hidden-sums/predict", json=[[1, 2]], headers=INFER, timeout=30)
        assert answer.json()["predictions"] == [3.0]


def toggle_late(server: Server) -> bool:
    """Load the held-back model if it is not served, else unload it: whether it is a tool afterwards."""
    state = httpx.get(f"{server.url}/models/{LATE}/ready", headers=ADMIN, timeout=30)
    action = "unload" if state.status_code == 200 else "load"
    answer = httpx.post(f"{server.url}/v2/repository/models/{LATE}/{action}", headers=ADMIN, timeout=120)
    assert answer.status_code == 200, answer.text
    return action == "load"


class GetStreamOpened(logging.Handler):
    """Set once the SDK client says its standalone GET stream is open (the session's notifications come on it)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.opened = anyio.Event()
        #: Set once the client says the server ended its GET stream (it then reconnects).
        self.ended = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message == "GET SSE connection established":
            self.opened.set()
        elif message.startswith("GET stream disconnected"):
            self.ended.set()


@pytest.fixture
def get_stream() -> Iterator[GetStreamOpened]:
    handler = GetStreamOpened()
    client_logger = logging.getLogger("mcp.client.streamable_http")
    level = client_logger.level
    client_logger.addHandler(handler)
    client_logger.setLevel(logging.DEBUG)
    yield handler
    client_logger.removeHandler(handler)
    client_logger.setLevel(level)


def test_a_session_is_told_when_a_held_back_model_is_loaded_and_unloaded(
    server: Server, get_stream: GetStreamOpened
) -> None:
    """The handshake era: ``notifications/tools/list_changed`` on the session's GET stream, then the new list."""
    told: list[anyio.Event] = []

    async def handler(message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification) and told:
            told[-1].set()

    async def watched() -> list[tuple[bool, bool]]:
        seen = []
        async with connected(server, message_handler=handler) as client:
            capabilities = client.server_capabilities
            assert capabilities.tools is not None and capabilities.tools.list_changed
            with anyio.fail_after(30):
                await get_stream.opened.wait()
            for _ in range(2):  # loaded, then unloaded (or the other way round)
                told.append(anyio.Event())
                listed = await anyio.to_thread.run_sync(toggle_late, server)
                with anyio.fail_after(TOLD_WITHIN):
                    await told[-1].wait()
                seen.append((listed, LATE in tools_by_name(await client.list_tools())))
        return seen

    seen = run(watched)
    assert seen in ([(True, True), (False, False)], [(False, False), (True, True)])


def test_a_listener_is_told_when_a_held_back_model_is_loaded_and_unloaded(server: Server) -> None:
    """The 2026-07-28 era: a ``subscriptions/listen`` stream gets each change, and the list follows."""

    async def watched() -> list[tuple[bool, bool]]:
        seen = []
        async with connected(server, "auto") as client, client.listen(tools_list_changed=True) as subscription:
            events = subscription.__aiter__()
            for _ in range(2):
                listed = await anyio.to_thread.run_sync(toggle_late, server)
                with anyio.fail_after(TOLD_WITHIN):
                    await events.__anext__()
                seen.append((listed, LATE in tools_by_name(await client.list_tools())))
        return seen

    seen = run(watched)
    assert seen in ([(True, True), (False, False)], [(False, False), (True, True)])


def test_api_keys_apply(server: Server) -> None:
    anonymous = httpx.post(f"{server.url}/mcp", json=INITIALIZE, headers=ACCEPT, timeout=30)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
    wrong = httpx.post(f"{server.url}/mcp", json=INITIALIZE, headers={**ACCEPT, "Authorization": "Bearer no"})
    assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["www-authenticate"]
    accepted = httpx.post(f"{server.url}/mcp", json=INITIALIZE, headers={**ACCEPT, **INFER}, timeout=30)
    assert accepted.status_code == 200 and accepted.headers["mcp-session-id"]
    # Each request of a session needs the key, its notifications' GET stream (a GET, unlike the probes) too.
    named = {**ACCEPT, "Mcp-Session-Id": accepted.headers["mcp-session-id"], "Mcp-Protocol-Version": "2025-11-25"}
    assert httpx.post(f"{server.url}/mcp", json=INITIALIZED, headers=named, timeout=30).status_code == 401
    assert httpx.get(f"{server.url}/mcp", headers=named, timeout=10).status_code == 401
    assert httpx.delete(f"{server.url}/mcp", headers=named, timeout=30).status_code == 401
    assert httpx.post(f"{server.url}/mcp", json=INITIALIZED, headers={**named, **INFER}, timeout=30).status_code == 202
    # A session answers only the key that opened it, however wide another key's scopes.
    assert httpx.post(f"{server.url}/mcp", json=LIST_TOOLS, headers={**named, **ADMIN}, timeout=30).status_code == 404
    assert httpx.delete(f"{server.url}/mcp", headers={**named, **ADMIN}, timeout=30).status_code == 404
    listed = httpx.post(f"{server.url}/mcp", json=LIST_TOOLS, headers={**named, **INFER}, timeout=30)
    assert listed.status_code == 200 and '"name":"iris"' in listed.text

    async def with_a_wrong_key() -> None:
        async with connected(server, key="no"):
            pass

    with pytest.raises(ExceptionGroup) as raised:  # the SDK's error for the 401, out of its task groups
        run(with_a_wrong_key)
    assert raised.group_contains(MCPError, match="Server returned an error response")


def test_protocol_junk_gets_json_rpc_errors_and_the_server_keeps_serving(server: Server) -> None:
    """Bodies that are not JSON-RPC, methods that do not exist, a tool call of the wrong shape: each an error the
    client can read (HTTP 400, or a JSON-RPC error in the answer), no traceback in it nor in the log, and the
    session and the server serve on."""
    logged = len(server.log())
    url, keyed = f"{server.url}/mcp", {**ACCEPT, **INFER}
    for body, media_type in ((b"not json", "application/json"), (b"[]", "application/json"),
                             (b'{"jsonrpc": "2.0"}', "application/json"), (b"\xff\xfe", "application/json"),
                             (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}', "text/plain")):  # fmt: skip
        answer = httpx.post(url, content=body, headers={**keyed, "Content-Type": media_type}, timeout=30)
        assert answer.status_code == 400 and "Traceback" not in answer.text, (body, answer.text)
    opened = httpx.post(url, json=INITIALIZE, headers=keyed, timeout=30)
    named = {**keyed, "Mcp-Session-Id": opened.headers["mcp-session-id"], "Mcp-Protocol-Version": "2025-11-25"}
    httpx.post(url, json=INITIALIZED, headers=named, timeout=30)
    for request, code in (({"method": "no/such"}, types.METHOD_NOT_FOUND),
                          ({"method": "tools/call", "params": {"name": "iris", "arguments": [1, 2]}},
                           types.INVALID_PARAMS),
                          ({"method": "tools/call", "params": {"arguments": {}}}, types.INVALID_PARAMS)):  # fmt: skip
        answer = httpx.post(url, json={"jsonrpc": "2.0", "id": 7, **request}, headers=named, timeout=30)
        assert answer.status_code == 200 and f'"code":{code}' in answer.text, (request, answer.text)
    called = {"jsonrpc": "2.0", "id": 8, "method": "tools/call",
              "params": {"name": "iris", "arguments": {"payload": IRIS_ROWS[:1]}}}  # fmt: skip
    answer = httpx.post(url, json=called, headers=named, timeout=30)
    assert '"structuredContent":{"predictions":[0]' in answer.text, answer.text
    assert "Traceback" not in server.log()[logged:]


def test_without_mcp_there_is_no_route(tmp_path: Path) -> None:
    running = serve(tmp_path, "--no-mcp")
    try:
        answer = httpx.post(f"{running.url}/mcp", json={}, headers=INFER, timeout=30)
        assert answer.status_code == 404, answer.text
        assert httpx.post(f"{running.url}/models/iris/predict", json=IRIS_ROWS, headers=INFER).status_code == 200
    finally:
        running.stop()


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_an_open_notification_stream_does_not_hold_the_shutdown(
    tmp_path: Path, get_stream: GetStreamOpened, mode: str
) -> None:
    """SIGTERM while a session's GET stream (the handshake era) or a listener's stream (2026-07-28) is open: the
    server ends the stream and exits long before its graceful time-out (60 s here) would have cut it."""
    running = serve(tmp_path, "--graceful-timeout", "60")

    async def stopped_with_a_stream_open() -> float:
        async with connected(running, mode) as client:
            await client.list_tools()
            if mode == "legacy":
                with anyio.fail_after(30):
                    await get_stream.opened.wait()
                return await stopped()
            async with client.listen(tools_list_changed=True):
                return await stopped()

    async def stopped() -> float:
        started = time.monotonic()
        running.process.send_signal(signal.SIGTERM)
        await anyio.to_thread.run_sync(running.process.wait, 60)
        return time.monotonic() - started

    try:
        took = run(stopped_with_a_stream_open)  # a stream held open makes the wait time out (TimeoutExpired)
    finally:
        running.stop()
    assert running.process.returncode == 0, running.log()
    assert took < 10, f"the server took {took:.1f} s to stop:\n{running.log()}"


@contextmanager
def in_process(app: Starlette) -> Iterator[tuple[uvicorn.Server, str]]:
    """``app`` served by a uvicorn of this process (its state at hand), and the URL of its ``/mcp``."""
    (port,) = free_ports(1)
    served = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: served.started, "the server to start")
        yield served, f"http://127.0.0.1:{port}/mcp"
    finally:
        served.should_exit = True
        thread.join(10)


def running_of(app: Starlette) -> protocol.Running:
    """The MCP server an app started on its first request to ``/mcp``."""
    (endpoint,) = [found for route in app.routes if isinstance(found := getattr(route, "endpoint", None), Endpoint)]
    running = endpoint.host.running if endpoint.host is not None else None
    assert running is not None
    return running


def test_draining_ends_a_sessions_stream_by_itself(get_stream: GetStreamOpened) -> None:
    """The server's own drain, not uvicorn's signal (an app served by another's uvicorn, as Ray Serve's): once the
    app's lifecycle drains, the session's GET stream ends within a look of the watch."""
    app = create_app(Settings(), fresh_manager(Registers(RowSums())))

    async def drained(served: uvicorn.Server, url: str) -> bool:
        async with connected_to(url, "legacy") as client:
            await client.list_tools()
            with anyio.fail_after(30):
                await get_stream.opened.wait()
            state = of_lifespan(served.lifespan.state)
            assert state is not None and not get_stream.ended.is_set()
            state.lifecycle.drain()
            with anyio.move_on_after(10):
                await get_stream.ended.wait()
            # A stream opened once the server drains is refused at once (its client goes to another replica).
            (session_id,) = running_of(app).sessions.by_id
            named = {**ACCEPT, "Mcp-Session-Id": session_id, "Mcp-Protocol-Version": "2025-11-25"}
            async with httpx.AsyncClient(timeout=10) as http:
                refused = await http.get(url, headers=named)
            assert refused.status_code == 503 and "stopping" in refused.json()["error"], refused.text
            return get_stream.ended.is_set()

    with in_process(app) as (served, url):
        assert anyio.run(drained, served, url)


def test_a_session_is_forgotten_once_deleted_or_closed_for_idleness(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sessions to tell of a change are not kept past their end (a server with many short-lived agents would
    otherwise keep them all): forgotten at once when the client deletes its session, and, when it just goes away,
    once the session manager has closed it for idleness."""
    monkeypatch.setattr(protocol, "SESSION_IDLE_TIMEOUT", 1.0)
    app = create_app(Settings(), fresh_manager(Registers(RowSums())))

    async def session_of_a_client(url: str, deletes: bool) -> str:
        http = httpx2.AsyncClient(timeout=30)
        transport = streamable_http_client(url, http_client=http, terminate_on_close=deletes)
        async with http, Client(transport, mode="legacy") as client:
            await client.list_tools()
            (session_id,) = running_of(app).sessions.by_id
            return session_id

    with in_process(app) as (_, url):
        anyio.run(session_of_a_client, url, True)
        assert not running_of(app).sessions.by_id  # the client's DELETE
        idle = anyio.run(session_of_a_client, url, False)
        wait_until(lambda: idle not in running_of(app).sessions.by_id, "the idle session to be forgotten", 10)
        named = {**ACCEPT, "Mcp-Session-Id": idle, "Mcp-Protocol-Version": "2025-11-25"}
        assert httpx.post(url, json=LIST_TOOLS, headers=named, timeout=30).status_code == 404  # closed there too


def test_an_mcp_server_that_failed_is_replaced_by_the_next_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """The MCP server failing (here its watch, made to break once) ends it alone: logged, the app serves on, and
    the next request to ``/mcp`` starts another."""
    app = create_app(Settings(), fresh_manager(Registers(RowSums())))
    breaks = [RuntimeError("the watch broke")]
    watch = protocol.Running.watch

    async def watch_breaking_once(running: protocol.Running, lifecycle: Any) -> None:
        if breaks:
            await anyio.sleep(0.5)
            raise breaks.pop()
        await watch(running, lifecycle)

    monkeypatch.setattr(protocol.Running, "watch", watch_breaking_once)

    async def listed(url: str) -> list[str]:
        async with connected_to(url, "legacy") as client:
            return [tool.name for tool in (await client.list_tools()).tools]

    with in_process(app) as (_, url):
        assert anyio.run(listed, url) == ["row-sums"]
        first = running_of(app)
        wait_until(lambda: first.ended, "the first MCP server to fail")
        assert anyio.run(listed, url) == ["row-sums"]
        assert running_of(app) is not first and not running_of(app).ended


def test_the_sdk_is_imported_on_the_first_request_to_mcp_only() -> None:
    """A server whose ``/mcp`` nobody uses spends nothing on it: neither the ``mcp`` SDK nor pydantic is imported
    at startup; the first request to ``/mcp`` imports them, starts the MCP server and is answered."""
    script = f"""
import sys
from starlette.testclient import TestClient
from stevedore_server.frontends.app import create_app
from stevedore_server.base.settings import Settings
with TestClient(create_app(Settings(plugins=("none",))), base_url="http://localhost") as client:
    assert client.get("/livez").status_code == 200
    loaded = sorted({{"mcp", "mcp_types", "pydantic"}} & set(sys.modules))
    assert not loaded, f"loaded at startup: {{loaded}}"
    answer = client.post("/mcp", json={INITIALIZE!r}, headers={ACCEPT!r})
    assert answer.status_code == 200 and answer.headers["mcp-session-id"], answer.text
    assert "mcp" in sys.modules
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_first_requests_at_once_start_one_mcp_server(tmp_path: Path) -> None:
    """Clients opening sessions at once on a server whose MCP server has not started yet: one starts, and every
    session opened then serves its next requests (a second MCP server started meanwhile would not know the first's
    sessions: 404). The body limit is the server's (``--max-body-size``), not the SDK's."""
    running = serve(tmp_path, "--load-models", "iris", "--max-body-size", "4096")

    async def opened_then_listed() -> list[int]:
        async with httpx.AsyncClient(base_url=running.url, headers={**ACCEPT, **INFER}, timeout=60) as http:
            answers = await asyncio.gather(*(http.post("/mcp", json=INITIALIZE) for _ in range(8)))
            assert all(answer.status_code == 200 for answer in answers), [answer.text for answer in answers]
            listed = await asyncio.gather(*(listed_in(http, answer.headers["mcp-session-id"]) for answer in answers))
            return [answer.status_code for answer in listed]

    async def listed_in(http: httpx.AsyncClient, session_id: str) -> httpx.Response:
        named = {"Mcp-Session-Id": session_id, "Mcp-Protocol-Version": "2025-11-25"}
        await http.post("/mcp", json=INITIALIZED, headers=named)
        return await http.post("/mcp", json=LIST_TOOLS, headers=named)

    try:
        assert asyncio.run(opened_then_listed()) == [200] * 8, running.log()
        padded = {**INITIALIZE, "params": {**INITIALIZE["params"], "padding": "x" * 5000}}  # type: ignore[dict-item]
        too_large = httpx.post(f"{running.url}/mcp", json=padded, headers={**ACCEPT, **INFER}, timeout=30)
        assert too_large.status_code == 413, too_large.text
    finally:
        running.stop()


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_workers_serve_the_tools_statelessly(workers: Server, mode: str) -> None:
    """``--workers 2``: any worker answers any request, so the handshake era runs without sessions (and says it
    cannot tell of changes); every call answers, whichever worker takes it. Each request on a connection of its
    own, so both workers take some (each names its requests' ids with a prefix of its own)."""
    answered_by: set[str] = set()

    async def noted(response: httpx2.Response) -> None:
        answered_by.add(response.headers["x-request-id"][:12])

    async def used() -> tuple[bool, list[types.CallToolResult]]:
        http = httpx2.AsyncClient(
            headers=INFER,
            timeout=httpx2.Timeout(30, read=300),
            limits=httpx2.Limits(max_keepalive_connections=0),
            event_hooks={"response": [noted]},
        )
        async with connected_to(f"{workers.url}/mcp", mode, http=http) as client:
            capabilities = client.server_capabilities
            assert LATE not in tools_by_name(await client.list_tools())
            calls = [await client.call_tool("iris", {"payload": IRIS_ROWS[:1]}) for _ in range(12)]
            return bool(capabilities.tools and capabilities.tools.list_changed), calls

    told, calls = run(used)
    assert told == (mode == "auto")  # the 2026-07-28 era tells through its listeners, served by any worker
    assert all(call.structured_content == {"predictions": [0], "model_name": "iris", "model_version": "1"}
               for call in calls)  # fmt: skip
    assert len(answered_by) == 2, answered_by


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = serve(tmp_path_factory.mktemp("mcp-workers"), "--workers", "2", "--load-models", LOADED)
    yield running
    running.stop()


def test_the_pages_client_example_prints_what_it_shows(example_server: Server, tmp_path: Path) -> None:
    """The SDK example of ``llm/tools.md``, run as written against the example server (its port changed): each
    ``print(...)  # RESULT`` prints ``RESULT``."""
    script = block("python", "from mcp import Client", page("llm/tools.md"))
    shown = [line.partition("  # ")[2] for line in script.splitlines() if line.strip().startswith("print(")]
    address = example_server.url.removeprefix("http://")
    (tmp_path / "example.py").write_text(script.replace("localhost:8000", address))
    ran = subprocess.run([sys.executable, str(tmp_path / "example.py")], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == shown and len(shown) == 3


def test_the_pages_settings_hide_a_model(tmp_path: Path) -> None:
    (tmp_path / "stevedore.toml").write_text(block("toml", "mcp = false", page("llm/tools.md")))
    settings = Settings.load({}, config=str(tmp_path / "stevedore.toml"))
    assert not settings.is_tool("iris-proba") and settings.is_tool("iris")
