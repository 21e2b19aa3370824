"""Shipping and reaching a server safely: ``stevedore-server build`` passes pip no option a ``--plugin`` value
smuggles in and writes no base image that is not an image reference into the Containerfile; the client
commands send the API key to the ``--url`` given only, never on to where a redirect points; and a server that
listens beyond this machine without keys says so in its log, once."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from stevedore_server.base.errors import BuildError
from stevedore_server.cli import main
from stevedore_server.deploy.image import BuildContext, containerfile, pip_wheel, write_context

from .venvs import COMMAND_TIMEOUT, INSTALLED, Server, Venv, describe

API_KEY = "a-key-for-this-server-only"


# -- a real HTTP server that records what reaches it -----------------------------------


@dataclass
class Recorder:
    """A loopback HTTP server that records each request's method, path and ``Authorization`` header, and
    answers it with ``redirect_to`` + path (302) if that is set, else ``{"jobs": []}``."""

    server: ThreadingHTTPServer
    redirect_to: str | None = None
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"


def handler_for(recorder: list[Recorder]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            (own,) = recorder
            own.requests.append((self.command, self.path, self.headers.get("Authorization")))
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            if own.redirect_to is not None:
                self.send_response(302)
                self.send_header("Location", own.redirect_to + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = json.dumps({"jobs": []}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def recorders() -> Iterator[list[Recorder]]:
    """Start recorders on loopback ports of their own: ``start()`` each; all stopped at the end."""
    started: list[Recorder] = []
    yield started
    for recorder in started:
        recorder.server.shutdown()
        recorder.server.server_close()


def start_recorder(started: list[Recorder], redirect_to: str | None = None) -> Recorder:
    own: list[Recorder] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(own))
    recorder = Recorder(server, redirect_to)
    own.append(recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    started.append(recorder)
    return recorder


# -- stevedore-server build ------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        ["--plugin", "--index-url=INDEX"],
        ["--plugin=--index-url=INDEX"],
        ["--plugin", str(INSTALLED / "good"), "--isolated-plugin", "--extra-index-url=INDEX"],
    ],
)
def test_a_plugin_that_looks_like_an_option_never_reaches_pip(
    options: list[str], recorders: list[Recorder], tmp_path: Path
) -> None:
    """Refused as a bad option value before anything runs: no context written, the index it names never asked."""
    index = start_recorder(recorders)
    context = tmp_path / "context"
    args = [option.replace("INDEX", index.url + "/simple") for option in options]
    result = CliRunner().invoke(main, ["build", *args, "--output-context", str(context)])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--" in result.output and "looks like an option" in result.output
    assert index.url in result.output
    assert not context.exists()
    assert index.requests == []


def test_pip_reads_every_requirement_as_one(recorders: list[Recorder], tmp_path: Path) -> None:
    """Behind the check, ``--`` before the requirements: a value starting with ``-`` is no option to pip."""
    index = start_recorder(recorders)
    with pytest.raises(BuildError, match="pip could not build the wheelhouse"):
        pip_wheel(tmp_path, [f"--index-url={index.url}/simple", "stevedore-test-nowhere-to-be-found"])
    assert index.requests == []


@pytest.mark.parametrize(
    "base_image",
    ["python:3.11-slim\nRUN touch /tmp/pwned", "python:3.11-slim AS install", "${EVIL}", "Python:3.11", " "],
)
def test_a_base_image_that_is_no_image_reference_is_refused(base_image: str, tmp_path: Path) -> None:
    context = tmp_path / "context"
    result = CliRunner().invoke(main, ["build", "--base-image", base_image, "--output-context", str(context)])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--base-image'" in result.output and "is not an image reference" in result.output
    assert not context.exists()
    # The functions check it too, for callers other than the command.
    with pytest.raises(BuildError, match="is not an image reference"):
        write_context(context, [], base_image)
    assert not context.exists()
    with pytest.raises(BuildError, match="is not an image reference"):
        containerfile(BuildContext(tmp_path, "1.0", ()), base_image)


@pytest.mark.venv
def test_a_plugin_and_a_base_image_as_they_should_be_make_the_context(tmp_path: Path) -> None:
    """A source directory and a registry's image with a port, a path and a tag: the context is written (pip
    builds the wheels, from the machine's configured index). The command as a user runs it, outside the
    repository (whose own metadata would stand for the installed core's)."""
    context = tmp_path / "context"
    base_image = "registry.example:5000/team/python:3.11-slim"
    args = ["build", "--plugin", str(INSTALLED / "good"), "--base-image", base_image, "--output-context", str(context)]
    command = [sys.executable, "-m", "stevedore_server", *args]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    assert result.returncode == 0, describe(result)
    assert f"ARG BASE_IMAGE={base_image}\n" in (context / "Containerfile").read_text()
    assert "stevedore-test-good==" in (context / "wheelhouse" / "requirements.txt").read_text()


# -- the client commands and redirects ---------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [["jobs", "list"], ["jobs", "show", "abc"], ["jobs", "cancel", "abc"], ["models", "load", "iris"]],
)
def test_the_client_follows_no_redirect_with_the_key(command: list[str], recorders: list[Recorder]) -> None:
    """A server redirecting to another port (another origin): the command fails naming the redirect, and the
    other origin never gets the key (nor any request)."""
    elsewhere = start_recorder(recorders)
    redirecting = start_recorder(recorders, redirect_to=elsewhere.url)
    result = CliRunner().invoke(main, [*command, "--url", redirecting.url], env={"STEVEDORE_API_KEY": API_KEY})
    assert elsewhere.requests == []
    assert [auth for _, _, auth in redirecting.requests] == [f"Bearer {API_KEY}"]  # the one asked: the key
    assert result.exit_code == 1, result.output
    assert f"302 from {redirecting.url}: a redirect to '{elsewhere.url}/" in result.output
    assert "not followed" in result.output


