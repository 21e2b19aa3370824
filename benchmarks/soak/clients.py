"""One request of each kind the soak sends, each turned into an ``Outcome`` (never an exception): its answer
checked against what the model must answer, or the failure named.

HTTP requests go on a fresh connection each (``Connection: close``): a request can only fail when it was in
flight as a fault struck, never later on a kept-alive connection that a killed worker held, and the server
accepts and closes connections all along (its file descriptors must not leak).
"""

from __future__ import annotations

import json
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from .records import OK, Outcome

#: An iris row (setosa) and the class every model of the iris family answers for it.
ROW = [5.1, 3.5, 1.4, 0.2]
IRIS_CLASS = 0
#: ``spin``'s rows: iterations of its loop (a few milliseconds each).
SPIN_ROWS = [20000]
STREAM_ROWS = [3000, 3000, 3000]
#: Seconds a request may take before the client gives up (an inference's time-out is 20 s).
TIMEOUT = 30.0
#: Seconds a repository load or unload may take: it waits for every worker, a restarting one included.
REPOSITORY_TIMEOUT = 150.0


def spin_total(iterations: int) -> int:
    """What ``spin`` answers for a row (the test plugin's loop, written again here as the oracle)."""
    total = 0
    for step in range(iterations):
        total = (total + step * step) % 1_000_003
    return total


SPIN_TOTALS = {rows: spin_total(rows) for rows in {*SPIN_ROWS, *STREAM_ROWS}}


def http_client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=TIMEOUT, headers={"Connection": "close"})


def failed(response: httpx.Response) -> Outcome:
    """An answer that is not the expected status: its status, what it said, and its error id if any."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return Outcome(f"HTTP {response.status_code}", str(body.get("error", body)), body.get("error_id"))
    return Outcome(f"HTTP {response.status_code}", response.text[:300])


def transport(error: Exception) -> Outcome:
    return Outcome(f"transport {type(error).__name__}", str(error) or repr(error))


def checked(
    send: Callable[[], httpx.Response], check: Callable[[httpx.Response], bool], status: int | tuple[int, ...] = 200
) -> Outcome:
    """Send, then: ``OK`` if the status is ``status`` (or one of them) and ``check`` accepts the answer, else
    why not."""
    try:
        response = send()
    except httpx.TransportError as error:
        return transport(error)
    if response.status_code not in (status if isinstance(status, tuple) else (status,)):
        return failed(response)
    try:
        right = check(response)
    except (ValueError, KeyError, IndexError, TypeError) as error:
        return Outcome("wrong answer", f"{type(error).__name__}: {error}: {response.text[:300]}")
    return OK if right else Outcome("wrong answer", response.text[:300])


def iris_predict(client: httpx.Client) -> Outcome:
    return checked(lambda: client.post("/models/iris/predict", json=[ROW]),
                   lambda r: r.json()["predictions"] == [IRIS_CLASS])  # fmt: skip


def original_predict(client: httpx.Client) -> Outcome:
    return checked(lambda: client.post("/predict", json={"predictor": "iris", "payload": [ROW]}),
                   lambda r: r.json() == [IRIS_CLASS])  # fmt: skip


def v2_json(client: httpx.Client) -> Outcome:
    body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROW}]}
    return checked(lambda: client.post("/v2/models/iris/infer", json=body),
                   lambda r: r.json()["outputs"][0]["data"] == [IRIS_CLASS])  # fmt: skip


def v2_binary(client: httpx.Client) -> Outcome:
    """The binary tensor extension both ways: the row as little-endian FP64, the class back as INT64 bytes."""
    header = json.dumps({
        "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "parameters": {"binary_data_size": 32}}],
        "outputs": [{"name": "output-0", "parameters": {"binary_data": True}}],
    }).encode()  # fmt: skip
    headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}

    def right(response: httpx.Response) -> bool:
        length = int(response.headers["Inference-Header-Content-Length"])
        output = json.loads(response.content[:length])["outputs"][0]
        raw = response.content[length:]
        return output["datatype"] == "INT64" and list(struct.unpack(f"<{len(raw) // 8}q", raw)) == [IRIS_CLASS]

    return checked(lambda: client.post("/v2/models/iris/infer", content=header + struct.pack("<4d", *ROW),
                                       headers=headers), right)  # fmt: skip


def spin_predict(client: httpx.Client, rows: list[int] = SPIN_ROWS, timeout: float = TIMEOUT) -> Outcome:
    def right(response: httpx.Response) -> bool:
        return [item["total"] for item in response.json()["predictions"]] == [SPIN_TOTALS[row] for row in rows]

    return checked(lambda: client.post("/models/spin/predict", json=rows, timeout=timeout),
                   right if all(row in SPIN_TOTALS for row in rows) else lambda r: True)  # fmt: skip


def events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """(event name, data) of each Server-Sent Event as it comes."""
    name = "message"
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield name, json.loads(line.removeprefix("data: "))
            name = "message"


def spin_stream(client: httpx.Client) -> Outcome:
    """A stream of ``spin``'s items (run in its worker process): each item right, then the end event."""
    try:
        with client.stream("POST", "/models/spin/predict/stream", json=STREAM_ROWS) as response:
            if response.status_code != 200:
                response.read()
                return failed(response)
            received = list(events(response))
    except httpx.TransportError as error:
        return transport(error)
    for name, data in received:
        if name == "error":
            return Outcome("stream error event", str(data.get("error", data)), data.get("error_id"))
    totals = [data.get("total") for name, data in received if name == "message"]
    names = [name for name, _ in received]
    if totals != [SPIN_TOTALS[row] for row in STREAM_ROWS] or names[-1:] != ["end"]:
        return Outcome("wrong answer", f"events {names}, totals {totals}")
    return OK


