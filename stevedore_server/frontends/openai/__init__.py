"""The OpenAI-compatible routes: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions`` and
``/v1/embeddings`` (also under ``/openai/v1``) for every model with a text capability (``Predictor.capabilities``).

- ``routes``: the handlers, mounted under each prefix, writing OpenAI's shapes;
- ``chunks``: a streamed answer's Server-Sent Events, its choices side by side, starting with the first;
- ``parameters``: the request bodies checked, and what the model is handed;
- ``choices``: a generation's pieces made into a choice (stop sequences, tool
  calls, token counts);
- ``error_format``: OpenAI's error format, the mount's error edge;
- ``openapi``: these routes' bodies and errors in the OpenAPI document.

The text runs through the inference core (``core.text``, ``Inference.generations`` and ``Inference.embed``),
as every other call: admission, time-outs, batching, metrics and errors happen there.

May import what the front ends may (``frontends.web`` for the HTTP plumbing it shares). Nothing imports it but
the app (its route table, its OpenAPI document).
"""
