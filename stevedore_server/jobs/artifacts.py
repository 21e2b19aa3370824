"""What a training's artifact becomes: kept under the state directory, served here as a new version, and
recorded in the store for every server process (with ``--workers N``, once every worker has looked at it); the
oldest versions past ``max_trained_versions`` retired; a version removed on request."""

from __future__ import annotations

import logging

from stevedore_server.base.errors import BadRequest, ClientError, Conflict, NotFound, UnknownModel
from stevedore_server.core.served_models import trained_by

from .child import describe
from .context import JobsContext
from .launch import RunningJob
from .records import Job, TrainedVersion, now
from .versions import FOLLOW_TIMEOUT, forget_artifact, keep_artifact, version_of, wait_until_followed

logger = logging.getLogger("stevedore.jobs")


class ArtifactKeeper(JobsContext):
    """The part of the jobs that serves the versions trainings make, and removes them."""

    def _serve_artifact(self, entry: RunningJob, artifact: str) -> str | None:
        """Keep the artifact a training returned, serve it here as a new version, and record it for every server
        process; the new version, or None (and why, in the job's log) if not served."""
        job = entry.job
        state_dir = self.state_dir()
        workdir = (state_dir / "jobs" / job.id).resolve()
        path = (workdir / artifact).resolve()
        try:
            if self.serve_trained is None:
                raise RuntimeError("this server cannot serve new versions")
            if not path.is_relative_to(workdir) or not path.exists():
                raise FileNotFoundError(f"the artifact {artifact!r} is no file in the job's workdir")
            kept_path = keep_artifact(state_dir, job.id, path)
            trained = TrainedVersion(job.model, version_of(job), job.version, job.id, str(kept_path), now())
            try:
                self.serve_trained.serve(trained)
            except Exception:
                forget_artifact(state_dir, job.id)
                raise
            row = self.until_saved(
                f"recording the version job {job.id} made", lambda: self.store.record_trained(trained)
            )
        except Exception as error:
            logger.warning("job %s: its artifact is not served: %s", job.id, describe(error))
            self._add_log(job.id, "warning", f"the new version is not served: {describe(error)}")
            return None
        self._add_log(job.id, "info", f"serving the new version {trained.version}")
        self._order_and_retire(job)
        if not self._followed_by_every_worker(row):
            late = f"not every worker looked at the new version {trained.version} within {FOLLOW_TIMEOUT:g} s"
            self._add_log(job.id, "warning", late)
        return trained.version

    def _order_and_retire(self, job: Job) -> None:
        """Order the new version among the others here at once (the default from now on, if promoted), then
        retire the oldest past ``max_trained_versions``. What fails here is logged: the version serves, and the
        dispatcher's next look orders it."""
        keep = self.settings.max_trained_versions
        try:
            if self.trained is None:
                return
            self.trained.follow(self.store)
            retired = self.trained.retire_oldest(self.store, job.model, keep) if keep else []
        except Exception as error:
            logger.warning("job %s: the trained versions of %s are not ordered yet: %s", job.id, job.model,
                           describe(error))  # fmt: skip
            return
        if retired:
            versions = ", ".join(trained.version for trained in retired)
            logger.info("model %s: versions %s retired (max_trained_versions %d)", job.model, versions, keep)
            self._add_log(job.id, "info", f"retired the oldest trained versions (max_trained_versions): {versions}")

    def remove_trained(self, model: str, version: str) -> None:
        """Remove a trained version: its record deleted (every server process stops serving it), its artifact
        deleted. Conflict for an installed version, NotFound for no such version."""
        if self.trained is None:
            raise BadRequest("this server does not serve trained versions, and removes none")
        rows = self.store.trained() if self._readable() else []
        recorded = [trained for trained in rows if (trained.model, trained.version) == (model, version)]
        if not recorded:
            raise self._not_removable(model, version)
        if not self.trained.retire(self.store, recorded):
            raise NotFound(f"model {model!r} has no trained version {version!r}: it was removed meanwhile")
        logger.info("model %s version %s removed", model, version)

    def _not_removable(self, model: str, version: str) -> ClientError:
        """Why ``version`` of ``model``, of which no record was found, cannot be removed."""
        served = self.registry.versions_of(model)
        if not served:
            return UnknownModel.named(model, self.registry.names())
        if any(found.version == version and trained_by(found) is None for found in served):
            return Conflict(
                f"version {version!r} of model {model!r} is installed, not made by a training: only trained versions "
                "are removed here (unload the model, or uninstall its plugin, instead)"
            )
        return NotFound(f"model {model!r} has no trained version {version!r}")

    def _add_log(self, job_id: str, level: str, line: str) -> None:
        self.until_saved(f"writing the log of job {job_id}", lambda: self.store.add_log(job_id, level, line))

    def _followed_by_every_worker(self, row: int) -> bool:
        """With ``--workers N``: wait until every worker has looked at the trained version in ``row``."""
        if self.shared is None:
            return True
        return wait_until_followed(self.shared, row, self.settings.workers, lambda: self.closing)
