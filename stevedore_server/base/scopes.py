"""The scopes an API key may hold, each wider than the one before and holding it.

``infer``: predictions, scores, streams, the catalogue and metadata, the jobs
its key started; ``train``: also starting trainings and long-prediction jobs,
reading and cancelling its own jobs; ``admin``: everything (the model
repository, every job, trained versions). Routes, RPCs and plugins' routes
name the scope they need; ``frontends.auth`` checks callers against it.
"""

from __future__ import annotations

INFER, TRAIN, ADMIN = "infer", "train", "admin"
#: Each scope with those it holds: a wider one holds the narrower ones.
HOLDS = {INFER: frozenset({INFER}), TRAIN: frozenset({INFER, TRAIN}), ADMIN: frozenset({INFER, TRAIN, ADMIN})}
