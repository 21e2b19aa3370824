"""``LLM=1 make bench``: the OpenAI-compatible routes (issue 30): streamed text against the same generator called
in process, and embeddings batched against unbatched.

Servers of the ``ours`` environment serve the bench plugin ``plugins/token_stream`` (``token-stream``, a generator
of short pieces doing nothing else, and ``hashed-embed``, an embedding with a small encoder's cost a call) and,
where ``contrib/text_ngram`` exists, the contrib text plugin (``ngram-lm``, ``ngram-embed``), both on the server's
``PYTHONPATH`` with their distributions recorded as an installer would. Each round:

- streams: each language model's ``complete`` and ``chat`` called in process (``servers/direct_stream.py``, in
  the same environment), then streamed by the server, ``POST /v1/completions`` and ``/v1/chat/completions`` with
  ``stream: true``, one stream after another on one kept-alive connection, read by this process's own client
  (the Server-Sent Events' ``data:`` lines, each chunk's JSON decoded) and by the official ``openai`` SDK (the
  ``llm-client`` environment, ``servers/openai_stream.py``). For each: tokens a second over the whole stream, the
  time to the first chunk with text (from the request sent), and the server's cost a chunk, (stream - direct) /
  chunks, and (with our client) the CPU time of the server's processes a chunk;
- embeddings: ``POST /v1/embeddings`` with one short input at 32 connections (wrk, ``post.lua``), each embedding
  model batched (``max_batch_size = 32``, ``max_batch_time`` 1 ms, from a ``[models.NAME]`` table) on one server
  and unbatched (``max_batch_size = 1``) on another: req/s, p50, p99, the server's CPU a request;
- LitServe (the ``litserve`` environment, ``servers/litserve_llm.py``) serving the bench plugin's very work (its
  ``compute.py``) with its ``OpenAISpec`` (chat completions only) and ``OpenAIEmbeddingSpec``: the same streams
  and embeddings, where its environment installs.

The servers' BLAS use one thread (``OPENBLAS_NUM_THREADS=1`` and the like): with wrk on the same two cores, a
second BLAS thread would only contend with it.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import statistics
import subprocess
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .client import NotReady, wait_ready
from .load import LoadFailed, RequestFiles, run_wrk
from .procs import Server, free_ports, tree_cpu_seconds
from .records import Records
from .settings import BENCH_DIR, REPO_DIR, BenchSettings
from .venvs import ENVIRONMENTS, InstallFailed, ensure, ours_for, record_distribution

logger = logging.getLogger("bench")

PLUGIN = BENCH_DIR / "plugins" / "token_stream"
DISTRIBUTION = "stevedore-bench-token-stream"
ENTRY_POINTS = (
    "[stevedore.predictors]\n"
    "token-stream = stevedore_bench_token_stream.models:TokenStream\n"
    "hashed-embed = stevedore_bench_token_stream.models:HashedEmbed\n"
)
#: The contrib text plugin, measured where it exists (its source on the server's PYTHONPATH, as tests do).
TEXT_SOURCE = REPO_DIR / "contrib" / "text_ngram"
TEXT_DISTRIBUTION = "stevedore-text-ngram"
TEXT_FACTORY = "stevedore_text_ngram.predictor:predictors"
TEXT_ENTRY_POINTS = f"[stevedore.predictors]\ntext = {TEXT_FACTORY}\n"
DIRECT_SCRIPT = BENCH_DIR / "servers" / "direct_stream.py"
SDK_SCRIPT = BENCH_DIR / "servers" / "openai_stream.py"
LITSERVE_SCRIPT = BENCH_DIR / "servers" / "litserve_llm.py"
PROMPT = "Once upon a time"  # the scripts' too
EMBED_INPUT = "The quick brown fox jumps over the lazy dog"
BATCHED = {"max_batch_size": 32, "max_batch_time": 0.001}
UNBATCHED = {"max_batch_size": 1}
SINGLE_THREADED = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ROUTES = {"complete": "/v1/completions", "chat": "/v1/chat/completions"}
MIN_STREAMS = 3
#: The length of the streams timed for their first chunk alone: a 10,000-token stream gives few samples in a run.
SHORT_TOKENS = 16
#: LitServe's CI (tests/perf_test/stream): one stream of 10,000 tokens, at least this many a second ...
LITSERVE_TOKENS_PER_S = 3500
#: ... and its first token within 5 ms.
LITSERVE_TTFT_MS = 5.0


class WrongAnswer(Exception):
    pass


@dataclass(frozen=True)
class StreamModel:
    """A language model streamed: its factory for the direct calls, the parameters of every call."""

    name: str
    factory: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Running:
    """A started server: its HTTP port, and its root process (wrk's load is charged to its tree's CPU)."""

    port: int
    pid: int


@dataclass(frozen=True)
class Plugins:
    stream_models: tuple[StreamModel, ...]
    embed_models: tuple[str, ...]
    pythonpath: str
    #: The plugins the servers load (``--plugins``): the environment's own are left out.
    distributions: tuple[str, ...]


@dataclass(frozen=True)
class Run:
    """What every measurement of the run needs."""

    settings: BenchSettings
    run_dir: Path
    records: Records
    venv: Path
    plugins: Plugins
    #: The ``llm-client`` environment's Python (the openai SDK); None where it could not be installed.
    sdk_python: Path | None
    #: The ``litserve`` environment's Python; None where it could not be installed.
    litserve_python: Path | None

    def log(self, name: str) -> Path:
        return self.run_dir / "logs" / name


def plugins(run_dir: Path) -> Plugins:
    site = record_distribution(run_dir / "work" / "site", DISTRIBUTION, ENTRY_POINTS)
    streams = [StreamModel("token-stream", "stevedore_bench_token_stream.models:TokenStream", {"max_tokens": 10_000})]
    embeds = ["hashed-embed"]
    path = [str(site), str(PLUGIN)]
    distributions = [DISTRIBUTION]
    if (TEXT_SOURCE / "stevedore_text_ngram").is_dir():
        record_distribution(site, TEXT_DISTRIBUTION, TEXT_ENTRY_POINTS)
        path.append(str(TEXT_SOURCE))
        streams.append(StreamModel("ngram-lm", TEXT_FACTORY, {"max_tokens": 10_000, "temperature": 0, "seed": 30}))
        embeds.append("ngram-embed")
        distributions.append(TEXT_DISTRIBUTION)
    else:
        logger.info("llm: %s is missing: the text plugin's models are not measured", TEXT_SOURCE)
    return Plugins(tuple(streams), tuple(embeds), ":".join(path), tuple(distributions))


def bench(settings: BenchSettings, run_dir: Path, records: Records) -> str:
    venv = ours_for("llm", settings, run_dir, records)
    sdk_python = peer_environment("llm-client", settings, run_dir, records)
    litserve_python = peer_environment("litserve", settings, run_dir, records)
    run = Run(settings, run_dir, records, venv, plugins(run_dir), sdk_python, litserve_python)
    for round_number in range(1, settings.rounds + 1):
        logger.info("llm: round %d of %d", round_number, settings.rounds)
        run_round(run, round_number)
    text = table(records.items, settings, run.plugins)
    (run_dir / "llm.txt").write_text(text + "\n")
    return text


def run_round(run: Run, round_number: int) -> None:
    for model in run.plugins.stream_models:
        for kind in ROUTES:
            try:
                direct(run, model, kind, round_number)
            except WrongAnswer as error:
                run.records.failure(f"{model.name} {kind}", "direct", str(error), round=round_number)
    for mode, options in (("unbatched", UNBATCHED), ("batched", BATCHED)):
        try:
            with started(run, options, f"llm-{mode}-r{round_number}") as server:
                if mode == "unbatched":
                    streams(run, "ours", server, run.plugins.stream_models, ROUTES, round_number)
                embeddings(run, "ours", server, run.plugins.embed_models, mode, round_number)
        except (NotReady, LoadFailed, OSError) as error:
            run.records.failure(f"ours {mode}", "round", str(error), round=round_number)
    if run.litserve_python is not None:
        litserve_round(run, run.litserve_python, round_number)


def litserve_round(run: Run, python: Path, round_number: int) -> None:
    """LitServe with the bench plugin's work: its streams (chat completions only: its OpenAISpec has no
    completions) and its embeddings, unbatched then batched."""
    for mode, options in (("unbatched", UNBATCHED), ("batched", BATCHED)):
        try:
            with litserve_started(run, python, options, f"litserve-{mode}-r{round_number}") as server:
                if mode == "unbatched":
                    streams(run, "litserve", server, run.plugins.stream_models[:1], ("chat",), round_number)
                embeddings(run, "litserve", server, run.plugins.embed_models[:1], mode, round_number)
        except (NotReady, LoadFailed, OSError) as error:
            run.records.failure(f"litserve {mode}", "round", str(error), round=round_number)


def peer_environment(name: str, settings: BenchSettings, run_dir: Path, records: Records) -> Path | None:
    """The Python of a client's or peer's environment; None (and a failure line) where it cannot be installed."""
    log = run_dir / "logs" / f"install-{name}.log"
    try:
        installed = ensure(ENVIRONMENTS[name], settings.venvs, settings.python, log)
    except InstallFailed as error:
        records.failure(name, "install", str(error))
        return None
    records.add("versions", environment=name, targets=["llm"], versions=installed.versions)
    return installed.python


@contextmanager
def started(run: Run, options: dict[str, Any], label: str) -> Iterator[Running]:
    """Ours, serving the plugins' models, each embedding model with ``options`` in its ``[models.NAME]`` table."""
    work = run.run_dir / "work" / label
    work.mkdir(parents=True)
    (work / "stevedore.toml").write_text("".join(model_table(name, options) for name in run.plugins.embed_models))
    port, grpc_port = free_ports(2)
    argv = [
        str(run.venv / "bin" / "stevedore-server"), "run", "--host", "127.0.0.1", "--port", str(port),
        "--grpc-port", str(grpc_port), "--config", str(work / "stevedore.toml"),
        "--plugins", ",".join(run.plugins.distributions),
    ]  # fmt: skip
    env = {**os.environ, **SINGLE_THREADED, "PYTHONPATH": run.plugins.pythonpath}
    with serving(run, label, argv, env, work, port, "/readyz") as server:
        yield server


