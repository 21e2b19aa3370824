"""The versions trainings made, kept and served by every server process.

    followed = TrainedVersions(registry, serving, state_dir); followed.follow(store)  # at startup, then every second

A training that returns ``{"artifact": PATH}`` has its artifact copied out of
the job's workdir to ``<state dir>/artifacts/<job id>/`` (``keep_artifact``)
and, once the new version is served by the process that ran the job, recorded
in the jobs database (``trained_versions``). Every server process follows that
table: at startup it serves each recorded version, and while it runs it serves
those another process recorded since it last looked, and stops serving those
whose row is gone (removed over the API, or retired beyond
``max_trained_versions``). The store, not the workers' files of
``convergence.py``, is what they follow: it outlives a restart and is shared by
servers on several machines. A version whose artifact is gone, or that fails
its self-test, is logged and not served; the others are.

A row names the file its version loads (and a model's ``load`` may unpickle
it): whoever can write the database could name any file. So an artifact is
loaded only from inside its own job's directory, ``<state dir>/artifacts/<job
id>/``, symbolic links resolved (``trusted_artifact``); a row naming another
file is logged and not served.

The versions are ordered by their rows, the order the one database recorded
them in (not by ``created``, which the clock of whichever machine made them
gave, and never by the version's text, whose local part is a random job id):
every process orders them alike, so all agree on the newest, which serves by
default while ``promote_trained`` is on (``served_models.TrainedOrder``).

With ``--workers N`` each worker also marks, in the workers' files, the last
row it has looked at; the job that made a version ends (succeeded) once every
live worker of the machine has looked at it: serves it, or has logged why not
(``wait_until_followed``), and takes it for the default if promoted. A client
who sees the job succeed finds the version on any worker. Servers on other
machines sharing a PostgreSQL store follow within a second or so, as every
process does for a removed version.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from stevedore_server.base.errors import UntrustedArtifact
from stevedore_server.core.convergence import SharedState
from stevedore_server.core.served_models import Registry, TrainedOrder, trained_by

from .child import describe
from .records import Job, TrainedVersion

if TYPE_CHECKING:
    from .store import JobStore

logger = logging.getLogger("stevedore.trained")

ARTIFACTS = "artifacts"

#: Seconds a job that made a version waits for the other workers to serve it, and between its looks.
FOLLOW_TIMEOUT = 60.0
FOLLOW_POLL = 0.05


@dataclass(frozen=True)
class TrainedServing:
    """How one server process serves trained versions (the app's, through its model repository; each call blocks
    until done): ``serve`` loads and self-tests one, raising with the reason if it fails; ``unserve`` drops one
    (by model and version; its calls in flight finish)."""

    serve: Callable[[TrainedVersion], None]
    unserve: Callable[[str, str], None]


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


def artifact_dir(state_dir: Path, job_id: str) -> Path:
    """``<state dir>/artifacts/<job id>``, where a job's artifact is kept (real path); UntrustedArtifact for a job
    id that is no plain name (``..``, a slash) or a directory that is a symbolic link: either would name another
    directory."""
    if job_id in ("", ".", "..") or any(character in job_id for character in "/\\\0"):
        raise UntrustedArtifact(f"its job id {job_id!r} names no directory of its own")
    root = (state_dir / ARTIFACTS).resolve()
    own = root / job_id
    if own.resolve() != own:
        raise UntrustedArtifact(f"its job's artifact directory {own} is a symbolic link")
    return own


def trusted_artifact(state_dir: Path, trained: TrainedVersion) -> Path:
    """The recorded artifact's real path (symbolic links resolved), as long as it is inside its own job's
    artifact directory; UntrustedArtifact, saying where it is, otherwise."""
    own = artifact_dir(state_dir, trained.job_id)
    path = Path(trained.artifact).resolve()
    if path == own or not path.is_relative_to(own):
        raise UntrustedArtifact(f"its artifact {trained.artifact} is outside its job's artifact directory {own}")
    return path


def forget_artifact(state_dir: Path, job_id: str) -> None:
    """Delete a job's kept artifact (its version failed its self-test, or was removed); a directory that is not
    the job's own (``artifact_dir``) is left alone, and logged."""
    try:
        shutil.rmtree(artifact_dir(state_dir, job_id))
    except FileNotFoundError:
        return
    except (OSError, UntrustedArtifact) as error:
        logger.warning("the artifact of job %s is not deleted: %s", job_id, describe(error))


def order_of(rows: Iterable[TrainedVersion], promote: bool) -> TrainedOrder:
    """Each model's recorded versions in the order of their rows (``rows`` oldest first)."""
    made: dict[str, list[str]] = {}
    for row in rows:
        made.setdefault(row.model, []).append(row.version)
    return TrainedOrder({model: tuple(versions) for model, versions in made.items()}, promote)


