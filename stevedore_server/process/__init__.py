"""The serving process of ``stevedore-server run``: uvicorn, stopping so that no accepted request is lost.

- ``entry``: ``serve(settings)``: checks, then one serving process here or
  ``--workers N`` under a supervisor;
- ``draining``: a serving process (uvicorn's server and the gRPC server), its
  drain, and the heap freeze and its release;
- ``sockets``: the listening socket while stopping;
- ``supervisor``: uvicorn's supervisor of worker processes.

Every serving process runs a ``DrainingServer`` of the app: one made from
the settings it is handed, or with ``--workers N`` each worker's from the
``STEVEDORE_*`` variables the supervisor set (``frontends.app.app_from_env``,
the one place that reads them). On SIGTERM (or SIGINT) it:

1. marks itself draining at once: readiness answers 503 (gRPC health
   NOT_SERVING) and every response says ``Connection: close``;
2. keeps serving for ``shutdown_delay`` seconds, while load balancers take it
   out of rotation;
3. refuses new gRPC calls (UNAVAILABLE) and lets those in flight finish
   (``grpc_server``); meanwhile it stops new handshakes on the HTTP listening
   socket (Linux), takes the connections already waiting in its backlog, and
   closes it: a client that came too late is refused, none is reset;
4. gives connections that have sent no request yet a moment to send one;
5. lets in-flight requests finish (``graceful_timeout``), runs the lifespan
   shutdown, and exits 0.

With ``--workers N`` the workers share one listening socket, so only a stop of
the whole service may stop its handshakes (step 3). The supervisor marks that
stop (``ServerConfig.service_stopping``) in its signal handler, before anything
else; each worker drains within a tick of the mark, and a worker that got the
signal itself (sent to the process group: systemd, Ctrl+C) waits up to
``DECISION_TIME`` for it. Past that, the worker stops alone (a restart), and
the others go on accepting.

On SIGHUP a serving process reads the settings file's ``[traffic.*]`` tables
again and serves them (``DrainingServer.reload_traffic``); with ``--workers N``
uvicorn's supervisor takes SIGHUP and restarts each worker in turn, which reads
the whole file.

What is process-wide (signal handlers, ``gc.freeze``, logging internals) is
done here, never by the app factory. May import every layer below the
commands.
"""