@contextmanager
def litserve_started(run: Run, python: Path, options: dict[str, Any], label: str) -> Iterator[Running]:
    """LitServe, the bench plugin's ``compute.py`` on its ``PYTHONPATH``, embeddings batched as ``options`` say."""
    work = run.run_dir / "work" / label
    work.mkdir(parents=True)
    (port,) = free_ports(1)
    argv = [str(python), str(LITSERVE_SCRIPT), str(port), str(options["max_batch_size"])]
    env = {**os.environ, **SINGLE_THREADED, "PYTHONPATH": str(PLUGIN)}
    with serving(run, label, argv, env, work, port, "/health") as server:
        yield server


@contextmanager
def serving(
    run: Run, label: str, argv: list[str], env: dict[str, str], work: Path, port: int, ready_path: str
) -> Iterator[Running]:
    server = Server(label, argv, env, work, run.log(f"{label}.server.log"))
    try:
        wait_ready(f"http://127.0.0.1:{port}{ready_path}", server, run.settings.startup_timeout)
        yield Running(port, server.pid)
    finally:
        server.stop(run.settings.stop_grace)


def model_table(name: str, options: dict[str, Any]) -> str:
    return f"[models.{name}]\n" + "".join(f"{key} = {value}\n" for key, value in options.items()) + "\n"


