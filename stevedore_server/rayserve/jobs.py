"""Jobs on Ray: a training (or a long predict) runs in a Ray actor of its own, with the resources its model's
settings ask (``ray_actor_options``: ``num_cpus``, ``num_gpus``, ``memory``, custom resources), on whichever node
has them; the version it makes is served by a deployment of its own.

The jobs themselves stay the ingress's (``stevedore_server.jobs``: the queue,
the store, the logs, cancel, the versions recorded): only where a job's
process runs changes (``launcher``, the jobs' ``JobLauncher``). The actor loads
the model from the plugins installed on its node and runs the job as a job's
process does (``jobs.child.run``); what the job reports (progress, log lines,
its result or error) is queued in the actor, and a thread of the ingress
(``ActorJob``) takes it from there and hands it on, through a socket, to the
job's supervisor as a local process's messages. An artifact the training
returns is in the actor's working directory, on its node: the ingress fetches
it into the job's working directory (a tar archive through Ray's object
store), where the jobs keep it as they keep a local job's.

Cancel asks the actor to stop (``TrainContext.cancelled()``); once the grace
period has passed the actor is killed, and it is always killed once its job
has ended. An actor belongs to the ingress replica that started it: when that
replica dies, Ray stops the actor, and the next ingress finds the job
interrupted.

A trained version is served by a deployment ``NAME:VERSION`` in an application
of its own (``live``: Serve cannot add a deployment to a running application),
whose replicas (``TrainedReplica``) unpack the artifact they are given and load
the version from it: the artifact travels with the deployment's arguments, so
replicas on any node can load it (it is kept in Ray's object store, a few
hundred megabytes at most is reasonable).
"""

from __future__ import annotations

import functools
import io
import logging
import queue
import shutil
import signal
import socket
import tarfile
import tempfile
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
import ray
from anyio import to_thread
from ray import serve
from ray.actor import ActorHandle
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from stevedore_server.base import tracing
from stevedore_server.base.errors import BadRequest, StartupError
from stevedore_server.base.settings import Settings
from stevedore_server.core import startup
from stevedore_server.core.server import ModelServer
from stevedore_server.core.startup import Loaded
from stevedore_server.jobs.child import Channel, describe, job_logger, job_span, run
from stevedore_server.jobs.launch import JobLauncher, JobProcess, trace_orders
from stevedore_server.jobs.records import Job
from stevedore_server.plugins.loading import load_model
from stevedore_server.predictor import Predictor
from stevedore_server.processes.predictor import ProcessPredictor

from . import live
from .config import deployment_name, model_options, settings_from_args
from .replica import ModelReplica

logger = logging.getLogger("stevedore.rayserve")

#: Seconds the ingress waits at most for a job's next messages in one call to its actor.
POLL_SECONDS = 0.5
#: Threads of a job's actor: the job, the ingress taking its messages, and a cancel or an artifact asked meanwhile.
ACTOR_THREADS = 4
#: Seconds an actor whose job has ended gets to remove its working directory.
CLOSE_SECONDS = 10.0
#: Characters of Ray's reason a job whose actor died keeps in its error.
MAX_CAUSE = 300
#: The exit code of a job whose actor died or was killed (as a process killed by SIGKILL).
KILLED = -signal.SIGKILL


def launcher(settings: Settings) -> JobLauncher:
    """The jobs' launcher of the ingress: each job in an actor of its own (``JobActor``)."""

    def launch(predictor: Any, job: Job, workdir: Path) -> tuple[JobProcess, Connection]:
        options = model_options(settings, predictor)["ray_actor_options"]
        actor_class = ray.remote(JobActor).options(max_concurrency=ACTOR_THREADS, **options)
        actor = actor_class.remote({"settings": settings.document()}, predictor.name, predictor.version)
        done = actor.run.remote(job.kind, job.params, trace_orders(job))
        ours, theirs = socket.socketpair()
        process = ActorJob(actor, done, Connection(theirs.detach()), workdir, job.id)
        process.start()
        return process, Connection(ours.detach())

    return launch


class QueuedConnection:
    """What ``jobs.child.Channel`` sends through, in an actor: a queue the ingress takes the messages from."""

    def __init__(self, messages: queue.Queue[bytes]) -> None:
        self.messages = messages

    def send_bytes(self, data: bytes) -> None:
        self.messages.put(data)


