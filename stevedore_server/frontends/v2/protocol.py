"""The gRPC messages of the Open Inference Protocol, from ``inference.proto``, in a descriptor pool of their own.

``make proto`` compiles ``inference.proto`` into ``inference.binpb`` (a
serialized ``FileDescriptorSet``); this module builds the message classes from
it. They live in ``POOL``, not in protobuf's default pool, because the
definitions share their names with Triton's (``inference.ModelInferRequest``
and so on: the service's path on the wire depends on them), and the default
pool refuses a second definition of a name: a process that imports
``tritonclient.grpc`` (a plugin's tests, say) can import this module too.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "inference"
SERVICE = f"{PACKAGE}.GRPCInferenceService"


#: ``inference.proto`` compiled: a serialized ``FileDescriptorSet``.
COMPILED = resources.files(__package__).joinpath("inference.binpb").read_bytes()


def load_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(COMPILED).file:
        pool.Add(file)
    return pool


POOL = load_pool()


def message(name: str) -> Any:
    """The class of the message ``name`` (``ModelInferRequest``, ``ModelMetadataResponse.TensorMetadata``)."""
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))


ServerLiveRequest = message("ServerLiveRequest")
ServerLiveResponse = message("ServerLiveResponse")
ServerReadyRequest = message("ServerReadyRequest")
ServerReadyResponse = message("ServerReadyResponse")
ModelReadyRequest = message("ModelReadyRequest")
ModelReadyResponse = message("ModelReadyResponse")
ServerMetadataRequest = message("ServerMetadataRequest")
ServerMetadataResponse = message("ServerMetadataResponse")
ModelMetadataRequest = message("ModelMetadataRequest")
ModelMetadataResponse = message("ModelMetadataResponse")
TensorMetadata = message("ModelMetadataResponse.TensorMetadata")
InferTensorContents = message("InferTensorContents")
ModelInferRequest = message("ModelInferRequest")
ModelInferResponse = message("ModelInferResponse")
RepositoryIndexRequest = message("RepositoryIndexRequest")
RepositoryIndexResponse = message("RepositoryIndexResponse")
ModelIndex = message("RepositoryIndexResponse.ModelIndex")
RepositoryModelLoadRequest = message("RepositoryModelLoadRequest")
RepositoryModelLoadResponse = message("RepositoryModelLoadResponse")
RepositoryModelUnloadRequest = message("RepositoryModelUnloadRequest")
RepositoryModelUnloadResponse = message("RepositoryModelUnloadResponse")
ModelStatisticsRequest = message("ModelStatisticsRequest")
ModelStatisticsResponse = message("ModelStatisticsResponse")
ModelConfigRequest = message("ModelConfigRequest")
ModelConfigResponse = message("ModelConfigResponse")
