"""The Model Context Protocol front end: every ready model, traffic name and pipeline as a tool at ``/mcp``.

- ``tools``: what the tools are (names, descriptions, input and output schemas,
  examples), worked out from the registry, the traffic names and the pipelines
  as they are at each ``tools/list``; and a tool call, run through the
  inference core (or the pipelines) with its errors as tool errors;
- ``protocol``: the official ``mcp`` SDK's low-level server over its
  streamable-HTTP session manager, and the watch that tells the sessions and
  listeners when the tools change and ends the open streams when the server
  drains;
- ``service``: the ``/mcp`` route and its place in the app's lifespan. It
  imports no part of the SDK: the first request to ``/mcp`` imports
  ``protocol`` and starts its server in the lifespan's task group, so a
  server whose ``/mcp`` nobody uses spends nothing on it.

May import: ``frontends.state``, ``frontends.auth``, ``frontends.web`` (its
route type), and the layers below the front ends. The app (``frontends.app``)
imports ``service`` alone.
"""