class JobActor:
    """The actor running one job: the model loaded from the plugins installed on its node, then the job run on
    a thread of it as in a job's process (``jobs.child.run``), its messages queued for the ingress."""

    def __init__(self, settings: dict[str, Any], name: str, version: str) -> None:
        self.settings = settings_from_args(settings)
        self.name, self.version = name, version
        self.messages: queue.Queue[bytes] = queue.Queue()
        self.cancel = threading.Event()
        self.workdir = Path(tempfile.mkdtemp(prefix="stevedore-job-"))

    def run(self, kind: str, params: Any, orders: dict[str, Any]) -> None:
        channel = Channel(QueuedConnection(self.messages))  # type: ignore[arg-type]
        job_log = job_logger(channel)
        tracing.configure(self.settings.tracing)
        job_log.info("running on Ray node %s", ray.get_runtime_context().get_node_id())
        try:
            with job_span(orders, kind, self.name, self.version):
                predictor = self.load()
                try:
                    run(channel, job_log, predictor, kind, params, str(self.workdir), self.cancel)
                finally:
                    predictor.unload()
        except Exception as error:  # the model did not load here: the job fails, saying why
            job_log.error("the job could not run: %s", describe(error))
            channel.send({"type": "error", "error": describe(error)})

    def load(self) -> Predictor:
        """The job's model, loaded and self-tested from the plugins installed on this node."""
        candidates, _, _ = startup.find(self.settings)
        found = [c for c in candidates if (c.predictor.name, c.predictor.version) == (self.name, self.version)]
        if not found:
            raise StartupError(f"no plugin installed on this node provides model {self.name!r} "
                               f"version {self.version!r}")  # fmt: skip
        loaded = load_model(found[0].predictor, found[0].source)
        if not loaded.ready:
            raise StartupError(f"the model could not be loaded for the job: {loaded.reason}")
        if isinstance(loaded.predictor, ProcessPredictor):  # its jobs run in its worker interpreter (``launch``)
            loaded.predictor.unload()
            raise StartupError("on Ray, a job of a model in worker processes (processes, python) is not run yet")
        return loaded.predictor

    def take(self, timeout: float) -> list[bytes]:
        """The messages queued since the last call, waiting up to ``timeout`` seconds for the first."""
        try:
            taken = [self.messages.get(timeout=timeout) if timeout > 0 else self.messages.get_nowait()]
        except queue.Empty:
            return []
        while True:
            try:
                taken.append(self.messages.get_nowait())
            except queue.Empty:
                return taken

    def stop(self) -> None:
        """Ask the job to stop (``TrainContext.cancelled()``)."""
        self.cancel.set()

    def artifact(self, path: str) -> bytes:
        """The artifact at ``path`` (a file or a directory in this job's working directory) as a tar archive."""
        found = (self.workdir / path).resolve()
        if not found.is_relative_to(self.workdir.resolve()) or not found.exists():
            raise FileNotFoundError(f"the artifact {path!r} is no file in the job's workdir")
        return pack(found)

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


