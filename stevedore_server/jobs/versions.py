"""The versions trainings made, kept and served by every server process.

    followed = TrainedVersions(registry, serve); followed.follow(store)  # at startup, then every few seconds

A training that returns ``{"artifact": PATH}`` has its artifact copied out of
the job's workdir to ``<state dir>/artifacts/<job id>/`` (``keep_artifact``)
and, once the new version is served by the process that ran the job, recorded
in the jobs database (``trained_versions``). Every server process follows that
table: at startup it serves each recorded version, and while it runs it serves
those another process recorded since it last looked. The store, not the
workers' files of ``convergence.py``, is what they follow: it outlives a
restart and is shared by servers on several machines. A version whose artifact
is gone, or that fails its self-test, is logged and not served; the others are.

With ``--workers N`` each worker also marks, in the workers' files, the last
row it has looked at; the job that made a version ends (succeeded) once every
live worker of the machine has looked at it: serves it, or has logged why not
(``wait_until_followed``). A client who sees the job succeed finds the version
on any worker. Servers on other
machines sharing a PostgreSQL store follow within a second or so.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from stevedore_server.core.convergence import SharedState
from stevedore_server.core.served_models import Registry

from .child import describe
from .records import Job, TrainedVersion

if TYPE_CHECKING:
    from .store import JobStore

logger = logging.getLogger("stevedore.trained")

ARTIFACTS = "artifacts"

#: Serves a trained version in this process, once loaded and self-tested (raises with the reason if not).
ServeTrained = Callable[[TrainedVersion], None]
#: Seconds a job that made a version waits for the other workers to serve it, and between its looks.
FOLLOW_TIMEOUT = 60.0
FOLLOW_POLL = 0.05


def version_of(job: Job) -> str:
    """The new version a training job makes: its model's version with the job as a PEP 440 local part."""
    return f"{job.version.split('+')[0]}+job.{job.id.split('-')[0]}"


def keep_artifact(state_dir: Path, job_id: str, artifact: Path) -> Path:
    """Copy the artifact (a file or a directory) to ``<state_dir>/artifacts/<job id>/``; its kept path. The copy
    is made beside and renamed into place, so a kept artifact is never half-copied."""
    kept_dir = state_dir / ARTIFACTS / job_id
    kept_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{job_id}-", dir=kept_dir.parent))
    try:
        if artifact.is_dir():
            shutil.copytree(artifact, partial / artifact.name)
        else:
            shutil.copy2(artifact, partial / artifact.name)
        partial.rename(kept_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return kept_dir / artifact.name


def forget_artifact(state_dir: Path, job_id: str) -> None:
    """Delete a kept artifact whose version is not served (it failed its self-test)."""
    shutil.rmtree(state_dir / ARTIFACTS / job_id, ignore_errors=True)


class TrainedVersions:
    """Serves, in this process, the trained versions recorded in the store that it does not serve yet."""

    def __init__(self, registry: Registry, serve: ServeTrained, shared: SharedState | None = None) -> None:
        self.registry = registry
        self.serve = serve
        #: The last row of ``trained_versions`` looked at: each row is tried once per process.
        self.seen = 0
        #: With workers: where this one marks ``seen`` for the others, and the last mark it made.
        self.shared = shared
        self.marked: int | None = None

    def follow(self, store: JobStore) -> None:
        for trained in store.trained(after=self.seen):
            self.seen = trained.id
            if self.wanted(trained):
                self.serve_one(trained)
        if self.shared is not None and self.marked != self.seen:
            self.shared.followed_trained(self.seen)
            self.marked = self.seen

    def wanted(self, trained: TrainedVersion) -> bool:
        """A version of a model this process serves, and not served yet (the process that trained it does)."""
        if trained.model not in self.registry.names():
            return False
        return all(model.version != trained.version for model in self.registry.versions_of(trained.model))

    def serve_one(self, trained: TrainedVersion) -> None:
        described = f"model {trained.model} version {trained.version} (trained by job {trained.job_id})"
        try:
            if not Path(trained.artifact).exists():
                raise FileNotFoundError(f"its artifact {trained.artifact} is gone")
            self.serve(trained)
        except Exception as error:  # one bad version must not keep the others (or the server) from serving
            logger.error("%s is not served: %s", described, describe(error))
            return
        logger.info("%s served", described)


def wait_until_followed(
    shared: SharedState, row: int, workers: int, closing: Callable[[], bool], timeout: float = FOLLOW_TIMEOUT
) -> bool:
    """Wait (blocking) until ``workers`` live workers have looked at the trained version in ``row``; False if
    they have not within ``timeout``, or the server is ``closing`` (its workers may be gone already)."""
    deadline = time.monotonic() + timeout
    while sum(followed >= row for followed in shared.trained_followed()) < workers:
        if time.monotonic() > deadline or closing():
            return False
        time.sleep(FOLLOW_POLL)
    return True
