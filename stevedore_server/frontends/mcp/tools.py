"""The tools of the MCP server: each ready model (its default version, by name), traffic name and pipeline that
``settings.is_tool`` lets through, worked out from the server as it is now; and a tool call.

A tool's ``inputSchema`` is its predict schema where that is an object schema; any other schema (a table of rows,
a string) is wrapped, as MCP wants an object: ``{"type": "object", "properties": {"payload": SCHEMA},
"required": ["payload"]}``, the call's ``payload`` then being the predict body (the schema's ``$schema`` and
``$defs`` move to the wrapper's root, so its references still resolve). The predict fixture is the example (the
schema's ``examples`` and the description). ``outputSchema`` describes ``{"predictions", "model_name",
"model_version"}`` where the model declares an ``output_schema``.

A call runs ``Inference.call`` (a pipeline: ``Pipelines.predict``), so validation, admission, batching, traffic
routing and metrics apply as to any predict. Its answer is ``structuredContent`` ``{"predictions", "model_name",
"model_version"}`` and the same JSON as text; a client's error (invalid input, a full model) or a model's failure
is a tool error (``isError``) saying what went wrong, never a traceback; an unknown tool is the protocol's error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

import mcp_types as types
import orjson
from mcp.shared.exceptions import MCPError

from stevedore_server.base.errors import BadRequest, ClientError, ModelFailure, ReportedFailure
from stevedore_server.base.logs import failure_answer, log_error
from stevedore_server.base.serialization import dumps_result
from stevedore_server.base.validation import SchemaValidator
from stevedore_server.core.inference import Action, JSONValue, ModelRef
from stevedore_server.core.pipelines import READY
from stevedore_server.core.server import ModelServer
from stevedore_server.core.serving import ServingModel
from stevedore_server.predictor import Predictor

logger = logging.getLogger("stevedore.mcp")

MODEL, TRAFFIC, PIPELINE = "model", "traffic", "pipeline"
#: The argument a wrapped schema's payload goes in.
PAYLOAD = "payload"
#: Keywords that belong at a schema document's root: moved there when the schema is wrapped.
ROOT_KEYWORDS = ("$schema", "$id", "$defs", "definitions")
#: Bytes of JSON an example may take in a tool's listing: a model's fixture of a thousand rows is cut to its first.
EXAMPLE_BYTES = 2048


@dataclass(frozen=True)
class Target:
    """What a tool runs: a model's default version, a traffic name (its representative variant's version), or a
    pipeline. Equal targets list equal tools: the list changed when the targets did."""

    kind: str
    name: str
    version: str | None = None


#: What lazy models not loaded yet declare (``declared``), read once for each predictor.
DECLARED: WeakKeyDictionary[Predictor, tuple[dict[str, Any], Any, dict[str, Any] | None]] = WeakKeyDictionary()


def declared(model: ServingModel) -> tuple[dict[str, Any], Any, dict[str, Any] | None]:
    """A model's predict schema, predict fixture and output schema: as its loading checked them, or, for a lazy
    model not loaded yet, as its predictor declares them (reading package data, not loading the model)."""
    loaded = model.loaded
    if loaded.predict_validator is not None:
        return loaded.predict_validator.schema, loaded.predict_fixture, loaded.output_schema
    found = DECLARED.get(loaded.predictor)
    if found is None:
        predictor = loaded.predictor
        schema = predictor.resolved_schema("predict")
        if schema is None:
            raise ValueError(f"model {model.name!r} declares no predict schema")
        found = schema, predictor.resolved_fixture("predict"), predictor.resolved_schema("output")
        DECLARED[predictor] = found
    return found


def targets(server: ModelServer) -> tuple[Target, ...]:
    """Every tool's target now, in the catalogue's order: models, then traffic names, then pipelines."""
    return tuple(model_targets(server)) + tuple(traffic_targets(server)) + tuple(pipeline_targets(server))


def model_targets(server: ModelServer) -> Iterator[Target]:
    for model in server.registry.defaults():
        if model.servable and server.settings.is_tool(model.name):
            yield Target(MODEL, model.name, model.version)


def traffic_targets(server: ModelServer) -> Iterator[Target]:
    for name in sorted(server.traffic.routed):
        if server.settings.is_tool(name):
            yield Target(TRAFFIC, name, server.traffic.representative(name).version)


def pipeline_targets(server: ModelServer) -> Iterator[Target]:
    for name, entry in server.pipelines.entries.items():
        if entry.state == READY and server.settings.is_tool(name):
            yield Target(PIPELINE, name)


def find(server: ModelServer, name: str) -> Target:
    """The target of the tool ``name``: the protocol's invalid-params error for a name that is no tool now."""
    for target in targets(server):
        if target.name == name:
            return target
    raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {name}")


