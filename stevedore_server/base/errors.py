"""Every exception meant for a person: each becomes a clean HTTP error or CLI message at one edge.

The HTTP edge is ``frontends.app.EXCEPTION_HANDLERS`` (the stevedore and original routes)
and ``frontends.v2.rest.EXCEPTION_HANDLERS`` (the Open Inference Protocol's format);
the CLI turns ``StevedoreError`` into a ``click`` message.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

#: Seconds a client is told to wait after an overload.
RETRY_AFTER_SECONDS = 1
#: Seconds a client is told to wait when the job queue is full: a queued job waits for a running one to end.
JOB_QUEUE_RETRY_AFTER_SECONDS = 30


def quoted(value: str, limit: int) -> str:
    """A client's value as an error message repeats it: quoted and escaped (``repr``), cut short past ``limit``
    characters."""
    return repr(value[:limit]) + ("..." if len(value) > limit else "")


#: Characters of a client's name an error repeats.
SHOWN_NAME = 100
#: Names an "unknown name" message lists at most (the closest are suggested before them).
LISTED_NAMES = 30


def did_you_mean(name: str, names: Iterable[str], most: int = 3) -> str:
    """ "; did you mean 'iris'?" (or 'a' or 'b', up to ``most``) for the closest of ``names``, else nothing."""
    close = difflib.get_close_matches(name, list(names), n=most)
    return f"; did you mean {' or '.join(repr(match) for match in close)}?" if close else ""


def unknown_name(name: str, names: Iterable[str], kind: str = "models") -> str:
    """What follows "no model named 'irs'" in an "unknown name" message: the closest of ``names`` suggested,
    then the names themselves: "; did you mean 'iris'? (models: iris, iris-proba)"."""
    known = sorted(set(names))
    suggestion = did_you_mean(name, known)
    if not known:
        return f"{suggestion} (no {kind})"
    listed = ", ".join(known[:LISTED_NAMES])
    if len(known) > LISTED_NAMES:
        listed += f" and {len(known) - LISTED_NAMES} more"
    return f"{suggestion} ({kind}: {listed})"


class StevedoreError(Exception):
    """Base class of every error the server reports to a person."""


class StartupError(StevedoreError):
    """The server cannot start: duplicate models, rejected hooks, or a failure under --strict."""


class ReplicaLoadFailed(StartupError):
    """A model that failed to load or self-test on this replica, and why."""

    def __init__(self, name: str, version: str, reason: str) -> None:
        super().__init__(f"model {name!r} version {version!r} failed to load: {reason}")
        self.reason = reason


class UnknownPlugins(StartupError):
    """``--plugins`` or ``--disable-plugins`` names a plugin that is not installed: a typo would otherwise serve
    nothing, or fail to disable the plugin it meant."""


class SettingError(StartupError):
    """A setting's value is wrong: the message names the setting, where its value came from (the flag, the
    variable, the file and its table: ``located`` adds it once known) and what it should be, in plain words."""

    def __init__(self, setting: str, problem: str, origin: str | None = None) -> None:
        super().__init__(f"setting {setting}" + (f" ({origin})" if origin else "") + f": {problem}")
        self.setting = setting
        self.problem = problem
        self.origin = origin

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.setting, self.problem, self.origin)

    def located(self, origin: str | None) -> SettingError:
        """The error naming ``origin`` as where the value came from, unless it names one already."""
        if self.origin or not origin:
            return self
        return SettingError(self.setting, self.problem, origin)


class PluginError(StevedoreError):
    """A plugin is broken: its schema, fixture or self-test is wrong. The plugin's bug, not the client's."""


class UnsafeFormat(PluginError):
    """A model file in a format that runs code when read (pickle, joblib), which the operator did not allow."""


class ArtifactError(PluginError):
    """A model file cannot be had: missing, unreadable, unreachable, truncated, or not the pinned sha256
    (``base.storage.fetch``). The message is one line naming the URI, never its credentials."""


class NoTensorInterface(PluginError):
    """Why a predictor has no Open Inference Protocol (V2) interface; its other routes still work."""


class UntrustedArtifact(StevedoreError):
    """A trained version's recorded artifact is not inside its own job's artifact directory: it is never loaded
    (the operator reads why in the log)."""


class SelfTestFailed(AssertionError):
    """A predictor would not be served (``testing.self_test``, in a plugin's tests): its reason is the message."""


class UnexpectedAnswer(AssertionError):
    """A server answered other than a runtime's test expects (``kit.runtime_testing``): the request, the status and
    the body are in the message."""


class CheckFailed(AssertionError):
    """A package fails the automatic check of the pytest plugin: the message is what ``stevedore-server check``
    would print of it."""


class BuildError(StevedoreError):
    """The image cannot be built: no engine, a plugin pip cannot find, or the engine failed."""


class RemoteError(StevedoreError):
    """A running server refused a command's request, or could not be reached (``stevedore-server models``)."""


class SinkFailure(StevedoreError):
    """A payload log sink refused a record or could not be reached (its first failure logged, each counted).
    ``records``: how many records it lost (a sink that held several and lost them together says so)."""

    def __init__(self, message: str, records: int = 1) -> None:
        super().__init__(message)
        self.records = records


class ClientError(StevedoreError):
    """A request the server answers with an error status; carries the status and an optional list of details."""

    status_code = 400
    #: Extra response headers, such as Retry-After.
    headers: dict[str, str] = {}  # noqa: RUF012  (read-only)

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled whole, details too (a Ray replica sends its errors to the ingress)."""
        return type(self), (self.message, self.details)

    def to_anonymous(self) -> ClientError:
        """The error as told to a caller without a key while API keys are on (on an open route: a probe)."""
        return self

    def summary(self) -> str:
        """The message with any details folded in, for a protocol whose errors are one string."""
        if not self.details:
            return self.message
        return self.message + ": " + "; ".join(f"{d.get('path') or '/'}: {d.get('message')}" for d in self.details)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class BadRequest(ClientError):
    status_code = 400


class InvalidParameter(BadRequest):
    """A request's parameter is wrong, or is not one its model takes: ``param`` names it (the OpenAI-compatible
    routes answer it as OpenAI's ``param``)."""

    def __init__(self, message: str, param: str | None = None, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message, details)
        self.param = param

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.message, self.param, self.details)


