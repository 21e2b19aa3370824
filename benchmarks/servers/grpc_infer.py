"""The gRPC targets' requests, encoded once, and a real client that checks their answers.

Run in the benchmark's tools environment, which has tritonclient[grpc]: its
compiled ``service_pb2`` is Triton's definition of the Open Inference
Protocol's messages, the wire format every gRPC target serves.

    python grpc_infer.py encode ROWS_JSON DATATYPE CONTENTS OUT_DIR
        For each size in ROWS_JSON ({"small": rows, "batch": rows}) write
        OUT_DIR/SIZE.body: one ModelInferRequest for model "iris", input
        "input-0" of shape [rows, 4] in DATATYPE (FP64 or FP32), its values in
        raw_input_contents (CONTENTS "raw", little-endian) or in the input's
        typed contents (CONTENTS "typed"), framed as a gRPC message is on the
        wire: 1 byte 0 (not compressed), 4 bytes big-endian length, the
        message. h2load posts this file as it is.

    python grpc_infer.py check ADDRESS BODY_FILE...
        Send each file's message (the very bytes the load posts) to ADDRESS
        (127.0.0.1:PORT) as a unary ModelInfer call, and print one JSON line
        per file: {"predictions": [...], "contents": "raw" or "typed",
        "output": NAME, "datatype": DT, "answer_bytes": N} where N is the
        framed size of the answer (what h2load counts as data for it), or
        {"error": "STATUS: details"}.

No outputs are requested: each server answers with all its outputs (one: the
predicted class), whatever it names it.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import Any

import grpc
from tritonclient.grpc import service_pb2

METHOD = "/inference.GRPCInferenceService/ModelInfer"
MODEL, INPUT = "iris", "input-0"
#: struct format letter of one element, little-endian, per datatype.
STRUCT_CODES = {"FP64": "d", "FP32": "f", "INT64": "q", "INT32": "i", "INT16": "h", "INT8": "b",
                "UINT64": "Q", "UINT32": "I", "UINT16": "H", "UINT8": "B", "BOOL": "?"}  # fmt: skip
#: The field of InferTensorContents that holds a datatype's values.
TYPED_FIELDS = {"FP64": "fp64_contents", "FP32": "fp32_contents", "INT64": "int64_contents",
                "INT32": "int_contents", "INT16": "int_contents", "INT8": "int_contents",
                "UINT64": "uint64_contents", "UINT32": "uint_contents", "UINT16": "uint_contents",
                "UINT8": "uint_contents", "BOOL": "bool_contents"}  # fmt: skip
#: Never through a proxy (gRPC honours http_proxy by default); 1000-row answers and more fit.
CHANNEL_OPTIONS = [
    ("grpc.enable_http_proxy", 0),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]
TIMEOUT_S = 30.0


def frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: not compressed, then its length, big-endian."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def unframe(body: bytes) -> bytes:
    compressed, length = struct.unpack(">BI", body[:5])
    if compressed or len(body) != 5 + length:
        raise SystemExit(f"not one uncompressed gRPC message: flag {compressed}, length {length}, {len(body)} bytes")
    return body[5:]


def request(rows: list[list[float]], datatype: str, contents: str) -> bytes:
    flat = [value for row in rows for value in row]
    tensor = service_pb2.ModelInferRequest.InferInputTensor(name=INPUT, datatype=datatype, shape=[len(rows), 4])
    message = service_pb2.ModelInferRequest(model_name=MODEL, inputs=[tensor])
    if contents == "raw":
        message.raw_input_contents.append(struct.pack(f"<{len(flat)}{STRUCT_CODES[datatype]}", *flat))
    elif contents == "typed":
        getattr(message.inputs[0].contents, TYPED_FIELDS[datatype]).extend(flat)
    else:
        raise SystemExit(f"CONTENTS must be raw or typed, not {contents!r}")
    encoded: bytes = message.SerializeToString()
    return encoded


def encode(rows_json: Path, datatype: str, contents: str, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for size, rows in json.loads(rows_json.read_text()).items():
        (out_dir / f"{size}.body").write_bytes(frame(request(rows, datatype, contents)))


def predictions(answer: Any) -> dict[str, Any]:
    """The first output's values, from raw_output_contents or from its typed contents."""
    if not answer.outputs:
        return {"error": f"an answer without outputs: {str(answer)[:200]}"}
    output = answer.outputs[0]
    found = {"output": output.name, "datatype": output.datatype}
    if answer.raw_output_contents:
        code = STRUCT_CODES.get(output.datatype)
        raw = answer.raw_output_contents[0]
        if code is None or len(raw) % struct.calcsize(code):
            return found | {"error": f"cannot read {len(raw)} raw bytes as {output.datatype}"}
        values = list(struct.unpack(f"<{len(raw) // struct.calcsize(code)}{code}", raw))
        return found | {"contents": "raw", "predictions": values}
    field = TYPED_FIELDS.get(output.datatype)
    if field is None:
        return found | {"error": f"no typed contents for {output.datatype}"}
    return found | {"contents": "typed", "predictions": list(getattr(output.contents, field))}


def check(address: str, bodies: list[Path]) -> None:
    host = address.rsplit(":", 1)[0]
    if host not in ("127.0.0.1", "localhost", "[::1]"):
        raise SystemExit(f"refusing {address!r}: the benchmark only talks to 127.0.0.1")
    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        # No serializers: the call sends these bytes and hands back the answer's bytes as they came.
        infer = channel.unary_unary(METHOD)
        for body in bodies:
            try:
                raw = infer(unframe(body.read_bytes()), timeout=TIMEOUT_S, wait_for_ready=True)
            except grpc.RpcError as error:
                print(json.dumps({"error": f"{error.code().name}: {error.details()}"}))
                continue
            answer = service_pb2.ModelInferResponse.FromString(raw)
            print(json.dumps(predictions(answer) | {"answer_bytes": len(frame(raw))}))


def main() -> None:
    command, *args = sys.argv[1:] or [""]
    if command == "encode" and len(args) == 4:
        encode(Path(args[0]), args[1], args[2], Path(args[3]))
    elif command == "check" and len(args) >= 2:
        check(args[0], [Path(arg) for arg in args[1:]])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
