"""The Open Inference Protocol (KServe V2), over REST and over gRPC, for every served predictor.

- ``codec``: inference requests decoded to arrays and answers encoded, shared
  by both transports (knows neither HTTP nor gRPC);
- ``rest``: the REST routes under ``/v2`` with the protocol's error format,
  and ``generate``: its generate extension;
- ``pipelines``: a pipeline whose ends are tensors, inferred as a model over
  REST and gRPC;
- ``grpc_service``: the ``inference.GRPCInferenceService`` RPCs, decoding
  with ``grpc_codec``; the messages come from ``inference.proto``, compiled to
  ``inference.binpb`` and loaded by ``protocol``.

May import what the front ends may. The gRPC modules import nothing of
``rest``, ``generate`` or ``frontends.web``.
"""
