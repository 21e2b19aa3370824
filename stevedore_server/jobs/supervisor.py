"""Supervising one running job: a thread per job reads what its process sends through its pipe (progress,
log lines, result or error) and writes it to the store, then reads the process's exit status: a job that raised,
or whose process died, ends failed with the reason. Cancel and shutdown: SIGTERM to the job's process group,
SIGKILL after ``job_grace_period``.

While the database is down, the job runs on: its log lines and progress wait in memory and are written once the
database is back, and how it ended is written then too (``until_saved``)."""

from __future__ import annotations

import logging
import signal
import time

import orjson

from stevedore_server.base.errors import Unavailable
from stevedore_server.base.pids import exit_description

from .artifacts import ArtifactKeeper
from .launch import RunningJob, signal_group
from .records import JobState

logger = logging.getLogger("stevedore.jobs")


#: Seconds between a supervisor's looks at a cancel asked through another server process.
CANCEL_POLL_INTERVAL = 1.0
#: Seconds between two tries to write a job's log lines and progress while the database is down.
SAVE_RETRY_INTERVAL = 1.0


class JobSupervisor(ArtifactKeeper):
    """The part of the jobs that follows each running job to its end."""

    def _supervise(self, entry: RunningJob) -> None:
        try:
            self._follow(entry)
            entry.process.join()
            self._finish(entry)
        except Exception:
            logger.exception("supervising job %s failed", entry.job.id)
            try:
                self.store.finish(entry.job.id, JobState.FAILED, error="the server lost track of the job")
            except Exception:  # the database too: the next server finds the job interrupted
                logger.exception("job %s: its end could not be recorded", entry.job.id)
        finally:
            entry.reader.close()
            if self.metrics is not None:
                self.metrics.jobs_running.labels(entry.job.model, entry.job.kind).dec()
            with self.lock:
                self.running.pop(entry.job.id, None)
            self.wake.set()

    def _follow(self, entry: RunningJob) -> None:
        """Read the job's messages until its process closes the pipe; SIGKILL when its grace period is over."""
        next_cancel_check = time.monotonic() + CANCEL_POLL_INTERVAL
        while True:
            if entry.reader.poll(0.2):
                try:
                    data = entry.reader.recv_bytes()
                except (EOFError, OSError):
                    return
                self._handle(entry, data)
            elif not entry.process.is_alive() and not entry.reader.poll(0):
                return
            now = time.monotonic()
            if entry.kill_at is not None and now >= entry.kill_at:
                signal_group(entry.process, signal.SIGKILL)
                entry.kill_at = None
            if entry.unsaved_logs or entry.unsaved_progress:
                self._save_unless_waiting(entry)
            if entry.stop_reason is None and now >= next_cancel_check:
                next_cancel_check = now + CANCEL_POLL_INTERVAL
                self._look_for_cancel(entry)

    def _look_for_cancel(self, entry: RunningJob) -> None:
        """Stop the job if a cancel was asked through another server process (none is seen while the database is
        down: it is looked for again a second later)."""
        try:
            job = self.store.get(entry.job.id)
        except Unavailable as error:
            self.database_down("looking for cancels", error)
            return
        if job is not None and job.cancel_requested:
            self._stop(entry, "cancel")

    def _save_unless_waiting(self, entry: RunningJob) -> None:
        """``_save``, unless the database was down at the last try less than ``SAVE_RETRY_INTERVAL`` ago."""
        if time.monotonic() >= entry.save_again_at:
            self._save(entry)

    def _save(self, entry: RunningJob) -> None:
        """Write the job's log lines and last progress not written yet; kept for a second try if the database is
        down."""
        try:
            self._write_unsaved(entry)
        except Unavailable as error:
            self.database_down(f"writing what job {entry.job.id} reported", error)
            entry.save_again_at = time.monotonic() + SAVE_RETRY_INTERVAL
        else:
            self.database_up()

    def _write_unsaved(self, entry: RunningJob) -> None:
        while entry.unsaved_logs:
            level, line = entry.unsaved_logs[0]
            self.store.add_log(entry.job.id, level, line)
            entry.unsaved_logs.pop(0)
        if entry.unsaved_progress is not None:
            self.store.progress(entry.job.id, *entry.unsaved_progress)
            entry.unsaved_progress = None

    def _handle(self, entry: RunningJob, data: bytes) -> None:
        message = orjson.loads(data)
        kind = message.get("type")
        if kind == "progress":
            entry.unsaved_progress = (message["fraction"], message["message"])
            self._save_unless_waiting(entry)
        elif kind == "log":
            self._log(entry, message["level"], message["line"])
        elif kind == "result":
            entry.result, entry.has_result = message["result"], True
        elif kind == "error":
            entry.error = message["error"]

    def _log(self, entry: RunningJob, level: str, line: str) -> None:
        """Keep a line of the job's log, up to ``max_job_log_lines``; then say how many more were dropped."""
        entry.log_lines += 1
        if entry.log_lines <= self.settings.max_job_log_lines:
            entry.unsaved_logs.append((level, line))
            self._save_unless_waiting(entry)

    def _finish(self, entry: RunningJob) -> None:
        job_id = entry.job.id
        dropped = entry.log_lines - self.settings.max_job_log_lines
        if dropped > 0:
            entry.unsaved_logs.append(("warning", f"{dropped} more log lines dropped (max_job_log_lines)"))
        self.until_saved(f"writing what job {job_id} reported", lambda: self._write_unsaved(entry))
        signal_group(entry.process, signal.SIGKILL)  # whatever the job left behind in its group
        state, error = outcome(entry, self.stopping())
        result = entry.result if state is JobState.SUCCEEDED else None
        if state is JobState.SUCCEEDED and isinstance(result, dict) and isinstance(result.get("artifact"), str):
            result = {**result, "served_version": self._serve_artifact(entry, result["artifact"])}
        finished = self.until_saved(
            f"recording how job {job_id} ended", lambda: self.store.finish(job_id, state, result=result, error=error)
        )
        if finished:
            self._count(entry.job, state, time.monotonic() - entry.started)
            level = logging.INFO if state is JobState.SUCCEEDED else logging.WARNING
            logger.log(level, "job %s %s%s", job_id, state, f": {error}" if error else "")

    def _stop(self, entry: RunningJob, reason: str) -> None:
        """SIGTERM to the job's process group now, SIGKILL after the grace period (its supervisor sends it)."""
        if entry.stop_reason is not None:
            return
        entry.stop_reason = reason
        logger.info("job %s: stopping (%s)", entry.job.id, reason)
        signal_group(entry.process, signal.SIGTERM)
        entry.kill_at = time.monotonic() + self.settings.job_grace_period


def outcome(entry: RunningJob, server_stopping: bool) -> tuple[JobState, str | None]:
    """The final state of a job whose process has ended, and why it did not succeed.

    A process that died without a word while the server was stopping was stopped with it, whoever sent the
    signal: interrupted, not failed (a job that reported its own error failed)."""
    if entry.stop_reason == "cancel":
        return JobState.CANCELLED, "cancelled"
    if entry.stop_reason == "shutdown":
        return JobState.INTERRUPTED, "the server stopped"
    if entry.has_result:
        return JobState.SUCCEEDED, None
    if server_stopping and entry.error is None:
        return JobState.INTERRUPTED, "the server stopped"
    if entry.error is not None:
        return JobState.FAILED, entry.error
    return JobState.FAILED, f"the job's process {exit_description(entry.process.exitcode)} without a result"
