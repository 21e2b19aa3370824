"""The mlserver runtime's pieces: model-settings metadata as tensors, schema and fixture; payloads as MLServer's
requests and its responses as results. Marked ``mlserver``: they import MLServer (``make test-mlserver``)."""

from __future__ import annotations

import datetime

import numpy as np
import pytest

pytestmark = pytest.mark.mlserver


def test_metadata_gives_tensors_a_schema_and_a_fixture_the_schema_takes() -> None:
    import jsonschema
    from stevedore_runtime_mlserver.metadata import fixture_of, schema_of, tensors

    declared = tensors(
        [
            {"name": "x", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "t", "datatype": "BYTES", "shape": [-1, 1], "parameters": {"content_type": "str"}},
        ],
        "inputs",
    )
    assert declared is not None
    assert declared[1] == {"name": "t", "datatype": "BYTES", "shape": [-1, 1], "content_type": "str"}
    fixture = fixture_of(declared)
    assert fixture == {"x": [[0.0, 0.0, 0.0]], "t": [[""]]}
    jsonschema.validate(fixture, schema_of(declared))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"x": [[0.0, 0.0]], "t": [[""]]}, schema_of(declared))


def test_payloads_become_the_requests_mlservers_codecs_make() -> None:
    from mlserver.codecs import NumpyCodec, StringCodec
    from stevedore_runtime_mlserver.messages import request_of

    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}]
    request = request_of([[1, 2]], inputs, None)
    assert request.inputs[0] == NumpyCodec.encode_input("x", np.array([[1, 2]], dtype=np.float32))
    text = request_of(np.array([["a"]], dtype=object), [{"name": "t", "datatype": "BYTES", "shape": [-1, 1]}], "str")
    assert StringCodec.decode_input(text.inputs[0]) == ["a"]
    stamp = datetime.datetime(2025, 6, 1, 12, 0)
    dated = request_of(np.array([[stamp]], dtype=object), [{"name": "d", "datatype": "BYTES", "shape": [-1, 1]}], None)
    assert (dated.inputs[0].data.root, dated.inputs[0].parameters.content_type) == (["2025-06-01T12:00:00"], "datetime")