class PayloadTooLarge(ClientError):
    status_code = 413


class NotFound(ClientError):
    status_code = 404


class Unsupported(NotFound):
    """The model exists but does not serve what the request asks of it (a text capability, or not where it
    runs): 404, told apart from an unknown model (the OpenAI-compatible routes' ``model_not_found``)."""


class UnknownModel(NotFound):
    """No model of the name asked for: the message suggests the closest names and lists them (``named``), except
    to a caller without a key, to whom the names are not told (``to_anonymous``)."""

    def __init__(self, lead: str, hint: str = "") -> None:
        super().__init__(lead + hint)
        self.lead = lead
        self.hint = hint

    @classmethod
    def named(cls, name: str, names: Iterable[str], lead: str | None = None) -> UnknownModel:
        """ "no model named 'irs'; did you mean 'iris'? (models: iris, iris-proba)", or ``lead`` before the hint."""
        lead = lead or f"no model named {quoted(name, SHOWN_NAME)}"
        return cls(lead, unknown_name(name, names))

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.lead, self.hint)

    def to_anonymous(self) -> ClientError:
        return NotFound(self.lead)


class NotReady(ClientError):
    status_code = 503


class TrafficProblem(ValueError):
    """What is wrong with a traffic table or a split, in plain words (without where it came from): a setting's
    error (``SettingError``) for the file's tables, ``InvalidSplit`` for a client's."""


class InvalidSplit(BadRequest):
    """A traffic split a client sent (``PUT /traffic/NAME``) is not one: the message says what is wrong."""


class Conflict(ClientError):
    """The request does not fit the resource's state, such as cancelling a job that has finished."""

    status_code = 409