# -- streams -------------------------------------------------------------------------------------------------


def direct(run: Run, model: StreamModel, kind: str, round_number: int) -> None:
    """The generator iterated in a process of the server's environment, while no server runs."""
    argv = [str(run.venv / "bin" / "python"), str(DIRECT_SCRIPT), model.factory, model.name, kind,
            json.dumps(model.params), str(run.settings.duration)]  # fmt: skip
    env = {**os.environ, **SINGLE_THREADED, "PYTHONPATH": run.plugins.pythonpath}
    for call in run_script(argv, env, run.log(f"llm-direct-{model.name}-{kind}-r{round_number}.log")):
        run.records.add("llm-stream", round=round_number, server="-", model=model.name, route=kind, client="direct",
                        **call)  # fmt: skip


def run_script(argv: list[str], env: dict[str, str], log: Path) -> list[dict[str, Any]]:
    """A script printing one JSON line a call; its output kept in ``log``."""
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    except subprocess.TimeoutExpired:
        raise WrongAnswer(f"{Path(argv[1]).name} did not finish within 600 s") from None
    log.write_text(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}")
    if done.returncode != 0:
        raise WrongAnswer(f"{Path(argv[1]).name} exited with {done.returncode} (log: {log})")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def streams(
    run: Run, server: str, running: Running, models: tuple[StreamModel, ...], kinds: Iterable[str],
    round_number: int,
) -> None:  # fmt: skip
    """Each model's streams, read by our client then by the SDK; with our client, the server's CPU time too (its
    process tree's, over the measured streams): a chunk's cost that the other work on the machine skews less."""
    for model in models:
        for kind in kinds:
            common = {"round": round_number, "server": server, "model": model.name, "route": kind}
            try:
                warm_up(running.port, model, kind)
                cpu_before = tree_cpu_seconds(running.pid)
                calls = http_streams(run.settings, running.port, model, kind)
                cpu = tree_cpu_seconds(running.pid) - cpu_before
                for call in calls:
                    run.records.add("llm-stream", client="http", **common, **call)
                chunks = sum(call["pieces"] for call in calls)
                run.records.add("llm-stream-cpu", **common, cpu_us_per_chunk=round(cpu / max(chunks, 1) * 1e6, 2))
                short = replace(model, params={**model.params, "max_tokens": SHORT_TOKENS})
                for call in http_streams(run.settings, running.port, short, kind):
                    run.records.add("llm-stream-short", **common, ttft_us=call["ttft_us"])
                if run.sdk_python is not None:
                    log = run.log(f"llm-openai-{server}-{model.name}-{kind}-r{round_number}.log")
                    for call in sdk_streams(run, run.sdk_python, running.port, model, kind, log):
                        run.records.add("llm-stream", client="openai", **common, **call)
            except (WrongAnswer, OSError, http.client.HTTPException) as error:
                run.records.failure(f"{server} {model.name} {kind}", "stream", str(error), round=round_number)


