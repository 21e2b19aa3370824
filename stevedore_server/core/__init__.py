"""The core layer: the one inference path every front end calls, the models it serves, and how each runs.

- ``inference``: ``Inference.call`` and ``Inference.stream``, the one way in:
  the model found, the payload validated (there and nowhere else), the model
  run, its answer checked;
- ``text``: a model's text capabilities (``chat``, ``complete``, ``embed``)
  through the same way in: ``Inference.generations`` and ``Inference.embed``;
- ``traffic``: traffic names (``[traffic.NAME]``) routed to their variants by
  weight, sticky or not, with a shadow compared off the request path;
  ``traffic_convergence``: workers agreeing on splits changed while serving;
- ``pipelines``: models composed into one call (``[pipelines.NAME]``, or a
  plugin's), checked before they serve (``schema_fit``: does one step's
  output schema fit the next one's input) and run step by step through
  ``Inference.call``;
- ``server``: ``ModelServer``, the server a process runs (what hooks receive);
- ``served_models``: the ``Registry`` of the served models by name and version, swapped whole;
- ``serving``: a model as served (its runtime, its tensor signature);
- ``runtime`` (how one model's calls run), with ``admission`` (its threads,
  queue bound and time-out), ``inline`` (short calls on the event loop) and
  ``batching`` (adaptive batches);
- ``deadlines``: a request's deadline, and work dropped when nobody waits
  for it any more (a client gone, a deadline passed);
- ``tensors``, ``signature`` and ``content_types``: tensors and what a model
  takes and gives as tensors, for REST and gRPC alike;
- ``payload_log``: each inference's request and response handed to the
  ``stevedore_inference_logged`` hook, off the request path;
- ``startup``: discovery, loading and serving state at startup, the same for
  every process;
- ``repository``: models loaded and unloaded while serving,
  ``convergence``: workers agreeing on them, and ``lazy_loading``: models
  loaded on their first request, within the memory budget.

May import: ``processes``, ``plugins``, ``base``. Nothing of a front end: no
Starlette, no gRPC, no HTTP request.
"""
