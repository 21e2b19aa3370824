"""stevedore-server runtime ``mlserver``: a custom MLServer runtime, a user's ``mlserver.MLModel`` subclass with
``load()`` and ``predict(InferenceRequest)``, served unchanged (its codecs and content types included).

- ``runtime``: ``MLServerRuntime``, the ``FilePredictor`` the ``mlserver`` entry point names;
- ``settings``: MLServer's ``ModelSettings`` from the model's options, and the implementation imported as
  MLServer imports it (the model's folder on ``sys.path``);
- ``metadata``: the model-settings ``inputs``/``outputs`` metadata as V2 tensors, a schema and a fixture;
- ``messages``: stevedore payloads as MLServer ``InferenceRequest``s, its responses as outputs;
- ``loop``: the event loop of its own the model's coroutines run on.
"""

from __future__ import annotations

from .runtime import MLServerRuntime

__all__ = ["MLServerRuntime"]