def sleeper(client: httpx.Client, seconds: float) -> Outcome:
    return checked(lambda: client.post("/models/sleeper/predict", json=[seconds]),
                   lambda r: r.json()["predictions"] == [seconds])  # fmt: skip


class GrpcClient:
    """ModelInfer of ``iris`` over gRPC with NVIDIA's client (one channel, which reconnects by itself)."""

    def __init__(self, target: str) -> None:
        import numpy as np
        import tritonclient.grpc as triton

        self.triton = triton
        self.client = triton.InferenceServerClient(target)
        self.rows = triton.InferInput("input-0", [1, 4], "FP64")
        self.rows.set_data_from_numpy(np.array([ROW], dtype=np.float64))

    def infer(self) -> Outcome:
        try:
            result = self.client.infer("iris", [self.rows], client_timeout=TIMEOUT)
        except self.triton.InferenceServerException as error:
            code = str(error.status() or "unknown").removeprefix("StatusCode.")
            return Outcome(f"gRPC {code}", str(error.message()))
        answer = result.as_numpy("output-0")
        return OK if answer is not None and answer.tolist() == [IRIS_CLASS] else Outcome("wrong answer", str(answer))

    def close(self) -> None:
        self.client.close()


# -- a client that sends half a request and stalls (raw sockets: an HTTP library sends whole requests) ---------


def predict_bytes(url: str) -> bytes:
    """The whole HTTP/1.1 request of an iris predict, on a connection to be closed after it."""
    body = json.dumps([ROW]).encode()
    host = url.removeprefix("http://")
    head = (
        f"POST /models/iris/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def quiet_for(sock: socket.socket, seconds: float) -> Outcome | None:
    """None if the server sends nothing and keeps the connection for ``seconds``; else what it did."""
    stop_at = time.monotonic() + seconds
    while (left := stop_at - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], left)
        if readable:
            data = sock.recv(4096)
            return Outcome("closed while stalled" if not data else "answered while stalled", data[:200].decode())
    return None


def read_to_close(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def stalled(url: str, cut: int, seconds: float, finish: bool) -> Outcome:
    """Send the first ``cut`` bytes of a predict request, send nothing for ``seconds``, then send the rest and
    expect the right answer (``finish``), or close the connection (an abandoned request)."""
    whole = predict_bytes(url)
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
            sock.sendall(whole[:cut])
            early = quiet_for(sock, seconds)
            if early is not None or not finish:
                return early or OK
            sock.sendall(whole[cut:])
            answer = read_to_close(sock)
    except OSError as error:
        return transport(error)
    head, _, body = answer.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    if " 200 " not in status + " ":
        return Outcome(f"HTTP {status.split(' ')[1] if ' ' in status else status}", body[:300].decode())
    return OK if json.loads(body)["predictions"] == [IRIS_CLASS] else Outcome("wrong answer", body[:300].decode())
