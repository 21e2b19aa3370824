"""The gRPC targets' requests and answers, through ``servers/grpc_infer.py`` in the tools environment.

The harness itself is standard library only, and speaks no HTTP/2: the
ModelInferRequest is encoded once per target and size by tritonclient's
compiled messages (Triton's definition, the wire format every gRPC target
serves), and each check is a real gRPC call by a real client, sending the very
file that h2load posts and decoding the answer's raw or typed contents.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .fixtures import WrongAnswer, compare
from .load import RequestFiles
from .payloads import Request

SCRIPT = Path(__file__).resolve().parent.parent / "servers" / "grpc_infer.py"
METHOD = "/inference.GRPCInferenceService/ModelInfer"
#: What a gRPC client sends with every call (h2load adds :method POST and content-length).
HEADERS = {"content-type": "application/grpc", "te": "trailers"}
CHECK_TIMEOUT_S = 120


@dataclass(frozen=True)
class GrpcPayload:
    """A ModelInferRequest of the rows: FP64 or FP32, in raw_input_contents ("raw") or typed contents ("typed")."""

    precision: str = "FP64"
    contents: str = "raw"


def encode(
    tools_python: Path, rows_file: Path, payload: GrpcPayload, directory: Path, log: Path
) -> dict[str, RequestFiles]:
    """size -> the framed request for h2load (``SIZE.body``) and its headers (``SIZE.headers``)."""
    argv = [str(tools_python), str(SCRIPT), "encode", str(rows_file), payload.precision, payload.contents]
    argv.append(str(directory))
    with log.open("a") as output:
        output.write(f"$ {' '.join(argv)}\n")
        output.flush()
        done = subprocess.run(argv, stdout=output, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise OSError(f"could not encode the gRPC requests (log: {log})")
    sizes = json.loads(rows_file.read_text())
    return {
        size: RequestFiles.write(Request((directory / f"{size}.body").read_bytes(), dict(HEADERS)), directory, size)
        for size in sizes
    }


def call(tools_python: Path, address: str, bodies: list[Path]) -> list[dict[str, Any]]:
    """One ModelInfer call per file, in one client process: what each answer held (or its error)."""
    argv = [str(tools_python), str(SCRIPT), "check", address, *map(str, bodies)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise WrongAnswer(f"the gRPC client got no answer within {CHECK_TIMEOUT_S} s") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or len(lines) != len(bodies):
        raise WrongAnswer(f"the gRPC client failed: {(done.stderr.strip() or done.stdout.strip())[-300:]}")
    return [json.loads(line) for line in lines]


def check(
    tools_python: Path, address: str, requests: dict[str, RequestFiles], expected: dict[str, list[Any]]
) -> dict[str, tuple[int, str]]:
    """Each size's answer must hold exactly the model's predictions; raises WrongAnswer.

    Returns size -> (the framed answer's size in bytes, a line for the log):
    h2load counts the answers' bytes, and a gRPC error has none.
    """
    sizes = list(requests)
    answers = call(tools_python, address, [requests[size].body for size in sizes])
    checked = {}
    for size, answer in zip(sizes, answers, strict=True):
        if "error" in answer:
            raise WrongAnswer(f"{size} request: {answer['error']}")
        message = compare(answer["predictions"], expected[size])
        where = f"{answer['output']} {answer['datatype']}, {answer['contents']} contents"
        checked[size] = (int(answer["answer_bytes"]), f"{message} ({where}, {answer['answer_bytes']} bytes)")
    return checked
