"""The processes layer: models in worker processes of their own, under the server's interpreter or another
environment's (``[models.NAME] processes = N`` or ``python = ...``).

- ``isolation``: which models run in worker processes, found and loaded there;
- ``predictor``: ``ProcessPredictor``, such a model as the rest of the server
  sees it (its ``predict`` is a call to the pool);
- ``pool``: one model's worker processes, replaced when one dies or overruns;
- ``spawn``: starting a worker under an interpreter, hearing from it, stopping
  it with its process group;
- ``wire``: the orders a worker starts with and the messages both sides send;
- ``worker``: the worker's own side (``python -m stevedore_server.worker``);
- ``environments``: the settings tables of other environments' models, for
  the ``environment-settings`` command.

May import: ``plugins`` and ``base``. The worker imports only ``wire`` at
start, and the plugins layer when it loads its model: no Starlette, no gRPC.
"""
