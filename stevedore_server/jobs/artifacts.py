"""What a training's artifact becomes: kept under the state directory, served here as a new version, and
recorded in the store for every server process (with ``--workers N``, once every worker has looked at it)."""

from __future__ import annotations

import logging

from .child import describe
from .context import JobsContext
from .launch import RunningJob
from .records import TrainedVersion, now
from .versions import FOLLOW_TIMEOUT, forget_artifact, keep_artifact, version_of, wait_until_followed

logger = logging.getLogger("stevedore.jobs")


class ArtifactKeeper(JobsContext):
    """The part of the jobs that serves the versions trainings make."""

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
                self.serve_trained(trained)
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
        if not self._followed_by_every_worker(row):
            late = f"not every worker looked at the new version {trained.version} within {FOLLOW_TIMEOUT:g} s"
            self._add_log(job.id, "warning", late)
        return trained.version

    def _add_log(self, job_id: str, level: str, line: str) -> None:
        self.until_saved(f"writing the log of job {job_id}", lambda: self.store.add_log(job_id, level, line))

    def _followed_by_every_worker(self, row: int) -> bool:
        """With ``--workers N``: wait until every worker has looked at the trained version in ``row``."""
        if self.shared is None:
            return True
        return wait_until_followed(self.shared, row, self.settings.workers, lambda: self.closing)