class ActorJob:
    """A job's actor as the jobs see a job's process (``JobProcess``): a thread takes the actor's messages and
    sends them through ``writer`` (the artifact of a result fetched into ``workdir`` first), and ends with the
    job, with its exit code: 0, or ``KILLED`` for an actor that died or was killed."""

    def __init__(self, actor: ActorHandle, done: Any, writer: Connection, workdir: Path, job_id: str) -> None:
        self.actor = actor
        self.done = done
        self.writer = writer
        self.workdir = workdir
        self.exit: int | None = None
        self.thread = threading.Thread(target=self.follow, name=f"ray-job-{job_id}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    @property
    def pid(self) -> int | None:
        return None  # no process here: nothing for ``os.killpg``, nor for a successor's recovery

    @property
    def exitcode(self) -> int | None:
        return self.exit

    def is_alive(self) -> bool:
        return self.thread.is_alive()

    def join(self) -> None:
        self.thread.join()

    def send_signal(self, signum: int) -> None:
        """SIGTERM asks the job to stop; any other signal (SIGKILL) kills its actor."""
        try:
            if signum == signal.SIGTERM:
                self.actor.stop.remote()
            else:
                ray.kill(self.actor)
        except Exception as error:  # gone already
            logger.debug("a job's actor could not be signalled: %s", describe(error))

    def follow(self) -> None:
        try:
            self.exit = self.forward_all()
        except Exception as error:
            logger.exception("following a job's actor failed")
            self.send({"type": "error", "error": f"the job's actor could not be followed: {describe(error)}"})
            self.exit = KILLED
        finally:
            self.writer.close()

    def forward_all(self) -> int:
        """Hand on the actor's messages until its job has ended and they are all taken; the exit code."""
        while True:
            finished = bool(ray.wait([self.done], timeout=0)[0])
            try:
                batch: list[bytes] = ray.get(self.actor.take.remote(0 if finished else POLL_SECONDS))
            except RayActorError as error:
                return self.died(error)
            for data in batch:
                self.forward(data)
            if finished and not batch:
                break
        try:
            ray.get(self.done)
        except RayActorError as error:
            return self.died(error)
        try:  # its working directory removed before the supervisor kills it
            ray.get(self.actor.close.remote(), timeout=CLOSE_SECONDS)
        except Exception as error:
            logger.warning("a job's actor did not remove its working directory: %s", describe(error))
        return 0

    def died(self, error: RayActorError) -> int:
        """The job's actor died (killed, its process aborted, its node lost): the job's error says so (unless it
        was stopped on purpose, which its state says)."""
        cause = str(error).strip().splitlines()[0][:MAX_CAUSE] if str(error).strip() else type(error).__name__
        self.send({"type": "error", "error": f"its Ray actor died: {cause}"})
        return KILLED

    def forward(self, data: bytes) -> None:
        message = orjson.loads(data)
        result = message.get("result") if message.get("type") == "result" else None
        if isinstance(result, dict) and isinstance(result.get("artifact"), str):
            message["result"] = {**result, "artifact": self.fetch(result["artifact"])}
        self.send(message)

    def fetch(self, artifact: str) -> str:
        """The artifact, from the actor's node into the job's working directory here: its path here (the
        actor's, if it could not be fetched: the job then says why its version is not served)."""
        try:
            packed: bytes = ray.get(self.actor.artifact.remote(artifact))
            return str(unpack(packed, self.workdir))
        except Exception as error:
            line = f"the artifact could not be fetched from the job's node: {describe(error)}"
            self.send({"type": "log", "level": "warning", "line": line})
            return artifact

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.writer.send_bytes(orjson.dumps(message, default=str))
        except OSError:  # the supervisor is gone (the server stopping)
            logger.debug("a job's message was dropped: its supervisor is gone")


def pack(path: Path) -> bytes:
    """A file or a directory as a tar archive of one entry, named as it is."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        tar.add(path, arcname=path.name)
    return archive.getvalue()


def unpack(packed: bytes, directory: Path) -> Path:
    """Unpack an archive of ``pack`` into ``directory`` (nothing outside it: the ``data`` filter); its entry."""
    directory.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(packed), mode="r") as tar:
        names = {member.name.split("/")[0] for member in tar.getmembers()}
        if len(names) != 1:
            raise ValueError("an artifact's archive holds one entry")
        tar.extractall(directory, filter="data")
    return directory / names.pop()


# -- the versions trainings made --------------------------------------------------------------------------------


class TrainedReplica(ModelReplica):
    """A replica of a trained version's deployment: the version made from its base model's installed plugin and
    the artifact the deployment was given, unpacked on this replica's node."""

    async def __init__(  # type: ignore[misc]
        self, settings: dict[str, Any], name: str, version: str, base_version: str, artifact: bytes
    ) -> None:
        self.base_version = base_version
        self.artifact = artifact
        await super().__init__(settings, name, version)

    def load_server(self, name: str, version: str) -> ModelServer:
        candidates, _, hooks = startup.find(self.settings)
        base = next((c for c in candidates if (c.predictor.name, c.predictor.version) == (name, self.base_version)),
                    None)  # fmt: skip
        if base is None:
            raise StartupError(f"no installed plugin provides model {name!r} version {self.base_version!r} here")
        directory = Path(tempfile.mkdtemp(prefix="stevedore-trained-"))
        predictor = base.predictor.trained(unpack(self.artifact, directory), version)
        model = load_model(predictor, base.source)
        return startup.build_server(self.settings, Loaded((model,), (), hooks), serves_http=False)


async def deploy_trained(
    settings: Settings, model_args: dict[str, Any], predictor: Predictor, base_version: str
) -> DeploymentHandle:
    """Deploy a trained version (``predictor``, made from version ``base_version`` of its model, with its artifact
    in this node's state directory) in an application of its own, and wait until it runs; its handle. BadRequest
    with Serve's reason if it does not deploy (nothing is left of it)."""
    if predictor.artifact is None:
        raise BadRequest(f"the new version {predictor.version} of {predictor.name!r} has no artifact")
    artifact = await to_thread.run_sync(pack, Path(predictor.artifact))
    name = deployment_name(predictor.name, predictor.version)
    deployment = serve.deployment(TrainedReplica, name=name, **model_options(settings, predictor))
    application = deployment.bind(model_args, predictor.name, predictor.version, base_version, artifact)
    run_app = functools.partial(serve.run, application, name=live.application_name(name), route_prefix=None)
    try:
        await to_thread.run_sync(run_app)
    except Exception as error:
        logger.error("model %s version %s: its deployment failed: %s", predictor.name, predictor.version, error)
        await live.remove(name)
        raise BadRequest(f"the new version {predictor.version} of {predictor.name!r} did not deploy: {error}") from None
    logger.info("model %s version %s (trained): deployed as application %s", predictor.name, predictor.version,
                live.application_name(name))  # fmt: skip
    return serve.get_deployment_handle(name, app_name=live.application_name(name))
