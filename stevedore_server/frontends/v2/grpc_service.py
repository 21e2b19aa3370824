"""The Open Inference Protocol over gRPC: the ``inference.GRPCInferenceService`` RPCs.

Each handler decodes its request, makes the same call as the REST route of
the same name (``Inference.call`` for ModelInfer, the ``Repository`` for the
repository RPCs) and encodes the answer; a typed error of ``base.errors``
propagates to ``grpc_server``, which turns it into a status code. Wire
compatibility with Triton's service (``tritonclient.grpc``) is described in
``inference.proto``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from anyio import to_thread
from google.protobuf import json_format

from stevedore_server.base import tracing
from stevedore_server.base.errors import BadRequest
from stevedore_server.base.health import HealthChecks
from stevedore_server.base.lifecycle import Lifecycle
from stevedore_server.base.version import __version__
from stevedore_server.core import deadlines
from stevedore_server.core.inference import OFF_LOOP_BYTES, Action, ModelRef, Tensors
from stevedore_server.core.repository import ModelRepository
from stevedore_server.core.server import ModelServer
from stevedore_server.core.statistics import RequestTimer, input_since, output_since
from stevedore_server.frontends.auth import ADMIN, INFER
from stevedore_server.frontends.payload_notes import note_grpc_request

from . import pipelines
from . import protocol as pb
from .codec import EXTENSIONS
from .extensions import config_body, models_for_statistics, statistics_body
from .grpc_codec import content_plan, decode_inputs, encode_response, renamed_input, requested_outputs
from .payload_views import grpc_request, grpc_response

#: A handler: request message to (an awaitable of) the response message, or to an async iterator of them.
Handler = Callable[[Any], Any]


@dataclass(frozen=True)
class Method:
    """One RPC: its handler, the request type it decodes, whether it is open without an API key (the probes,
    as their REST routes), and the API key scope it needs otherwise (as its REST route)."""

    handler: Handler
    request_type: Any
    open: bool = False
    needs: str = INFER


class InferenceService:
    """The RPCs over one process's server, repository and lifecycle (the app's lifespan state)."""

    def __init__(
        self,
        server: ModelServer,
        repository: ModelRepository,
        lifecycle: Lifecycle,
        health: HealthChecks,
    ) -> None:
        self.server = server
        self.repository = repository
        self.lifecycle = lifecycle
        self.health = health

    def methods(self) -> dict[str, Method]:
        """The service's RPCs by name, ModelInfer first as the hot one."""
        return {
            "ModelInfer": Method(self.model_infer, pb.ModelInferRequest),
            "ServerLive": Method(self.server_live, pb.ServerLiveRequest, open=True),
            "ServerReady": Method(self.server_ready, pb.ServerReadyRequest, open=True),
            "ModelReady": Method(self.model_ready, pb.ModelReadyRequest, open=True),
            "ServerMetadata": Method(self.server_metadata, pb.ServerMetadataRequest),
            "ModelMetadata": Method(self.model_metadata, pb.ModelMetadataRequest),
            "ModelStatistics": Method(self.model_statistics, pb.ModelStatisticsRequest),
            "ModelConfig": Method(self.model_config, pb.ModelConfigRequest),
            "RepositoryIndex": Method(self.repository_index, pb.RepositoryIndexRequest, needs=ADMIN),
            "RepositoryModelLoad": Method(self.repository_load, pb.RepositoryModelLoadRequest, needs=ADMIN),
            "RepositoryModelUnload": Method(self.repository_unload, pb.RepositoryModelUnloadRequest, needs=ADMIN),
        }

    # -- health and metadata ------------------------------------------------------

    async def server_live(self, request: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any) -> Any:
        problems = await self.health.problems()
        return pb.ServerReadyResponse(ready=not problems)

    async def model_ready(self, request: Any) -> Any:
        ref = self.server.inference.standing_for(ModelRef(request.name, request.version or None))
        model = self.server.registry.get(ref.name, ref.version)  # a traffic name: ready as its heaviest variant
        return pb.ModelReadyResponse(ready=model.ready)

    async def server_metadata(self, request: Any) -> Any:
        return pb.ServerMetadataResponse(name="stevedore-server", version=__version__, extensions=EXTENSIONS)

    async def model_metadata(self, request: Any) -> Any:
        model, signature = await self.server.inference.resolve_tensors(ModelRef(request.name, request.version or None))
        tensor = pb.TensorMetadata
        return pb.ModelMetadataResponse(
            name=model.name,
            versions=[other.version for other in self.server.registry.versions_of(model.name)],
            platform="stevedore",
            inputs=[tensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in signature.inputs],
            outputs=[tensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in signature.outputs],
        )

    # -- the statistics and model configuration extensions ------------------------

    async def model_statistics(self, request: Any) -> Any:
        """Triton's statistics of every served model (no name), of one model's versions, or of one version."""
        models = models_for_statistics(self.server.inference, self.server.registry, request.name, request.version)
        return json_format.ParseDict(statistics_body(models), pb.ModelStatisticsResponse())

    async def model_config(self, request: Any) -> Any:
        model, signature = await self.server.inference.resolve_tensors(ModelRef(request.name, request.version or None))
        config = config_body(model, signature, self.server.settings)
        return json_format.ParseDict({"config": config}, pb.ModelConfigResponse())

    # -- infer ----------------------------------------------------------------------

    async def model_infer(self, request: Any) -> Any:
        """Decode the tensors, run the inference core, encode the selected outputs: timed for the statistics."""
        if pipelines.names_pipeline(self.server, request.model_name, request.model_version):
            return await self.pipeline_infer(request)
        with RequestTimer():
            return await self.timed_infer(request)

    async def pipeline_infer(self, request: Any) -> Any:
        """A pipeline's infer (``v2.pipelines``): each of its steps is timed as its model's own request."""
        first, last = await pipelines.tensor_ends(self.server, request.model_name)
        signature = pipelines.signature(first)
        renamed = renamed_input(request, signature)

        def decoded() -> Any:  # the tensors as the pipeline's JSON request
            return pipelines.pipeline_input(decode_inputs(request, signature, renamed), signature)

        size = request.ByteSize()  # a large request is decoded off the event loop, as a model's infer is
        value = await to_thread.run_sync(decoded) if size > OFF_LOOP_BYTES else decoded()
        selected = requested_outputs(request, pipelines.signature(last))
        bound_by_parameter(request)
        answer = await self.server.pipelines.predict(request.model_name, value, size)
        response = encode_response(pipelines.pipeline_answer(last, answer.predictions), request, selected, renamed)
        response.model_name, response.model_version = request.model_name, pipelines.NO_VERSION
        return response

    async def timed_infer(self, request: Any) -> Any:
        ref = ModelRef(request.model_name, request.model_version or None)
        model = await self.server.inference.loaded(ref)
        signature = model.signature
        if signature is None:
            raise BadRequest(
                f"model {model.name!r} version {model.version!r} has no V2 interface: {model.no_tensor_reason}"
            )
        exchange = note_grpc_request(self.server, model, grpc_request, request)
        renamed = renamed_input(request, signature)
        decode = functools.partial(decode_inputs, request, signature, renamed)
        # A large request is decoded off the event loop, as large REST bodies are.
        large = (
            sum(len(raw) for raw in request.raw_input_contents) > OFF_LOOP_BYTES or request.ByteSize() > OFF_LOOP_BYTES
        )
        started = time.perf_counter_ns()
        with tracing.span("decode"):
            arrays = await to_thread.run_sync(decode) if large else decode()
            selected = requested_outputs(request, signature)
            content = content_plan(request, signature, renamed)
        input_since(started)
        bound_by_parameter(request)
        answer = await self.server.inference.call(ref, Action.PREDICT, Tensors(arrays, content, selected, renamed))
        started = time.perf_counter_ns()
        with tracing.span("encode"):
            response = encode_response(answer, request, selected, renamed)
        output_since(started)
        if exchange is not None:
            exchange.response = functools.partial(grpc_response, response)
            exchange.version = answer.model.version
        return response

    # -- the model repository extension ---------------------------------------------

    async def repository_index(self, request: Any) -> Any:
        entries = await self.repository.index(ready_only=request.ready)
        return pb.RepositoryIndexResponse(models=[pb.ModelIndex(**entry) for entry in entries])

    async def repository_load(self, request: Any) -> Any:
        """Load (or reload) a model from the installed plugins (Triton's clients may send a model config or files
        to upload: a plugin's model comes from its wheel, so those are refused)."""
        uploads = sorted(key for key in request.parameters if key == "config" or key.startswith("file:"))
        if uploads:
            raise BadRequest(
                f"models come from installed plugin wheels; parameters {', '.join(uploads)} cannot change them"
            )
        await self.repository.load(model_name(request))
        return pb.RepositoryModelLoadResponse()

    async def repository_unload(self, request: Any) -> Any:
        await self.repository.unload(model_name(request))
        return pb.RepositoryModelUnloadResponse()


def bound_by_parameter(request: Any) -> None:
    """The call's bound (set by ``grpc_context``) tightened by the request's ``timeout`` parameter (microseconds,
    as Triton's), if it has one: BadRequest unless it is a positive number."""
    bound = deadlines.current()
    if "timeout" not in request.parameters or bound is None:
        return
    parameter = request.parameters["timeout"]
    value = getattr(parameter, parameter.WhichOneof("parameter_choice") or "int64_param")
    seconds = deadlines.seconds_of(value, deadlines.TIMEOUT_PARAMETER, deadlines.MICROSECONDS)
    bound.tightened(seconds, deadlines.TIMEOUT_PARAMETER)


def model_name(request: Any) -> str:
    """The model a repository request names: Triton's field 2, or field 1 where KServe's definition puts it."""
    name: str = request.model_name or request.repository_name
    if not name:
        raise BadRequest("the request names no model")
    return name