def test_the_client_still_talks_to_a_server_that_answers(recorders: list[Recorder]) -> None:
    server = start_recorder(recorders)
    result = CliRunner().invoke(main, ["jobs", "list", "--url", server.url], env={"STEVEDORE_API_KEY": API_KEY})
    assert result.exit_code == 0, result.output
    assert server.requests == [("GET", "/jobs?limit=50", f"Bearer {API_KEY}")]


# -- the warning of a server open to all -----------------------------------------------


def warnings_in(log: str) -> list[dict[str, Any]]:
    """The log's JSON lines at WARNING that say the server asks no key."""
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(line["level"] == "info" for line in lines), log  # it logged, as JSON lines
    return [line for line in lines if line["level"] == "warning" and "with no API keys" in line["message"]]


def served(tmp_path: Path, *args: str, **env: str) -> str:
    """The log of a real server with ``args`` once it is ready, after it stopped."""
    log_path = tmp_path / "server.log"
    running = Server.start(Venv(Path(sys.prefix), ()), log_path, "--log-format", "json", *args, **env)
    try:
        running.wait_for("/livez")
    finally:
        running.stop()
    return log_path.read_text()


@pytest.mark.server
def test_a_server_listening_beyond_this_machine_without_keys_warns_once(tmp_path: Path) -> None:
    """On every address, two workers: one line, from the process that starts them, saying how to set keys."""
    log = served(tmp_path, "--host", "0.0.0.0", "--workers", "2", "--plugins", "stevedore-sklearn-logreg")
    (warning,) = warnings_in(log)
    assert warning["logger"] == "stevedore.process"
    assert "listening on 0.0.0.0" in warning["message"] and "unauthenticated" in warning["message"]
    assert "STEVEDORE_API_KEYS" in warning["message"] and "--api-key-file" in warning["message"]


@pytest.mark.server
@pytest.mark.parametrize("where", ["with keys", "on loopback"])
def test_a_server_with_keys_or_on_loopback_does_not_warn(tmp_path: Path, where: str) -> None:
    if where == "with keys":
        log = served(tmp_path, "--host", "0.0.0.0", "--plugins", "stevedore-sklearn-logreg", STEVEDORE_API_KEYS=API_KEY)
    else:
        log = served(tmp_path, "--plugins", "stevedore-sklearn-logreg")
    assert warnings_in(log) == []
