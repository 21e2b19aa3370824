"""The front ends: each transport decodes its request, calls the inference core, and encodes the answer.

- ``app``: the web application (routes, middleware, error edge, lifespan),
  made by ``create_app`` from settings handed to it;
- ``state``: what the app shares with every request and gRPC call, one typed
  object;
- ``auth``: API keys, for HTTP and gRPC;
- ``web/``: the HTTP front end (the stevedore and original routes, streaming,
  the jobs routes, the plugins' routes, middleware, OpenAPI and the docs);
- ``v2/``: the Open Inference Protocol: its REST routes, its codec (shared by
  both transports), and its gRPC service;
- ``grpc_server``: the gRPC server of each serving process;
- ``console/``: the web console.

May import: ``jobs``, ``core``, ``processes``, ``plugins``, ``base``. The gRPC
modules (``grpc_server``, ``v2.grpc_service``, ``v2.grpc_codec``) import
nothing of HTTP (``web``, ``v2.rest``, Starlette); a test says so.
"""
