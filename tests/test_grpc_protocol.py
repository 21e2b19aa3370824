"""The gRPC definition (``inference.proto``): compiled as committed, on Triton's wire format, decoded with the
same checks as REST."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import descriptor_pb2
from tritonclient.grpc import service_pb2 as triton

from stevedore_server.base.errors import BadRequest
from stevedore_server.core.signature import Signature
from stevedore_server.core.tensors import TensorSpec
from stevedore_server.frontends.v2 import protocol
from stevedore_server.frontends.v2.grpc_codec import decode_inputs

REPO = Path(__file__).resolve().parents[1]
PROTO = "stevedore_server/frontends/v2/inference.proto"


def test_the_compiled_definition_is_current(tmp_path: Path) -> None:
    """``make proto`` was run after the last change to ``inference.proto``."""
    out = tmp_path / "inference.binpb"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", str(REPO), f"--descriptor_set_out={out}", PROTO],
        check=True,
        cwd=REPO,
    )
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    assert fresh == descriptor_pb2.FileDescriptorSet.FromString(protocol.COMPILED), "run `make proto`"


def fields(descriptor: Any) -> dict[str, tuple[int, int, bool]]:
    return {f.name: (f.number, f.type, f.is_repeated) for f in descriptor.fields}


def messages(descriptor: Any) -> list[Any]:
    found = [descriptor]
    for nested in descriptor.nested_types:
        found += messages(nested)
    return found


def test_every_message_is_on_tritons_wire_format() -> None:
    """Each message has Triton's name, and each field Triton's number and type: tritonclient.grpc talks to us."""
    ours = protocol.POOL.FindFileByName(PROTO)
    checked = 0
    for top in ours.message_types_by_name.values():
        for message in messages(top):
            theirs = triton.DESCRIPTOR.pool.FindMessageTypeByName(message.full_name)
            mine = fields(message)
            assert mine == {name: fields(theirs)[name] for name in mine}, message.full_name
            checked += 1
    assert checked > 25


def test_every_rpc_is_tritons() -> None:
    service = protocol.POOL.FindServiceByName(protocol.SERVICE)
    theirs = triton.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert len(service.methods) == 11
    for method in service.methods:
        other = theirs.methods_by_name[method.name]
        assert (method.input_type.full_name, method.output_type.full_name) == (
            other.input_type.full_name,
            other.output_type.full_name,
        )


SIGNATURE = Signature(
    inputs=(TensorSpec("small", "INT8", (-1,)), TensorSpec("half", "FP16", (-1,))),
    outputs=(TensorSpec("out", "FP32", (-1,)),),
)


def request(**inputs: Any) -> Any:
    message = protocol.ModelInferRequest(model_name="m")
    for name, (datatype, values, field) in inputs.items():
        tensor = message.inputs.add(name=name, datatype=datatype, shape=[len(values)])
        if field == "raw":
            message.raw_input_contents.append(values.tobytes())
        else:
            getattr(tensor.contents, field).extend(values)
    return message


def test_raw_contents_decode_every_datatype_typed_contents_hold() -> None:
    arrays = decode_inputs(
        request(small=("INT8", np.array([1, -2], "<i1"), "raw"), half=("FP16", np.array([0.5, 2], "<f2"), "raw")),
        SIGNATURE,
    )
    assert arrays["small"].tolist() == [1, -2] and arrays["half"].dtype == np.float16


ONE_INPUT = Signature(inputs=(TensorSpec("small", "INT8", (-1,)),), outputs=SIGNATURE.outputs)


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (("small", "INT8", [1, 300], "int_contents"), "out of the range of INT8"),
        (("small", "INT8", [1], "int64_contents"), "INT8 elements go in contents.int_contents"),
        (("small", "FP16", [1.0], "fp32_contents"), "FP16 has no typed contents"),
        (("small", "INT32", [1, 300], "int_contents"), "out of the range of INT8"),
        (("small", "FP32", [1.5], "fp32_contents"), "not integers"),
        (("other", "INT8", [1], "int_contents"), "unknown input 'other'"),
    ],
)
def test_typed_contents_are_checked(tensor: tuple[str, str, list[Any], str], message: str) -> None:
    name, datatype, values, field = tensor
    with pytest.raises(BadRequest, match=message):
        decode_inputs(request(**{name: (datatype, values, field)}), ONE_INPUT)


def test_typed_contents_convert_where_every_value_fits() -> None:
    decoded = decode_inputs(request(small=("INT32", [1, -128], "int_contents")), ONE_INPUT)
    assert decoded["small"].dtype == np.int8 and decoded["small"].tolist() == [1, -128]


def test_raw_and_typed_contents_do_not_mix() -> None:
    message = request(small=("INT8", np.array([1], "<i1"), "raw"))
    message.inputs[0].contents.int_contents.append(1)
    with pytest.raises(BadRequest, match="contents as well as raw_input_contents"):
        decode_inputs(message, SIGNATURE)
    message = request(small=("INT8", np.array([1], "<i1"), "raw"), half=("FP16", np.array([1], "<f2"), "raw"))
    del message.raw_input_contents[1]
    with pytest.raises(BadRequest, match="1 entries for 2 inputs"):
        decode_inputs(message, SIGNATURE)
