"""The installed plugins served by Ray Serve on a Ray cluster: ``stevedore-server ray`` (the ``ray`` extra).

The application is one deployment a model and an ingress:

- ``config``: the deployments the installed plugins make and their options, and
  the Serve config file that deploys them (``--config-only``); needs no Ray.
- ``replica``: the model deployment, one model loaded in each replica, serving
  it with its own runtime (threads, admission, batching), and the plugins'
  health checks as the replica's.
- ``ingress``: the HTTP API of ``stevedore-server run``, the same app, whose
  models run in their deployments (``forwarding``).
- ``forwarding``: the ingress's side of the model deployments (a runtime
  that forwards each call to its deployment, the ``X-Served-By`` header).
- ``live``: a model's deployment added to the running cluster (an application
  of its own) and removed: the repository's load and unload on Ray.
- ``grpc_proxy``: the servicer function Serve's gRPC proxy registers (the Open
  Inference Protocol's service); ``grpc_ingress``: the ingress's RPC methods,
  answered as ``run``'s gRPC server answers them.
- ``metrics_export``: a replica's metrics copied into Ray's, for the
  Prometheus endpoint of its node.
- ``multiplexed``: the lazily loaded models' one deployment, each replica
  holding a few (Serve's model multiplexing), and the ingress's loader of them.
- ``jobs``: jobs in Ray actors (the jobs' launcher), and the deployments of
  the versions trainings make.
- ``app``: the application builder Serve imports
  (``stevedore_server.rayserve.app:build`` in saved Serve configs), and
  deploying it.

On top of the layers: it may import every layer below the commands, and is
imported only by ``stevedore-server ray`` (and Serve itself); Ray is imported
nowhere else.
"""
