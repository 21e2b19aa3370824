"""For a runtime's tests: its model files served by a real server and asked over loopback, or made in process.

A runtime (a ``FilePredictor`` named by a ``stevedore.runtimes`` entry point) is best tested as its users meet
it: a file the framework saved, served by ``stevedore-server run --model NAME=FILE`` (or a settings file), its
answers on the stevedore route and over V2 compared with the framework's own::

    with runtime_servers("sklearn", tmp_path) as serve:
        server = serve("--model", f"iris={path}")
        assert predict(server, "iris", rows) == model.predict(rows).tolist()
        outputs = infer(server, "iris", rows, ["predict_proba"])
        numpy.testing.assert_allclose(tensor_values(outputs["predict_proba"]), model.predict_proba(rows))

An answer other than the one a helper expects raises ``UnexpectedAnswer`` (an ``AssertionError``: a failed
test) with the request and the server's answer.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np

from stevedore_server.base.errors import UnexpectedAnswer
from stevedore_server.kit.loopback import LiveServer
from stevedore_server.model_files import ModelFile

__all__ = [
    "REQUEST_TIMEOUT",
    "STARTUP_TIMEOUT",
    "UnexpectedAnswer",
    "failure_reason",
    "infer",
    "infer_tensors",
    "input_tensor",
    "model_file",
    "predict",
    "runtime_servers",
    "served",
    "tensor_values",
]

#: Seconds a server gets to load and self-test its models (a framework's first import can be slow).
STARTUP_TIMEOUT = 90.0
#: Seconds a request gets.
REQUEST_TIMEOUT = 30.0

#: Starts ``stevedore-server run ARGS`` (``runtime_servers`` gives one), returning it serving.
StartServer = Callable[..., LiveServer]


class Served(Protocol):
    """A server on loopback: a ``LiveServer``, or any other with a base URL."""

    @property
    def url(self) -> str: ...


@contextmanager
def served(log_dir: Path, *args: str, timeout: float = STARTUP_TIMEOUT) -> Iterator[LiveServer]:
    """``stevedore-server run ARGS`` on loopback, serving (its models loaded and self-tested), its log a new
    ``server-N.log`` in ``log_dir``; stopped at the end, also when it never serves."""
    server = LiveServer.start(unused_log_path(log_dir), *args)
    try:
        server.wait_until_serving(timeout)
        yield server
    finally:
        server.stop()


@contextmanager
def runtime_servers(runtime: str, folder: Path, timeout: float = STARTUP_TIMEOUT) -> Iterator[StartServer]:
    """A function starting ``stevedore-server run ARGS`` with only ``runtime`` selected (``--plugins``: no other
    plugin's model of the same name gets in) and a state directory in ``folder``; each server it started is
    stopped at the end."""
    with ExitStack() as servers:

        def start(*args: str) -> LiveServer:
            selected = ("--plugins", runtime, "--state-dir", str(folder / "state"), *args)
            return servers.enter_context(served(folder, *selected, timeout=timeout))

        yield start


def unused_log_path(log_dir: Path) -> Path:
    """``log_dir/server-N.log`` for the first N no file has."""
    paths = (log_dir / f"server-{number}.log" for number in itertools.count())
    return next(path for path in paths if not path.exists())


def predict(server: Served, model: str, payload: Any) -> Any:
    """The ``predictions`` of ``POST /models/MODEL/predict`` with ``payload`` (rows, or what the model takes)."""
    response = httpx.post(f"{server.url}/models/{model}/predict", json=payload, timeout=REQUEST_TIMEOUT)
    return answer_of(response)["predictions"]


def infer(
    server: Served, model: str, rows: Any, outputs: Sequence[str] | None = None, datatype: str = "FP64"
) -> dict[str, dict[str, Any]]:
    """A V2 REST inference of ``rows`` as one input named as MLServer's NumpyRequestCodec names it (``input-1``):
    the output tensors by name, those named in ``outputs`` (in that order) or the model's default ones."""
    return infer_tensors(server, model, [input_tensor(rows, datatype)], outputs)


def infer_tensors(
    server: Served, model: str, inputs: Sequence[dict[str, Any]], outputs: Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    """A V2 REST inference of the given input tensors: the output tensors by name, as ``infer``."""
    body: dict[str, Any] = {"inputs": list(inputs)}
    if outputs is not None:
        body["outputs"] = [{"name": name} for name in outputs]
    response = httpx.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=REQUEST_TIMEOUT)
    return {tensor["name"]: tensor for tensor in answer_of(response)["outputs"]}


def input_tensor(values: Any, datatype: str = "FP64", name: str = "input-1") -> dict[str, Any]:
    """``values`` (nested lists or an array) as a V2 input tensor: its shape, and its data flattened."""
    return {"name": name, "datatype": datatype, "shape": list(np.shape(values)), "data": np.ravel(values).tolist()}


def tensor_values(tensor: dict[str, Any]) -> np.ndarray[Any, Any]:
    """A V2 output tensor's data as an array of its shape."""
    return np.asarray(tensor["data"]).reshape(tensor["shape"])


def failure_reason(server: Served, model: str) -> str:
    """Why ``model`` failed, as ``GET /models/MODEL`` says; ``UnexpectedAnswer`` if it did not fail."""
    answer = httpx.get(f"{server.url}/models/{model}", timeout=REQUEST_TIMEOUT).json()
    if not isinstance(answer, dict) or answer.get("state") != "failed":
        raise UnexpectedAnswer(f"{model} did not fail: {answer}")
    return str(answer["reason"])


def answer_of(response: httpx.Response) -> Any:
    """The JSON body of a 200 answer; ``UnexpectedAnswer`` with the request and the answer otherwise."""
    if response.status_code != 200:
        request = response.request
        raise UnexpectedAnswer(f"{request.method} {request.url}: {response.status_code} {response.text}")
    return response.json()


def model_file(runtime: str, uri: Path | str, cache_dir: Path, name: str = "model", **fields: Any) -> ModelFile:
    """The ``ModelFile`` a runtime is handed for ``uri`` (version 1), to make the runtime in process:
    ``MyRuntime(model_file("mine", path, tmp_path / "cache", trusted=True)).load()``. ``fields``: the other
    ``ModelFile`` fields (``sha256``, ``trusted``, ``output``, ``options``, ...)."""
    return ModelFile(name=name, version="1", runtime=runtime, uri=str(uri), cache_dir=cache_dir, **fields)
