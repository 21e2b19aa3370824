"""Model files by URI (``base.storage.fetch``): local paths, a real HTTP server and a real S3-compatible server
(moto's server mode) on loopback, the cache that spares a restart any network access, and every refusal."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from stevedore_server.base import storage
from stevedore_server.base.errors import ArtifactError, PluginError
from stevedore_server.base.storage import fetch
from stevedore_server.kit.loopback import free_ports

from .s3 import Bucket, s3_bucket

MODEL = b"not really a model, but bytes to hash " * 1000
MODEL_SHA = hashlib.sha256(MODEL).hexdigest()
OTHER_SHA = "0" * 64


# -- a real HTTP server ---------------------------------------------------------------------------------------


@dataclass
class Served:
    """What the test server serves, and the paths it was asked for."""

    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    #: Seconds between two chunks of a response (a slow server).
    pause: float = 0.0


class Handler(BaseHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:
        served = self.server.served
        served.requests.append(self.path)
        path = self.path.partition("?")[0]
        if path == "/truncated":  # promises more than it sends, then closes the connection
            self.send_response(200)
            self.send_header("Content-Length", str(len(MODEL)))
            self.end_headers()
            self.wfile.write(MODEL[:100])
            return
        if path == "/hung":  # headers, then nothing
            self.send_response(200)
            self.send_header("Content-Length", str(len(MODEL)))
            self.end_headers()
            self.wfile.flush()
            time.sleep(5)
            return
        body = served.files.get(path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for start in range(0, len(body), 4096):
            self.wfile.write(body[start : start + 4096])
            time.sleep(served.pause)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    served: Served


@pytest.fixture
def http_server() -> Iterator[tuple[str, Served]]:
    """A real HTTP server on a loopback port, on a thread: its URL and what it serves."""
    server = Server(("127.0.0.1", free_ports(1)[0]), Handler)
    server.served = Served(files={"/models/model.joblib": MODEL})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.served
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def refusal(uri: str, cache_dir: Path, sha256: str | None = None) -> str:
    """The message of the ``ArtifactError`` that fetching ``uri`` raises."""
    with pytest.raises(ArtifactError) as refused:
        fetch(uri, cache_dir, sha256)
    return str(refused.value)


def cache_files(cache: Path) -> list[str]:
    """Every file of the cache but its lock, relative to it."""
    if not cache.exists():
        return []
    return sorted(str(path.relative_to(cache)) for path in cache.rglob("*") if path.is_file() and path.name != ".lock")


# -- local files ----------------------------------------------------------------------------------------------


def test_a_local_file_or_folder_is_served_where_it_is(tmp_path: Path) -> None:
    model = tmp_path / "model.joblib"
    model.write_bytes(MODEL)
    cache = tmp_path / "cache"
    assert fetch(str(model), cache) == model
    assert fetch(model.as_uri(), cache) == model
    assert fetch(model.as_uri(), cache, sha256=MODEL_SHA.upper()) == model
    assert fetch(str(tmp_path), cache) == tmp_path
    assert not cache.exists()  # nothing copied


def test_a_local_file_not_its_pin_or_missing_or_a_pinned_folder_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "model.joblib"
    model.write_bytes(MODEL)
    cache = tmp_path / "cache"
    mismatch = refusal(str(model), cache, OTHER_SHA)
    assert mismatch == f"sha256 mismatch for {model}: expected {OTHER_SHA}, got {MODEL_SHA}"
    absent = tmp_path / "absent.joblib"
    assert refusal(str(absent), cache) == f"no such file or folder: {absent}"
    assert refusal("file:///nowhere/model.onnx", cache) == "no such file or folder: file:///nowhere/model.onnx"
    assert refusal(str(tmp_path), cache, MODEL_SHA) == f"sha256 pins a file, {tmp_path} is a folder"
    assert refusal(str(model), cache, "abc") == f"the sha256 of {model} is not 64 hexadecimal digits: 'abc'"
    assert issubclass(ArtifactError, PluginError)  # a failed model, never a client's error


def test_an_unknown_scheme_or_a_store_whose_extra_is_missing_names_what_to_do(tmp_path: Path) -> None:
    unknown = refusal("ftp://host/model.pkl", tmp_path)
    assert unknown.startswith("unknown scheme 'ftp' in ftp://host/model.pkl: give a local path, file://, http(s)://")
    for uri, extra, package in (("gs://bucket/model.bst", "gcs", "gcsfs"), ("az://box/model.onnx", "azure", "adlfs")):
        if importlib.util.find_spec(package) is not None:
            continue
        assert refusal(uri, tmp_path) == f"{uri} needs the {extra} extra: pip install 'stevedore-server[{extra}]'"


# -- http(s) --------------------------------------------------------------------------------------------------


def test_an_http_file_is_downloaded_once_and_a_restart_makes_no_request(
    http_server: tuple[str, Served], tmp_path: Path
) -> None:
    url, served = http_server
    uri = f"{url}/models/model.joblib"
    path = fetch(uri, tmp_path)
    assert path.name == "model.joblib" and path.read_bytes() == MODEL
    assert path.parent.name == MODEL_SHA and served.requests == ["/models/model.joblib"]
    assert fetch(uri, tmp_path) == path  # a restart: the cache says what the URI was
    assert fetch(uri, tmp_path, sha256=MODEL_SHA) == path
    assert served.requests == ["/models/model.joblib"]
    assert not [name for name in cache_files(tmp_path) if ".partial-" in name]


def test_a_pinned_download_is_checked_and_a_mismatch_leaves_nothing_current(
    http_server: tuple[str, Served], tmp_path: Path
) -> None:
    url, served = http_server
    uri = f"{url}/models/model.joblib"
    assert refusal(uri, tmp_path, OTHER_SHA) == f"sha256 mismatch for {uri}: expected {OTHER_SHA}, got {MODEL_SHA}"
    assert cache_files(tmp_path) == []
    path = fetch(uri, tmp_path, sha256=MODEL_SHA)
    assert path.read_bytes() == MODEL and len(served.requests) == 2
    # the pinned copy is served again with no request, even after it was made current by another pin
    assert fetch(uri, tmp_path, sha256=MODEL_SHA) == path and len(served.requests) == 2


def test_a_cached_copy_that_no_longer_matches_its_pin_is_downloaded_again(
    http_server: tuple[str, Served], tmp_path: Path
) -> None:
    url, served = http_server
    uri = f"{url}/models/model.joblib"
    path = fetch(uri, tmp_path, sha256=MODEL_SHA)
    path.write_bytes(b"corrupted on disk")
    assert fetch(uri, tmp_path, sha256=MODEL_SHA).read_bytes() == MODEL
    assert len(served.requests) == 2


def test_a_truncated_download_is_refused_and_nothing_is_cached(http_server: tuple[str, Served], tmp_path: Path) -> None:
    url, _ = http_server
    truncated = refusal(f"{url}/truncated", tmp_path)
    assert truncated.startswith(f"cannot download {url}/truncated: peer closed connection"), truncated
    assert cache_files(tmp_path) == []


def test_a_missing_or_unreachable_or_hung_url_is_refused_with_its_reason(
    http_server: tuple[str, Served], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = http_server
    assert refusal(f"{url}/absent.pkl", tmp_path) == f"{url}/absent.pkl answered 404 Not Found"
    (nobody,) = free_ports(1)
    unreachable = refusal(f"http://127.0.0.1:{nobody}/model.pkl", tmp_path)
    assert unreachable == f"cannot download http://127.0.0.1:{nobody}/model.pkl: [Errno 111] Connection refused"
    monkeypatch.setattr(storage, "READ_TIMEOUT", 0.5)
    started = time.monotonic()
    assert refusal(f"{url}/hung", tmp_path) == f"cannot download {url}/hung: no answer within 0.5 s"
    assert time.monotonic() - started < 4
    assert cache_files(tmp_path) == []


def test_an_error_never_shows_credentials_or_a_signature(http_server: tuple[str, Served], tmp_path: Path) -> None:
    url = http_server[0].replace("http://", "http://user:hunter2@")
    message = refusal(f"{url}/absent.pkl?X-Amz-Signature=s3cr3t", tmp_path)
    assert "hunter2" not in message and "s3cr3t" not in message and "user" not in message
    assert message == f"{http_server[0]}/absent.pkl?... answered 404 Not Found"


def test_threads_fetching_one_uri_at_once_all_get_the_whole_file_downloaded_once(
    http_server: tuple[str, Served], tmp_path: Path
) -> None:
    url, served = http_server
    served.pause = 0.005  # ~50 chunks: the threads overlap
    results: list[Path | BaseException] = []

    def one() -> None:
        try:
            results.append(fetch(f"{url}/models/model.joblib", tmp_path))
        except BaseException as error:
            results.append(error)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len(set(results)) == 1, results
    path = results[0]
    assert isinstance(path, Path) and path.read_bytes() == MODEL
    assert served.requests == ["/models/model.joblib"]


def test_processes_fetching_one_uri_at_once_all_get_the_whole_file(
    http_server: tuple[str, Served], tmp_path: Path
) -> None:
    """The worker processes of one model do this: each prints the path it got, and it is complete."""
    url, served = http_server
    served.pause = 0.005
    code = "import sys; from pathlib import Path; from stevedore_server.base.storage import fetch; "
    code += "print(fetch(sys.argv[1], Path(sys.argv[2])))"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", code, f"{url}/models/model.joblib", str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    paths = {worker.communicate(timeout=60)[0].strip() for worker in workers}
    assert [worker.returncode for worker in workers] == [0, 0, 0]
    assert len(paths) == 1 and Path(paths.pop()).read_bytes() == MODEL
    assert served.requests == ["/models/model.joblib"]


# -- a real S3-compatible server ------------------------------------------------------------------------------


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Bucket]:
    """moto's S3 server on a loopback port, and the environment a pod gets (dummy credentials)."""
    with s3_bucket("models") as bucket:
        for name, value in bucket.environment.items():
            monkeypatch.setenv(name, value)
        for name in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        client = bucket.client()
        client.put_object(Bucket="models", Key="iris/model.joblib", Body=MODEL)
        client.put_object(Bucket="models", Key="mlflow/MLmodel", Body=b"flavors: {}\n")
        client.put_object(Bucket="models", Key="mlflow/model/weights.bin", Body=MODEL)
        yield bucket


