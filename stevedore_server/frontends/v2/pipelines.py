"""Pipelines over the Open Inference Protocol, for both transports (knows neither HTTP nor gRPC): a pipeline
whose first and last models have tensor signatures is inferred under its own name, its request decoded with the
first model's inputs and its answer encoded with the last model's outputs, named as the pipeline's.

A name is a pipeline's only where no model has it (``core.pipelines`` refuses a pipeline of a model's name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stevedore_server.base.errors import BadRequest
from stevedore_server.core.inference import Answer
from stevedore_server.core.server import ModelServer
from stevedore_server.core.serving import ServingModel
from stevedore_server.core.signature import Signature

from .codec import decode_inputs, input_names, requested_outputs, split_body

#: The version a pipeline's answer gives (a pipeline has none).
NO_VERSION = ""


def names_pipeline(server: ModelServer, name: str, version: str | None) -> bool:
    """Whether an infer request of ``name`` (and ``version``) is a pipeline's."""
    return not version and name in server.pipelines.entries


async def tensor_ends(server: ModelServer, name: str) -> tuple[ServingModel, ServingModel]:
    """The ready pipeline's first and last models; BadRequest where they do not both have tensors."""
    pipelines = server.pipelines
    ends = pipelines.tensor_ends(await pipelines.ready(name))
    if ends is None:
        raise BadRequest(
            f"pipeline {name!r} has no V2 interface: its first and last models need tensors (its last step a "
            "hard one of a sequence)"
        )
    first, last = (server.registry.get(ref.name, ref.version) for ref in ends)
    return first, last


def signature(model: ServingModel) -> Signature:
    if model.signature is None:  # tensor_ends checked it; this keeps the type checker sure of it
        raise BadRequest(f"model {model.name!r} has no V2 interface")
    return model.signature


def pipeline_input(arrays: dict[str, np.ndarray[Any, Any]], first: Signature) -> Any:
    """The decoded tensors as the pipeline's JSON request: the one input's lists, or lists by input name."""
    names = [spec.name for spec in first.inputs]
    if len(names) == 1:
        return arrays[names[0]].tolist()
    return {name: arrays[name].tolist() for name in names}


def pipeline_answer(last: ServingModel, predictions: Any) -> Answer:
    """The pipeline's predictions as its last model's answer, to encode with its outputs."""
    return Answer(last, predictions)


@dataclass(frozen=True)
class Decoded:
    """A pipeline's V2 REST request: its JSON header, its input as the pipeline's JSON request, the outputs it
    selects of the last model, and the name it gave the first model's only input."""

    header: dict[str, Any]
    value: Any
    selected: Any
    renamed: str | None


def decode(first: Signature, last: Signature, body: bytes, declared: str | None, max_depth: int) -> Decoded:
    """A V2 REST body (``declared``: its JSON header's length, binary tensors after it) as a pipeline's request;
    a front end runs it off the event loop for a large body, as a model's infer does."""
    header, binary = split_body(body, declared, max_depth)
    renamed = first.renamed_input(input_names(header)) if len(first.inputs) == 1 else None
    value = pipeline_input(decode_inputs(header, binary, first, renamed), first)
    return Decoded(header, value, requested_outputs(header, last), renamed)
