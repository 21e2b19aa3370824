"""The jobs layer: trainings and long predictions, each in a process of its own, and the versions they make.

- ``service``: ``Jobs``, the API and lifecycle (submit, read, cancel, recover,
  close), built up from ``dispatcher`` (the queue), ``supervisor`` (a thread
  per running job), ``artifacts`` (new versions served and recorded) and
  ``context`` (what they share);
- ``launch``: a job's process, started (with an environment free of the
  server's settings and secrets) and signalled with its group;
- ``followers``: the bound on clients following job logs;
- ``child``: the job's own side (``TrainContext``, ``run_job``; in a model's
  worker interpreter, ``run_in_worker``);
- ``store``: the database (SQLAlchemy Core; SQLite by default), with its
  ``migrations/`` (Alembic);
- ``versions``: the versions trainings made, followed by every server process.

May import: ``core``, ``processes``, ``plugins``, ``base``. SQLAlchemy is
imported by ``store`` only, which the server opens when a job is first asked
for.
"""