def sdk_streams(run: Run, python: Path, port: int, model: StreamModel, kind: str, log: Path) -> list[dict[str, Any]]:
    argv = [str(python), str(SDK_SCRIPT), f"http://127.0.0.1:{port}/v1", model.name, kind,
            json.dumps(model.params), str(run.settings.duration)]  # fmt: skip
    return run_script(argv, {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}, log)


def http_streams(settings: BenchSettings, port: int, model: StreamModel, kind: str) -> list[dict[str, Any]]:
    """Streams one after another on one kept-alive connection for ``duration`` s (at least 3)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    body = json.dumps(request_body(model, kind)).encode()
    try:
        calls: list[dict[str, Any]] = []
        stop_at = time.monotonic() + settings.duration
        while len(calls) < MIN_STREAMS or time.monotonic() < stop_at:
            calls.append(one_stream(connection, ROUTES[kind], body))
        return calls
    finally:
        connection.close()


def warm_up(port: int, model: StreamModel, kind: str) -> None:
    """One stream not measured: a route's first call (imports, caches) is not its steady state."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        one_stream(connection, ROUTES[kind], json.dumps(request_body(model, kind)).encode())
    finally:
        connection.close()


def request_body(model: StreamModel, kind: str) -> dict[str, Any]:
    prompt = {"messages": [{"role": "user", "content": PROMPT}]} if kind == "chat" else {"prompt": PROMPT}
    return {"model": model.name, **prompt, "stream": True, **model.params}


