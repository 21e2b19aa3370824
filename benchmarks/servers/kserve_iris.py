"""KServe's Python model server with a small ``kserve.Model`` serving the benchmark's model.

Input and output go through KServe's own helpers, as its sklearnserver does, so
both of its REST protocols answer:

  POST /v1/models/iris:predict   {"instances": [[f1, f2, f3, f4], ...]}
  POST /v2/models/iris/infer     Open Inference Protocol

    python kserve_iris.py --model_name iris --model_path model.joblib --http_port P --grpc_port Q

Everything else is KServe's default (gRPC on, a latency and an access log line
per request), except that it listens on 127.0.0.1: KServe binds all interfaces
with no option to change it, so this script narrows both listeners.
"""

from __future__ import annotations

import argparse
from typing import Any

import joblib
import uvicorn
from kserve import Model, ModelServer, model_server
from kserve.protocol.grpc import server as grpc_server
from kserve.utils.utils import get_predict_input, get_predict_response

LOOPBACK = "127.0.0.1"


class Iris(Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.model: Any = None

    def load(self) -> bool:
        self.model = joblib.load(self.path)
        self.ready = True
        return self.ready

    def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        return get_predict_response(payload, self.model.predict(get_predict_input(payload)), self.name)


def listen_on_loopback_only() -> None:
    """Make KServe's REST server (uvicorn) and gRPC server bind 127.0.0.1 instead of every interface."""
    config_init = uvicorn.Config.__init__

    def loopback_config(self: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        config_init(self, *args, **{**kwargs, "host": LOOPBACK})

    uvicorn.Config.__init__ = loopback_config  # type: ignore[method-assign]
    make_server = grpc_server.aio.server

    def loopback_grpc_server(*args: Any, **kwargs: Any) -> Any:
        server = make_server(*args, **kwargs)
        add_port = server.add_insecure_port
        server.add_insecure_port = lambda address: add_port(address.replace("[::]", LOOPBACK))
        return server

    grpc_server.aio.server = loopback_grpc_server


def main() -> None:
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--model_path", required=True)
    args, _ = parser.parse_known_args()
    listen_on_loopback_only()
    model = Iris(args.model_name, args.model_path)
    model.load()
    ModelServer().start([model])


if __name__ == "__main__":
    main()
