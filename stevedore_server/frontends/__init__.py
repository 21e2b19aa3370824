"""The front ends: each transport decodes its request, calls the inference core, and encodes the answer.

- ``app``: the web application (routes, middleware, error edge, lifespan),
  made by ``create_app`` from settings handed to it;
- ``state``: what the app shares with every request and gRPC call, one typed
  object;
- ``auth``: API keys, for HTTP and gRPC;
- ``payload_notes``: what each inference route notes for the payload log, for
  HTTP and gRPC;
- ``web/``: the HTTP front end (the stevedore and original routes, streaming,
  the jobs routes, the plugins' routes, middleware, OpenAPI and the docs);
- ``v2/``: the Open Inference Protocol: its REST routes, its codec (shared by
  both transports), and its gRPC service;
- ``grpc_server``: the gRPC server of each serving process, with
  ``grpc_context`` (what every call passes: ids, keys, access log, metrics,
  status codes) and ``grpc_health`` (the standard health service);
- ``console/``: the web console;
- ``openai/``: the OpenAI-compatible routes (``/v1/...``, ``/openai/v1/...``)
  for the models' text capabilities, with OpenAI's error format;
- ``mcp/``: the Model Context Protocol at ``/mcp``: every model a tool.

May import: ``jobs``, ``core``, ``processes``, ``plugins``, ``base``. The gRPC
modules (``grpc_*``, ``v2.grpc_service``, ``v2.grpc_codec``) import
nothing of HTTP (``web``, ``v2.rest``, Starlette); a test says so.
"""