# -- listing ------------------------------------------------------------------------------------------------------


def listing(server: ModelServer) -> list[types.Tool]:
    """Every tool, described (a tool whose description fails is left out, logged: the others are listed)."""
    tools = []
    for target in targets(server):
        try:
            tools.append(tool_of(server, target))
        except Exception as error:  # one odd schema or fixture must not take the whole list down
            log_error(logger, f"the {target.kind} {target.name!r} is left out of the MCP tools", error)
    return tools


def tool_of(server: ModelServer, target: Target) -> types.Tool:
    schema, example, description, output = described(server, target)
    input_schema = tool_input_schema(schema)
    wrapped = is_wrapped(schema)
    shown = shown_example(example, server, target)
    if shown is not None:
        arguments = {PAYLOAD: shown} if wrapped else shown
        input_schema["examples"] = [arguments]
        description += "\n\nExample arguments: " + orjson.dumps(arguments).decode()
    output_schema = None if output is None else tool_output_schema(output)
    return types.Tool(name=target.name, description=description, input_schema=input_schema, output_schema=output_schema)


def tool_output_schema(output: dict[str, Any]) -> dict[str, Any]:
    """The schema of a call's ``structuredContent``, its predictions those of the model's ``output_schema``."""
    return {
        "type": "object",
        "properties": {
            "predictions": output,
            "model_name": {"type": "string"},
            "model_version": {"type": ["string", "null"]},
        },
        "required": ["predictions", "model_name"],
    }


def described(server: ModelServer, target: Target) -> tuple[dict[str, Any], Any, str, dict[str, Any] | None]:
    """A target's predict schema, predict fixture, description and output schema (None if undeclared)."""
    if target.kind == PIPELINE:
        entry = server.pipelines.entry(target.name)
        models = ", ".join(f"{model}:{version}" if version else model for model, version in entry.definition.models())
        generated = f"Pipeline {target.name!r} of the models {models}"
        description = entry.definition.description or generated
        schema = server.pipelines.predict_schema(target.name)
        return schema, server.pipelines.fixture(entry.definition), description, None
    model = model_of(server, target)
    if target.kind == TRAFFIC:
        traffic = server.traffic.entries[target.name].traffic
        variants = ", ".join(str(variant.target) for variant in traffic.split)
        description = traffic.description or f"Traffic name {target.name!r}: each call is answered by one of {variants}"
    else:
        description = model.predictor.description or f"Model {model.name!r} version {model.version!r}"
    description += f" (served by stevedore-server; answers the predictions of {model.name} {model.version})"
    schema, fixture, output = declared(model)
    return schema, fixture, description, output


def is_wrapped(schema: Mapping[str, Any]) -> bool:
    """Whether the predict schema is wrapped in an object (anything but an object schema is)."""
    return schema.get("type") != "object"


def tool_input_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The predict schema as a tool's input schema: itself if an object schema, else wrapped (see the module)."""
    if not is_wrapped(schema):
        return dict(schema)
    inner = {key: value for key, value in schema.items() if key not in ROOT_KEYWORDS}
    wrapper: dict[str, Any] = {key: schema[key] for key in ROOT_KEYWORDS if key in schema and key != "$id"}
    wrapper.update({"type": "object", "properties": {PAYLOAD: inner}, "required": [PAYLOAD]})
    wrapper["additionalProperties"] = False
    return wrapper


