"""Models in worker processes of their own (``[models.NAME] processes``) and in environments of their own
(``python``), against a real server and real wheels in fresh virtual environments."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from .documentation import block, page
from .venvs import Server, Venv, pinned_plugin, plugins_venv

pytestmark = [pytest.mark.venv, pytest.mark.server]

SPIN_SECRET = "secret detail of the spin model"
#: The numbers of docs/operations/processes.md: a monitor looks for idle worker processes that died "every 2 s",
#: and a call that runs "5 s past the model's timeout" gets its process killed (the tests hold the code to them,
#: not to its constants).
MONITOR_INTERVAL = 2.0
OVERRUN_GRACE = 5.0

CONFIG = """
[models.spin]
processes = 2
timeout = 20

[models.iris]
processes = 1
max_batch_size = 8
max_batch_time = 0.005
"""


@pytest.fixture(scope="module")
def cpu_venv(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """The core, the example plugin and the CPU-bound test plugin, installed from wheels."""
    # Its bin/python a link to the base interpreter, as `python3 -m venv` makes it (as the pinned "old" one).
    requirements = ["stevedore-server", "stevedore-sklearn-logreg", "stevedore-test-cpu"]
    return plugins_venv(tmp_path_factory.mktemp("cpu"), wheelhouse, ["cpu"], requirements, symlinks=True)


def start(environment: Venv, directory: Path, config: str, name: str = "server", args: tuple[str, ...] = ()) -> Server:
    path = directory / f"{name}.toml"
    path.write_text(config)
    server = Server.start(environment, directory / f"{name}.log", "--config", str(path), *args)
    server.wait_for("/readyz", deadline=120)
    return server


@pytest.fixture(scope="module")
def server(cpu_venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start(cpu_venv, tmp_path_factory.mktemp("processes"), CONFIG)
    try:
        yield running
    finally:
        running.stop()


def children(pid: int) -> set[int]:
    """The direct children of process ``pid`` (none once it is gone)."""
    found: set[int] = set()
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found |= {int(child) for child in (task / "children").read_text().split()}
    except OSError:  # it (or one of its threads) ended while being read
        pass
    return found


def descendants(pid: int) -> set[int]:
    """The children of process ``pid``, theirs, and so on (``--workers N``: the model's processes are the
    server workers' children)."""
    found = set()
    for child in children(pid):
        found |= {child} | descendants(child)
    return found


def workers_of(server: Server, model: str) -> set[int]:
    """The server's worker processes of ``model`` (their orders, in their environment, name it)."""
    found = set()
    for child in descendants(server.process.pid):
        try:
            environment = Path(f"/proc/{child}/environ").read_bytes()
        except OSError:
            continue
        if re.search(rb'STEVEDORE_WORKER=\{[^\x00]*"model":"' + model.encode() + rb'"', environment):
            found.add(child)
    return found


def ready_workers(server: Server, model: str) -> set[int]:
    """The worker processes of ``model`` running now that said they were ready (loaded and self-tested)."""
    said = re.findall(rf"model {re.escape(model)} version \S+: worker process \d+ \(pid (\d+)\) ready", server.log())
    return workers_of(server, model) & {int(pid) for pid in said}


def environment_of(pid: int) -> dict[str, str]:
    """The environment process ``pid`` was started with."""
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().split("=", 1) for entry in entries if entry)


