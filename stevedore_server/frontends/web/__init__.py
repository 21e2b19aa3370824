"""The HTTP front end: the routes of the stevedore API and of the original ml-py-stevedore, and what they share.

- ``stevedore_routes`` (health, catalogue, schemas, predict, score) and
  ``original_routes`` (the original routes and bodies), ``streaming``
  (Server-Sent Events), ``jobs_routes`` (start, list, watch, cancel jobs),
  ``plugin_routes`` (the plugins' own routes, checked and served),
  ``traffic_routes`` (the traffic names and their splits, changed while serving),
  ``pipelines_routes`` (the pipelines: list, schema, predict);
- ``bodies``: bodies in, JSON out, the readiness of a request;
- ``watching``: an inference cancelled when its client disconnects, and its
  ``X-Request-Timeout`` deadline;
- ``middleware``: request ids, access log, HTTP metrics, the last-resort 500,
  API keys;
- ``origins``: requests a web page made a browser send, refused (DNS
  rebinding by ``Host``, cross-site writes by ``Origin``);
- ``routing`` (route types), ``openapi`` (the document) and ``docs`` (Swagger
  UI and ReDoc, served from the package's ``static/docs``).

May import: ``frontends.state``, ``frontends.auth`` and the layers below the
front ends. The app (``frontends.app``) and the console import these.
"""