class Unauthenticated(ClientError):
    """No accepted API key: gRPC's status, and the HTTP middleware's refusal (``challenge`` its
    ``WWW-Authenticate``), which each protocol's error edge writes in its own format."""

    status_code = 401

    def __init__(self, message: str, challenge: str | None = None) -> None:
        super().__init__(message)
        if challenge is not None:
            self.headers = {"WWW-Authenticate": challenge}

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.message, self.headers.get("WWW-Authenticate"))


class KeyNotAccepted(Unauthenticated):
    """A key was sent, but it is none of the accepted ones (not a key missing): OpenAI's ``invalid_api_key``."""


class Forbidden(ClientError):
    """Refused whoever asks this way: an API key without the scope the route needs, a write from another site."""

    status_code = 403


class InvalidPayload(ClientError):
    """The payload does not match the model's JSON Schema."""

    status_code = 422


class Overloaded(ClientError):
    """The model's queue is full: try again shortly."""

    status_code = 503
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}  # noqa: RUF012  (read-only)


class TooManyRequests(ClientError):
    """A bound on what clients hold at once is reached (followers of job logs): try again shortly."""

    status_code = 429
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}  # noqa: RUF012  (read-only)


class JobQueueFull(TooManyRequests):
    """``max_queued_jobs`` jobs wait to run already: try again once some have started (in a while, not at once)."""

    headers = {"Retry-After": str(JOB_QUEUE_RETRY_AFTER_SECONDS)}  # noqa: RUF012  (read-only)


class Unavailable(ClientError):
    """Something the request needs is down for now (the jobs database): try again shortly."""

    status_code = 503
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}  # noqa: RUF012  (read-only)


class LoadFailed(NotReady):
    """A lazy model failed to load: every request gets this until its back-off has passed."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(max(1, round(retry_after)))}

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.message, self.retry_after)

    def again(self, retry_after: float | None = None) -> LoadFailed:
        """The same error for another request (with the back-off left, if given)."""
        return LoadFailed(self.message, self.retry_after if retry_after is None else retry_after)


class InferenceTimeout(ClientError):
    """An inference outlived its time-out."""

    status_code = 504


class PipelineStepFailed(ClientError):
    """A hard step of a pipeline failed with a client's error (its input did not fit, its model was not ready,
    it timed out...): answered with that step's own status and headers, the pipeline, node and step named."""

    def __init__(
        self,
        message: str,
        details: list[dict[str, Any]] | None = None,
        status_code: int = 400,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, details)
        self.status_code = status_code
        self.headers = dict(headers or {})

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.message, self.details, self.status_code, self.headers)


class ClientGone(ClientError):
    """The client disconnected before its answer: nobody reads this error, but the access log and the metrics
    record the request so (499, nginx's "client closed request")."""

    status_code = 499


class LegacyBadRequest(BadRequest):
    """An ml-py-stevedore route's error: that server answered 400 with FastAPI's ``detail`` body."""

    def body(self) -> dict[str, Any]:
        return {**super().body(), "detail": self.message}


class ModelFailure(StevedoreError):
    """A model raised or returned junk while serving a request: a 500 with an error id."""

    def __init__(self, model: str, version: str, action: str, error: BaseException) -> None:
        super().__init__(f"model {model!r} version {version!r} failed to {action}: {type(error).__name__}")
        self.error = error


class WorkerFailure(Exception):
    """A model's call failed in its worker process (``isolation``): the model raised there, or the process died
    or overran the time-out. The runtime makes it a ``ModelFailure``; the client never sees its text."""

    def __init__(self, summary: str, remote_traceback: str = "") -> None:
        super().__init__(summary)
        if remote_traceback:  # logged with the error id, under the server's own frames
            self.add_note("In the worker process:\n" + remote_traceback.rstrip())


class ServerGone(Exception):
    """A model's worker process found its server's end of the socket closed (the server stopped, or died) while
    answering it: the worker ends, with one log line."""


class ReportedFailure(StevedoreError):
    """A ``ModelFailure`` in another process (a Ray replica), logged there with its traceback under
    ``error_id``: the client gets the same 500, with that id."""

    def __init__(self, message: str, error_id: str) -> None:
        super().__init__(message)
        self.error_id = error_id

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (str(self), self.error_id)