def one_stream(connection: http.client.HTTPConnection, path: str, body: bytes) -> dict[str, Any]:
    """One stream read to ``data: [DONE]``: the time to the first chunk with text and to the end, from the request
    sent; the chunks with text and the CRC-32 of their text."""
    pieces, crc, first = 0, 0, None
    began = time.perf_counter()
    connection.request("POST", path, body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    if response.status != 200:
        raise WrongAnswer(f"{path} answered {response.status}: {response.read()[:300]!r}")
    for line in response:
        if not line.startswith(b"data: "):
            continue
        if line.startswith(b"data: [DONE]"):
            break
        for text in chunk_texts(json.loads(line[6:]), path):
            if first is None:
                first = time.perf_counter()
            pieces += 1
            crc = zlib.crc32(text.encode(), crc)
    ended = time.perf_counter()
    response.read()  # the end of the chunked body: the connection is kept for the next stream
    ttft = (first if first is not None else ended) - began
    return {"ttft_us": round(ttft * 1e6, 1), "total_us": round((ended - began) * 1e6, 1), "pieces": pieces,
            "text_crc": crc}  # fmt: skip


def chunk_texts(chunk: dict[str, Any], path: str) -> Iterator[str]:
    if "error" in chunk:
        raise WrongAnswer(f"{path}: an error event: {chunk['error']}")
    for choice in chunk.get("choices", ()):
        text = choice["delta"].get("content") if "delta" in choice else choice.get("text")
        if text:
            yield text


# -- embeddings ------------------------------------------------------------------------------------------------


def embeddings(run: Run, server: str, running: Running, models: tuple[str, ...], mode: str, round_number: int) -> None:
    for model in models:
        body = {"model": model, "input": EMBED_INPUT}
        try:
            dimensions = check_embedding(running.port, body)
        except (WrongAnswer, OSError, http.client.HTTPException) as error:
            run.records.failure(f"{server} {model} {mode}", "embeddings", str(error), round=round_number)
            continue
        files = request_files(run.run_dir / "work" / "requests", model, body)
        url = f"http://127.0.0.1:{running.port}/v1/embeddings"
        label = f"llm-embed-{server}-{model}-{mode}-r{round_number}"
        if run.settings.warmup > 0:
            run_wrk(url, files, 2, 32, run.settings.warmup, run.log(f"{label}.warmup.wrk"))
        cpu_before = tree_cpu_seconds(running.pid)
        result = run_wrk(url, files, 2, 32, run.settings.duration, run.log(f"{label}.wrk"))
        cpu = tree_cpu_seconds(running.pid) - cpu_before
        run.records.add("llm-embed", round=round_number, server=server, model=model, mode=mode, dimensions=dimensions,
                        rps=round(result.rps, 1), p50_ms=result.p50_ms, p99_ms=result.p99_ms, errors=result.errors,
                        cpu_us_per_request=round(cpu / max(result.requests, 1) * 1e6, 1))  # fmt: skip


def check_embedding(port: int, body: dict[str, Any]) -> int:
    """One request answered with one finite vector: its length."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/v1/embeddings", json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise WrongAnswer(f"/v1/embeddings answered {response.status}: {answer[:300]!r}")
    data = json.loads(answer)["data"]
    if len(data) != 1 or not data[0]["embedding"]:
        raise WrongAnswer(f"/v1/embeddings: not one vector: {answer[:300]!r}")
    return len(data[0]["embedding"])


def request_files(directory: Path, name: str, body: Any) -> RequestFiles:
    directory.mkdir(parents=True, exist_ok=True)
    files = RequestFiles(directory / f"embed-{name}.body", directory / f"embed-{name}.headers")
    files.body.write_text(json.dumps(body))
    files.headers.write_text("Content-Type: application/json\n")
    return files


# -- the table ---------------------------------------------------------------------------------------------------


def median_of(items: list[dict[str, Any]], key: str, **match: Any) -> float | None:
    found = [item[key] for item in items if all(item.get(name) == value for name, value in match.items())]
    found = [value for value in found if value is not None]
    return statistics.median(found) if found else None


def table(items: list[dict[str, Any]], settings: BenchSettings, found: Plugins) -> str:
    lines = [
        f"llm: {settings.rounds} round(s); streams one after another for {settings.duration:g} s a case (at least 3) "
        "after one not measured, medians over the streams of every round; wrk runs of "
        f"{settings.duration:g} s after {settings.warmup:g} s of warm-up, medians over the rounds",
        "",
        *stream_lines(items, found),
        "",
        *embed_lines(items, found),
    ]
    failures = [f"!! {r['target']} (round {r.get('round')}): {r['stage']}: {r['error']}"
                for r in items if r["kind"] == "failure"]  # fmt: skip
    return "\n".join(lines + failures)


STREAM_ROWS = (("-", "direct"), ("ours", "http"), ("ours", "openai"), ("litserve", "http"), ("litserve", "openai"))


def stream_lines(items: list[dict[str, Any]], found: Plugins) -> list[str]:
    lines = [
        "one stream at a time: direct, the generator iterated in process; http, this harness's client on one "
        "kept-alive connection; openai, the official SDK. us/chunk: (stream - direct) / chunks, wall time; "
        "CPU us/chunk: the server's process tree's CPU time over the chunks (http only); TTFT16: the TTFT of "
        f"{SHORT_TOKENS}-token streams, many more (http only)",
        f"{'model':<13} {'route':<21} {'server':<9} {'client':<7} {'chunks':>6} {'tokens/s':>9} {'TTFT ms':>8} "
        f"{'TTFT16':>8} {'us/chunk':>8} {'CPU us/chunk':>12}  LitServe's CI: >= {LITSERVE_TOKENS_PER_S} tokens/s, "
        f"TTFT < {LITSERVE_TTFT_MS:g} ms",
    ]
    for model in found.stream_models:
        for kind, route in ROUTES.items():
            case = [item for item in items if item["kind"] in ("llm-stream", "llm-stream-cpu", "llm-stream-short")
                    and item["model"] == model.name and item["route"] == kind]  # fmt: skip
            lines += case_lines(case, model.name, route)
    return lines


def case_lines(case: list[dict[str, Any]], model: str, route: str) -> list[str]:
    """A row for each server and client measured."""
    streamed = [item for item in case if item["kind"] == "llm-stream"]
    direct_total = median_of(streamed, "total_us", client="direct")
    direct_text = texts_of([item for item in streamed if item["client"] == "direct"])
    lines = []
    for server, client in STREAM_ROWS:
        measured = [item for item in streamed if item["server"] == server and item["client"] == client]
        total, ttft, chunks = (median_of(measured, key) for key in ("total_us", "ttft_us", "pieces"))
        if total is None or ttft is None or not chunks:
            continue
        rate = chunks / total * 1e6
        overhead = "" if client == "direct" or direct_total is None else f"{(total - direct_total) / chunks:.1f}"
        cpu = median_of(case, "cpu_us_per_chunk", kind="llm-stream-cpu", server=server) if client == "http" else None
        short = median_of(case, "ttft_us", kind="llm-stream-short", server=server) if client == "http" else None
        verdict = "" if client == "direct" else litserve_verdict(rate, ttft / 1000)
        if client != "direct" and direct_text and texts_of(measured) != direct_text:
            verdict += "; !! its text differs from the direct call's"
        lines.append(f"{model:<13} {route:<21} {server:<9} {client:<7} {chunks:>6.0f} {rate:>9.0f} "
                     f"{ttft / 1000:>8.3f} {shown(short and short / 1000, 3):>8} {overhead:>8} {shown(cpu, 1):>12}  "
                     f"{verdict}")  # fmt: skip
    return lines


def texts_of(items: list[dict[str, Any]]) -> set[tuple[int, int]]:
    """The distinct texts (chunks and CRC) the calls gave: one, and the direct call's, where the server is right."""
    return {(item["pieces"], item["text_crc"]) for item in items}


def litserve_verdict(tokens_per_s: float, ttft_ms: float) -> str:
    rate = "met" if tokens_per_s >= LITSERVE_TOKENS_PER_S else "NOT met"
    first = "met" if ttft_ms < LITSERVE_TTFT_MS else "NOT met"
    return f"tokens/s {rate}, TTFT {first}"


EMBED_COLUMNS = (("rps", 8, 0), ("p50_ms", 8, 2), ("p99_ms", 8, 2), ("cpu_us_per_request", 10, 0))


def embed_lines(items: list[dict[str, Any]], found: Plugins) -> list[str]:
    lines = [
        "POST /v1/embeddings, one short input, 32 connections (wrk); batched: at most 32 requests a call, waiting "
        "at most 1 ms (ours: max_batch_size, max_batch_time; LitServe: max_batch_size, batch_timeout)",
        f"{'model':<13} {'server':<9} {'mode':<10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>10} "
        f"{'errors':>6}",
    ]
    for model in found.embed_models:
        for server in ("ours", "litserve"):
            rates = {}
            for mode in ("unbatched", "batched"):
                measured = [item for item in items if item["kind"] == "llm-embed" and item["model"] == model
                            and item["server"] == server and item["mode"] == mode]  # fmt: skip
                if not measured:
                    continue
                figures = {key: median_of(measured, key) for key, _, _ in EMBED_COLUMNS}
                errors = sum(item["errors"] for item in measured)
                rates[mode] = figures
                cells = " ".join(f"{shown(figures[key], digits):>{width}}" for key, width, digits in EMBED_COLUMNS)
                lines.append(f"{model:<13} {server:<9} {mode:<10} {cells} {errors:>6}")
            lines += ratio_lines(f"{model:<13} {server:<9}", rates)
    return lines


def ratio_lines(label: str, rates: dict[str, dict[str, float | None]]) -> list[str]:
    if "batched" not in rates or "unbatched" not in rates:
        return []
    batched, unbatched = rates["batched"], rates["unbatched"]
    parts = []
    for key, name in (("rps", "req/s"), ("p50_ms", "p50"), ("p99_ms", "p99")):
        if batched[key] and unbatched[key]:
            parts.append(f"{name} {batched[key] / unbatched[key]:.2f}x")  # type: ignore[operator]
    return [f"{label} batched / unbatched: {', '.join(parts)}"] if parts else []


def shown(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"