@pytest.mark.s3
def test_an_s3_file_and_folder_are_downloaded_and_then_served_with_the_server_gone(s3: Bucket, tmp_path: Path) -> None:
    model = fetch("s3://models/iris/model.joblib", tmp_path)
    assert model.name == "model.joblib" and model.read_bytes() == MODEL
    folder = fetch("s3://models/mlflow/", tmp_path)
    assert folder.is_dir() and folder.name == "mlflow"
    assert sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()) == [
        "MLmodel",
        "model/weights.bin",
    ]
    assert (folder / "MLmodel").read_bytes() == b"flavors: {}\n"
    assert (folder / "model/weights.bin").read_bytes() == MODEL
    s3.server.stop()  # a restart with no network at all
    assert fetch("s3://models/iris/model.joblib", tmp_path) == model
    assert fetch("s3://models/iris/model.joblib", tmp_path, sha256=MODEL_SHA) == model
    assert fetch("s3://models/mlflow/", tmp_path) == folder
    gone = refusal("s3://models/iris/other.joblib", tmp_path)  # not cached: the server is asked, and is gone
    assert gone.startswith("cannot download s3://models/iris/other.joblib: Could not connect"), gone


@pytest.mark.s3
def test_an_s3_key_or_bucket_that_is_not_there_or_a_pinned_prefix_is_refused(s3: Bucket, tmp_path: Path) -> None:
    for uri in ("s3://models/iris/absent.joblib", "s3://no-such-bucket/model.joblib"):
        assert refusal(uri, tmp_path) == f"no such file or folder: {uri}"
    assert refusal("s3://models/mlflow/", tmp_path, MODEL_SHA) == "sha256 pins a file, s3://models/mlflow/ is a folder"
    assert refusal("s3://models/iris/model.joblib", tmp_path, OTHER_SHA) == (
        f"sha256 mismatch for s3://models/iris/model.joblib: expected {OTHER_SHA}, got {MODEL_SHA}"
    )
    assert cache_files(tmp_path) == []


@pytest.mark.s3
def test_kserves_s3_endpoint_variables_are_honoured(
    s3: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KServe's storage secret gives S3_ENDPOINT (host:port) and S3_USE_HTTPS, not AWS_ENDPOINT_URL."""
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("S3_ENDPOINT", s3.endpoint.removeprefix("http://"))
    monkeypatch.setenv("S3_USE_HTTPS", "0")
    assert fetch("s3://models/iris/model.joblib", tmp_path).read_bytes() == MODEL