def shown_example(fixture: Any, server: ModelServer, target: Target) -> Any:
    """The fixture if its JSON is short, else its first row where that is a valid payload too, else None."""
    if fixture is None:
        return None
    if len(orjson.dumps(fixture, option=orjson.OPT_SERIALIZE_NUMPY)) <= EXAMPLE_BYTES:
        return fixture
    if isinstance(fixture, list) and fixture:
        first = fixture[:1]
        fits = len(orjson.dumps(first, option=orjson.OPT_SERIALIZE_NUMPY)) <= EXAMPLE_BYTES
        if fits and validator_of(server, target).is_valid(first):
            return first
    return None


def validator_of(server: ModelServer, target: Target) -> SchemaValidator:
    """The validator of the target's predict body: the model's own where loading made one."""
    validator = None if target.kind == PIPELINE else model_of(server, target).loaded.predict_validator
    return validator if validator is not None else SchemaValidator(predict_schema(server, target))


def model_of(server: ModelServer, target: Target) -> ServingModel:
    """The model a model's or traffic name's tool stands for (a traffic name's representative variant)."""
    ref = server.inference.standing_for(ModelRef(target.name))
    return server.registry.get(ref.name, ref.version)


# -- calling ------------------------------------------------------------------------------------------------------


async def call(server: ModelServer, name: str, arguments: Mapping[str, Any] | None) -> types.CallToolResult:
    """Run the tool ``name`` on ``arguments``: its answer, or a tool error saying why there is none."""
    target = find(server, name)
    try:
        payload = payload_of(server, target, dict(arguments or {}))
        answer = await run(server, target, payload)
    except ClientError as error:  # the caller's to fix (invalid input) or to retry (overloaded, not ready)
        logger.info("MCP tool %s refused: %s", name, error.summary())
        return failed(error.summary())
    except ReportedFailure as error:  # logged by the replica that ran the model, under this id
        return failed(failure_answer(str(error), error.error_id)["error"])
    except ModelFailure as error:  # the client learns which model failed, not how: the log has its traceback
        return failed(failure_answer(str(error), log_error(logger, str(error), error.error))["error"])
    except Exception as error:  # the last resort of this protocol's edge: logged with an id, never a traceback
        error_id = log_error(logger, f"MCP tool {name} failed", error)
        return failed(failure_answer(f"tool {name!r} failed", error_id)["error"])
    text = orjson.dumps(answer).decode()
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], structured_content=answer)


def payload_of(server: ModelServer, target: Target, arguments: dict[str, Any]) -> Any:
    """The predict body of a call: the arguments themselves, or a wrapped schema's ``payload`` alone."""
    schema = predict_schema(server, target)
    if not is_wrapped(schema):
        return arguments
    if PAYLOAD not in arguments:
        raise BadRequest(f"the arguments of {target.name!r} must hold the predict body as {PAYLOAD!r}")
    unknown = sorted(set(arguments) - {PAYLOAD})
    if unknown:
        raise BadRequest(f"the arguments of {target.name!r} hold only {PAYLOAD!r}, not {', '.join(unknown)}")
    return arguments[PAYLOAD]


def predict_schema(server: ModelServer, target: Target) -> dict[str, Any]:
    if target.kind == PIPELINE:
        return server.pipelines.predict_schema(target.name)
    return declared(model_of(server, target))[0]


async def run(server: ModelServer, target: Target, payload: Any) -> dict[str, Any]:
    """The predictions of ``target`` on ``payload``, with the model (or pipeline) that answered, as JSON values."""
    if target.kind == PIPELINE:
        answered = await server.pipelines.predict(target.name, payload)
        return {"predictions": as_json(answered.predictions, target.name, None), "model_name": target.name}
    answer = await server.inference.call(ModelRef(target.name), Action.PREDICT, JSONValue(payload))
    model = answer.model
    predictions = as_json(answer.result, model.name, model.version)
    return {"predictions": predictions, "model_name": model.name, "model_version": model.version}


def as_json(result: Any, model: str, version: str | None) -> Any:
    """A model's result as plain JSON values; output JSON cannot carry is the model's failure."""
    try:
        return orjson.loads(dumps_result(result))
    except (TypeError, ValueError) as error:
        raise ModelFailure(model, version or "", "predict", error) from error


def failed(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)
