"""The base layer: what every other layer uses, and nothing of theirs.

- ``errors``: every exception meant for a person (the error edges turn them
  into HTTP, gRPC or CLI errors);
- ``settings/``: the settings, read once (flags, environment, file);
- ``sources``: where a plugin came from, which plugins are selected, how one
  failed;
- ``serialization`` (JSON in and out, orjson), ``validation`` (JSON Schema);
- ``storage``: model files by URI (a local path, http(s), s3, gs, az, hf),
  downloaded once into a cache;
- ``logs`` (text or JSON lines, request ids), ``metrics`` (Prometheus);
- ``inference_records`` (what the payload log records of an inference) and ``redaction`` (JSON pointers);
- ``lifecycle`` (serving or draining), ``health`` (running health checks);
- ``scopes``: the scopes of API keys, which routes and plugins name;
  ``exposure``: loopback addresses, and the warnings of an open server;
- ``memory``: a process's resident memory, and how much it grows while a
  model loads (the memory budget's measure);
- ``pids`` (other processes by their ids), ``version``, ``moved`` (old module
  paths kept as redirects).

May import: the standard library and third-party packages only. Nothing here
imports Starlette, gRPC or SQLAlchemy: a model's worker process runs on it.
"""