def state(pid: int) -> str | None:
    """The process's state letter (R running, S sleeping, Z zombie, ...); None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def alive(pid: int) -> bool:
    return state(pid) not in (None, "Z")


def wait_until(condition: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {seconds} s: {what}")


def spin(server: Server, rows: list[object], timeout: float = 60) -> httpx.Response:
    return httpx.post(server.url + "/models/spin/predict", json=rows, timeout=timeout)


def test_a_model_in_processes_runs_in_as_many_processes_of_its_own(server: Server, cpu_venv: Venv) -> None:
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: spin(server, [300_000]), range(16)))
    assert all(answer.status_code == 200 for answer in answers), [a.text for a in answers]
    pids = {answer.json()["predictions"][0]["pid"] for answer in answers}
    assert pids == workers_of(server, "spin") and len(pids) == 2
    assert server.process.pid not in pids

    runs_in = httpx.get(server.url + "/models/spin").json()["metadata"]["runs_in"]
    assert runs_in["kind"] == "processes" and runs_in["processes"] == 2
    assert runs_in["python"] == str(cpu_venv.python)  # the server's own interpreter
    threads = httpx.get(server.url + "/models/iris-proba").json()["metadata"]["runs_in"]
    assert threads["kind"] == "threads"

    def memory_reported() -> bool:
        text = httpx.get(server.url + "/metrics").text
        found = re.findall(
            r'stevedore_model_process_resident_bytes\{model="spin",process="(\d)",version="1"\} (\S+)', text
        )
        return {index for index, _ in found} == {"0", "1"} and all(float(value) > 10e6 for _, value in found)

    wait_until(memory_reported, 10, "the resident memory of both spin processes in /metrics")


def test_validation_and_model_errors_are_as_for_any_model(server: Server) -> None:
    invalid = spin(server, ["many"])
    assert invalid.status_code == 422 and invalid.json()["details"][0]["path"] == "/0"

    failed = httpx.post(server.url + "/models/spin/predict", json=[-1], headers={"X-Request-ID": "spin-test-42"})
    assert failed.status_code == 500
    body = failed.json()
    assert SPIN_SECRET not in failed.text and "Traceback" not in failed.text
    # Lines logged on the event loop are written at its next turn (logs.TurnHandler): maybe after the answer.
    wait_until(lambda: body["error_id"] in server.log(), 5, f"the error id {body['error_id']} in the log")
    log = server.log()
    logged = log[log.index(body["error_id"]) :]
    assert "In the worker process" in logged and f"ValueError: {SPIN_SECRET}" in logged
    # The model's own line, written in its worker process, carries the request's id, as in the server.
    assert re.search(r"WARNING stevedore_test_cpu \[spin-test-42\] refusing a negative row", log), log[-3000:]
    assert spin(server, [10]).status_code == 200  # the process that raised serves on


def test_v2_and_batching_run_through_the_process_too(server: Server) -> None:
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    v2 = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [2, 4], "data": [*rows[0], *rows[1]]}]}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: httpx.post(server.url + "/v2/models/iris/infer", json=v2), range(32)))
    assert {tuple(answer.json()["outputs"][0]["data"]) for answer in answers} == {(0, 2)}
    plain = httpx.post(server.url + "/models/iris/predict", json=rows).json()
    assert plain["predictions"] == [0, 2]
    batches = re.search(
        r'stevedore_batch_size_count\{model="iris",version="1"\} (\S+)', httpx.get(server.url + "/metrics").text
    )
    assert batches is not None and float(batches.group(1)) >= 1


def events(response: httpx.Response) -> Iterator[tuple[str, dict[str, object]]]:
    """(event name, data) of each Server-Sent Event of ``response`` as it comes."""
    name = "message"
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield name, json.loads(line.removeprefix("data: "))
            name = "message"


def test_a_model_in_processes_streams_and_a_client_leaving_closes_its_generator(server: Server) -> None:
    url = server.url + "/models/spin/predict/stream"
    with httpx.stream("POST", url, json=[10, 20, 30], timeout=30) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        received = list(events(response))
    assert [name for name, _ in received] == ["message"] * 3 + ["end"]
    assert {data["pid"] for _, data in received[:3]} <= workers_of(server, "spin")

    headers = {"X-Request-ID": "stream-left-7"}
    with httpx.stream("POST", url, json=[10] * 100, headers=headers, timeout=30) as response:
        stream = events(response)
        assert [next(stream)[0], next(stream)[0]] == ["message", "message"]
    closed = r"stevedore_test_cpu \[stream-left-7\] stream closed after (\d+) items"
    wait_until(lambda: re.search(closed, server.log()), 10, "the generator's finally, in its worker process")
    found = re.search(closed, server.log())
    assert found is not None and 2 <= int(found.group(1)) < 100
    assert all(spin(server, [10]).status_code == 200 for _ in range(4))  # both processes serve on


def logged(server: Server, pattern: str) -> bool:
    return re.search(pattern, server.log()) is not None


def test_streams_holding_every_process_run_to_their_end_while_predicts_wait_for_one(
    cpu_venv: Venv, tmp_path: Path
) -> None:
    """Two streams hold both processes between their items, and two predicts arrive and wait for a process
    (on the model's two threads). Neither may wait on the other: the streams' items come to the end, then the
    predicts have the processes. (A stream used to need one of the model's threads for each next item, and the
    waiting predicts held them: both stalled until their time-out.)"""
    config = "[models.spin]\nprocesses = 2\ntimeout = 30\n"
    server = start(cpu_venv, tmp_path, config, args=("--log-level", "debug"))
    url = server.url + "/models/spin/predict/stream"
    try:
        with contextlib.ExitStack() as open_streams, ThreadPoolExecutor(2) as pool:
            responses = [
                open_streams.enter_context(httpx.stream("POST", url, json=[10] * 100, timeout=60)) for _ in range(2)
            ]
            streams = [events(response) for response in responses]
            firsts = [next(stream) for stream in streams]  # each stream now holds a process of its own
            assert {data["pid"] for _, data in firsts} == workers_of(server, "spin")
            predicts = [
                pool.submit(httpx.post, server.url + "/models/spin/predict", json=[10],
                            headers={"X-Request-ID": f"waiting-{n}"}, timeout=60)
                for n in range(2)
            ]  # fmt: skip
            for n in range(2):
                waits = rf"stevedore\.isolation \[waiting-{n}\] model spin version 1: every worker process is busy"
                wait_until(functools.partial(logged, server, waits), 30, f"predict waiting-{n} waiting for a process")
            rests = [list(stream) for stream in streams]
            answers = [predict.result(timeout=60) for predict in predicts]
        for rest in rests:
            assert [name for name, _ in rest] == ["message"] * 99 + ["end"], rest[-1]
        assert [answer.status_code for answer in answers] == [200, 200], [answer.text for answer in answers]
    finally:
        server.stop()


def test_a_worker_process_whose_server_dies_mid_stream_ends_quietly(cpu_venv: Venv, tmp_path: Path) -> None:
    """The server gone is an ordinary end for a worker process: it closes the model's generator and exits with
    one line, not with a traceback of the broken socket."""
    server = start(cpu_venv, tmp_path, "[models.spin]\nprocesses = 1\n")
    url = server.url + "/models/spin/predict/stream"
    headers = {"X-Request-ID": "orphaned-stream"}
    with httpx.stream("POST", url, json=[10] * 600, headers=headers, timeout=30) as response:
        _, first = next(events(response))
        worker = first["pid"]
        assert isinstance(worker, int), first
        server.process.send_signal(signal.SIGKILL)
        server.stop()  # reaps it
    wait_until(lambda: not alive(worker), 30, "the worker process ending after its server")
    log = server.log()
    assert "Traceback" not in log and "Error:" not in log, log[-3000:]
    assert len(re.findall(r"\[orphaned-stream\] the server closed the socket", log)) == 1, log[-3000:]
    assert logged(server, r"stevedore_test_cpu \[orphaned-stream\] stream closed after \d+ items"), log[-3000:]


def test_model_processes_ending_under_several_server_workers_print_no_warning(cpu_venv: Venv, tmp_path: Path) -> None:
    """With ``--workers 2`` (prometheus-client's multiprocess mode), a model process replaced or stopped has
    its memory series handled without the client's warning on stderr (label removal is not implemented there)."""
    server = start(cpu_venv, tmp_path, "[models.spin]\nprocesses = 1\n", args=("--workers", "2"))
    try:
        wait_until(lambda: len(ready_workers(server, "spin")) == 2, 60, "a spin process in each server worker")
        before = ready_workers(server, "spin")
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        seen = rf"worker process 0 \(pid {victim}\) was killed by SIGKILL while idle; starting a new one"
        wait_until(functools.partial(logged, server, seen), MONITOR_INTERVAL + 15, "the monitor seeing the death")
        wait_until(lambda: len(ready_workers(server, "spin") - before) == 1, 60, "a new spin process ready")
    finally:
        assert server.stop() == 0  # a graceful stop: each server worker stops its model's process too
    log = server.log()
    assert "UserWarning" not in log and "Removal of labels" not in log, log[-3000:]


def test_a_worker_process_killed_mid_request_fails_that_request_and_is_replaced(server: Server) -> None:
    before = workers_of(server, "spin")
    with ThreadPoolExecutor(2) as pool:
        long_calls = [pool.submit(spin, server, [400_000_000]) for _ in range(2)]  # one on each process
        wait_until(lambda: all(state(pid) == "R" for pid in before), 15, "both spin processes computing")
        for pid in before:
            subprocess.run(["kill", "-KILL", str(pid)], check=True)
        answers = [call.result(timeout=30) for call in long_calls]
    for answer in answers:
        assert answer.status_code == 500 and answer.json()["error_id"], answer.text
    # Each failure's log line may follow its answer by a moment (seen in CI: 1 ms after the other's access line).
    wait_until(
        lambda: server.log().count("was killed by SIGKILL during the call") >= 2, 10, "both deaths logged as such"
    )
    wait_until(lambda: len(workers_of(server, "spin")) == 2, 60, "two new spin processes")
    after = workers_of(server, "spin")
    assert not after & before
    assert {spin(server, [10]).json()["predictions"][0]["pid"] for _ in range(6)} <= after


def test_a_worker_process_that_dies_while_idle_is_replaced_before_any_request(server: Server) -> None:
    wait_until(lambda: len(ready_workers(server, "spin")) == 2, 60, "both spin processes ready")
    before = ready_workers(server, "spin")
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    # No request reaches the model until the new process is ready: only the pool's monitor can see the death.
    seen = rf"worker process \d+ \(pid {victim}\) was killed by SIGKILL while idle; starting a new one"
    wait_until(lambda: re.search(seen, server.log()), MONITOR_INTERVAL + 15, "the monitor seeing the death")
    wait_until(lambda: len(ready_workers(server, "spin") - before) == 1, 60, "a new spin process ready")
    after = ready_workers(server, "spin")
    assert len(after) == 2 and victim not in after
    served = {spin(server, [10]).json()["predictions"][0]["pid"] for _ in range(4)}
    assert after - before <= served <= after


def test_a_call_running_past_the_time_out_and_its_grace_has_its_process_killed_and_replaced(
    cpu_venv: Venv, tmp_path: Path
) -> None:
    """The rule of docs/operations/processes.md: the client has its 504 at the model's time-out, and the call's
    process is killed ``OVERRUN_GRACE`` (5) seconds later and replaced."""
    server = start(cpu_venv, tmp_path, "[models.spin]\nprocesses = 1\ntimeout = 1\n")
    try:
        wait_until(lambda: len(ready_workers(server, "spin")) == 1, 60, "the spin process ready")
        (overrunning,) = ready_workers(server, "spin")
        sent = time.monotonic()
        answer = spin(server, [10**9])  # about a minute of spinning
        assert answer.status_code == 504, answer.text
        wait_until(lambda: not alive(overrunning), OVERRUN_GRACE + 10, "the overrunning process killed")
        # The grace is a duration, so it is measured, but only from below, which no busy machine can break: the
        # pool starts counting once it has the call, which is after it was sent.
        assert time.monotonic() - sent >= 1 + OVERRUN_GRACE
        wait_until(lambda: len(ready_workers(server, "spin")) == 1, 60, "a new spin process ready")
        (replacement,) = ready_workers(server, "spin")
        assert replacement != overrunning
        assert spin(server, [10]).json()["predictions"][0]["pid"] == replacement
    finally:
        server.stop()


def test_worker_processes_end_with_the_server_even_when_it_is_killed(cpu_venv: Venv, tmp_path: Path) -> None:
    stopped = start(cpu_venv, tmp_path, CONFIG, "stopped")
    workers = workers_of(stopped, "spin") | workers_of(stopped, "iris")
    assert len(workers) == 3
    assert stopped.stop() == 0
    assert not any(alive(pid) for pid in workers)

    killed = start(cpu_venv, tmp_path, CONFIG, "killed")
    workers = workers_of(killed, "spin") | workers_of(killed, "iris")
    killed.process.send_signal(signal.SIGKILL)
    killed.stop()
    wait_until(lambda: not any(alive(pid) for pid in workers), 15, "the worker processes of a killed server end")


def test_a_bad_processes_setting_stops_the_server_naming_it(cpu_venv: Venv, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[models.spin]\nprocesses = 0\n")
    result = cpu_venv.run("stevedore-server", "check", "--config", str(config), check=False)
    assert result.returncode != 0
    assert f"setting models.spin.processes (in {config}, table [models.spin]): 0 is not from 1 to 256" in " ".join(
        (result.stdout + result.stderr).split()
    )


# -- models in environments of their own --------------------------------------------------------------------


@pytest.fixture(scope="module")
def pinned_environments(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Venv]:
    """Two virtual environments, each with one copy of the pinned plugin: one pins toolz 0.12.1, the other
    toolz 1.0.0 (the two cannot be installed together)."""
    root = tmp_path_factory.mktemp("pinned")
    environments = {}
    for label, pin in (("old", "0.12.1"), ("new", "1.0.0")):
        links = pinned_plugin(root, label, pin, wheelhouse)
        # One with its bin/python a link to the base interpreter, as `python3 -m venv` makes it (images do).
        environment = Venv.create(root / f"venv-{label}", wheelhouse, links, symlinks=label == "old")
        environment.install("stevedore-server", f"stevedore-test-pinned-{label}")
        environments[label] = environment
    return environments


def readme_example() -> str:
    """The settings file of the page on models in processes and environments."""
    return block("toml", "models in processes", page("operations/processes.md"))


def test_two_plugins_pinning_incompatible_versions_are_served_side_by_side(
    cpu_venv: Venv, pinned_environments: dict[str, Venv], tmp_path: Path
) -> None:
    old, new = pinned_environments["old"], pinned_environments["new"]
    # The page's example, its two models named as here, and a third model in a third environment.
    config = readme_example().replace("my-model", "spin").replace("legacy-model", "toolz-0")
    config = config.replace("/opt/venvs/legacy", str(old.path))
    config += f'\n[models.toolz-1]\npython = "{new.python}"\nprocesses = 2\n'
    server = start(cpu_venv, tmp_path, config)
    try:
        for model, environment, version, distribution in (
            ("toolz-0", old, "0.12.1", "stevedore-test-pinned-old"),
            ("toolz-1", new, "1.0.0", "stevedore-test-pinned-new"),
        ):
            answer = httpx.post(server.url + f"/models/{model}/predict", json=[1, 2])
            assert answer.status_code == 200, answer.text
            rows = answer.json()["predictions"]
            assert rows == [{"toolz": version, "prefix": str(environment.path)}] * 2
            metadata = httpx.get(server.url + f"/models/{model}").json()["metadata"]
            assert metadata["distribution"] == distribution
            assert metadata["runs_in"]["python"] == str(environment.python)
        assert spin(server, [10]).json()["predictions"][0]["pid"] in workers_of(server, "spin")
        iris = httpx.post(server.url + "/models/iris/predict", json=[[5.1, 3.5, 1.4, 0.2]])
        assert iris.status_code == 200  # the server's own plugins are served beside them
    finally:
        server.stop()
    nowhere = tmp_path / "nowhere.toml"
    nowhere.write_text(f'[models.nowhere]\npython = "{old.path}"\n')
    result = cpu_venv.run("stevedore-server", "check", "--config", str(nowhere), check=False)
    assert result.returncode != 0
    assert f"no plugin under {old.python} provides a model named 'nowhere'" in result.stdout + result.stderr


def test_another_interpreter_is_not_passed_pythonpath_pythonhome_or_virtual_env(
    cpu_venv: Venv, pinned_environments: dict[str, Venv], tmp_path: Path
) -> None:
    old = pinned_environments["old"]
    # A toolz on the server's PYTHONPATH: the model's own environment would import it, were the path passed on.
    shadow = tmp_path / "shadow"
    (shadow / "toolz").mkdir(parents=True)
    (shadow / "toolz" / "__init__.py").write_text('__version__ = "0.0.shadow"\n')
    config = tmp_path / "server.toml"
    config.write_text(f'[models.toolz-0]\npython = "{old.path}"\n')
    given = {"PYTHONPATH": str(shadow), "PYTHONHOME": sys.base_prefix, "PASSED_ON": "yes",
             "STEVEDORE_MAX_QUEUE": "32", "STEVEDORE_API_KEY": "a-clients-key"}  # fmt: skip
    server = Server.start(cpu_venv, tmp_path / "server.log", "--config", str(config), **given)
    try:
        server.wait_for("/readyz", deadline=120)
        own = environment_of(server.process.pid)
        assert {key: own[key] for key in given} == given and own["VIRTUAL_ENV"] == str(cpu_venv.path)
        (worker,) = workers_of(server, "toolz-0")
        theirs = environment_of(worker)
        assert theirs["PASSED_ON"] == "yes"  # the rest of the server's environment is passed on
        assert not {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"} & theirs.keys()
        # No setting of the server, nor a client's key: a worker takes its orders from STEVEDORE_WORKER alone.
        assert [key for key in theirs if key.startswith("STEVEDORE_")] == ["STEVEDORE_WORKER"]
        answer = httpx.post(server.url + "/models/toolz-0/predict", json=[1])
        assert answer.json()["predictions"] == [{"toolz": "0.12.1", "prefix": str(old.path)}]
    finally:
        server.stop()


def test_an_interpreter_that_cannot_run_stops_the_server_naming_it(cpu_venv: Venv, tmp_path: Path) -> None:
    config = tmp_path / "missing.toml"
    config.write_text(f'[models.spin]\npython = "{tmp_path / "no-such-venv"}"\n')
    result = cpu_venv.run("stevedore-server", "check", "--config", str(config), check=False)
    assert result.returncode != 0
    assert f"python = {tmp_path / 'no-such-venv'}" in result.stdout + result.stderr


def test_a_selection_may_name_a_plugin_installed_only_in_a_models_own_environment(
    cpu_venv: Venv, pinned_environments: dict[str, Venv], tmp_path: Path
) -> None:
    old, new = pinned_environments["old"], pinned_environments["new"]
    config = tmp_path / "environments.toml"
    config.write_text(f'[models.toolz-0]\npython = "{old.path}"\n\n[models.toolz-1]\npython = "{new.path}"\n')

    def check(*selection: str) -> str:
        result = cpu_venv.run("stevedore-server", "check", "--config", str(config), *selection, check=False)
        return result.stdout + result.stderr

    # Disabled there, its model is not found (the recovery from a plugin that breaks); the other one serves.
    disabled = check("--disable-plugins", "stevedore-test-pinned-old")
    assert "no installed plugin has this name" not in disabled, disabled
    assert f"no plugin under {old.python} provides a model named 'toolz-0'" in disabled
    assert re.search(r"^toolz-1 \S+ \(.*\): ok$", disabled, re.MULTILINE), disabled
    # A name installed nowhere is still refused, with the environments' plugins among those listed.
    typo = check("--disable-plugins", "stevedore-test-pinned-oldd")
    assert "--disable-plugins stevedore-test-pinned-oldd: no installed plugin has this name" in typo, typo
    assert "stevedore-test-pinned-new, stevedore-test-pinned-old" in typo