def beyond(rows: list[TrainedVersion], keep: int, default: str | None) -> list[TrainedVersion]:
    """The oldest of one model's recorded versions (``rows``, oldest first) past the ``keep`` newest, never the
    ``default`` one: the rows to retire."""
    excess = len(rows) - keep
    if keep <= 0 or excess <= 0:
        return []
    return [row for row in rows if row.version != default][:excess]


class TrainedVersions:
    """Follows, in this process, the trained versions recorded in the store: serves those it does not serve yet
    (each row tried once), stops serving those whose row is gone, and orders them as their rows."""

    def __init__(
        self,
        registry: Registry,
        serving: TrainedServing,
        state_dir: Callable[[], Path],
        promote: bool = True,
        shared: SharedState | None = None,
    ) -> None:
        self.registry = registry
        self.serving = serving
        self.state_dir = state_dir
        self.promote = promote
        #: One look at a time: the dispatcher follows every second, and a job that made a version at once.
        self.lock = threading.Lock()
        #: The last row of ``trained_versions`` looked at, and the rows looked at: one gone is a removed version.
        self.seen = 0
        self.known: dict[int, TrainedVersion] = {}
        #: With workers: where this one marks ``seen`` for the others, and the last mark it made.
        self.shared = shared
        self.marked: int | None = None

    def follow(self, store: JobStore) -> None:
        with self.lock:
            rows = store.trained()
            # Ordered first: a version served below is the default from the moment it serves, if promoted.
            self.registry.order_trained(order_of(rows, self.promote))
            for trained in rows:
                if trained.id > self.seen:
                    self.seen = trained.id
                    self.known[trained.id] = trained
                    if self.wanted(trained):
                        self.serve_one(trained)
            self.unserve_gone({trained.id for trained in rows})
            if self.shared is not None and self.marked != self.seen:
                self.shared.followed_trained(self.seen)
                self.marked = self.seen

    def wanted(self, trained: TrainedVersion) -> bool:
        """A version of a model this process serves, and not served yet (the process that trained it does)."""
        if trained.model not in self.registry.names():
            return False
        return all(model.version != trained.version for model in self.registry.versions_of(trained.model))

    def served(self, trained: TrainedVersion) -> str | None:
        """The version of ``trained`` if this process serves it (made by its job), else None."""
        for model in self.registry.versions_of(trained.model):
            if model.version == trained.version and trained_by(model) == trained.job_id:
                return model.version
        return None

    def serve_one(self, trained: TrainedVersion) -> None:
        described = f"model {trained.model} version {trained.version} (trained by job {trained.job_id})"
        try:
            artifact = trusted_artifact(self.state_dir(), trained)
            if not artifact.exists():
                raise FileNotFoundError(f"its artifact {trained.artifact} is gone")
            self.serving.serve(replace(trained, artifact=str(artifact)))
        except Exception as error:  # one bad version must not keep the others (or the server) from serving
            logger.error("%s is not served: %s", described, describe(error))
            return
        logger.info("%s served", described)

    def unserve_gone(self, rows: set[int]) -> None:
        """Stop serving the versions whose rows were deleted since the last look."""
        for row in sorted(set(self.known) - rows):
            trained = self.known.pop(row)
            if self.served(trained) is None:
                continue
            described = f"model {trained.model} version {trained.version} (trained by job {trained.job_id})"
            try:
                self.serving.unserve(trained.model, trained.version)
            except Exception as error:  # the others are followed all the same
                logger.error("%s, removed from the jobs database, could not be dropped: %s", described, describe(error))
                continue
            logger.info("%s is no longer served: it was removed", described)

    def retire(self, store: JobStore, rows: list[TrainedVersion]) -> list[TrainedVersion]:
        """Remove recorded versions: their rows deleted (so every process stops serving them), no longer served
        here, their artifacts deleted; those removed (not those another process removed first)."""
        removed = [trained for trained in rows if store.delete_trained(trained.id)]
        self.follow(store)
        for trained in removed:
            forget_artifact(self.state_dir(), trained.job_id)
        return removed

    def retire_oldest(self, store: JobStore, model: str, keep: int) -> list[TrainedVersion]:
        """Retire the oldest recorded versions of ``model`` past the ``keep`` newest, never the one serving by
        default here."""
        defaults = self.registry.versions_of(model)[:1]
        rows = [trained for trained in store.trained() if trained.model == model]
        return self.retire(store, beyond(rows, keep, defaults[0].version if defaults else None))


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
