"""Requests a web page makes a browser send, against real servers: cross-site writes refused by their ``Origin``
(or ``Sec-Fetch-Site``), DNS rebinding refused by its ``Host`` (``frontends.web.origins``).

The cross-site requests are the ones any page can send without a CORS preflight: a POST of ``text/plain``
(which the routes read as JSON) or with no body (the repository's). The same requests without ``Origin``, as
curl and the SDKs send them, are served. Each refusal is checked to have run nothing: the model still loaded,
no job started.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from stevedore_server.base.exposure import warn_if_open
from stevedore_server.base.settings import Settings
from stevedore_server.frontends.web.origins import allowed_hosts, allowed_networks, default_allowed_hosts

from .helpers import record_distribution
from .venvs import INSTALLED, Server, Venv, ready_server

EVIL = "http://evil.example"
ROWS = b"[[5.1, 3.5, 1.4, 0.2]]"
#: A simple request's body type: no preflight, and the routes read it as JSON all the same.
PLAIN = {"Content-Type": "text/plain"}
#: What each kind of write a page could forge sends: predict, train, and the repository's unload and load.
PREDICT = ("/models/iris/predict", ROWS)
TRAIN = ("/models/iris-trainer/train", b'{"C": 1.0}')
UNLOAD = ("/v2/repository/models/iris/unload", b"")
LOAD = ("/v2/repository/models/iris/load", b"")
READY = "/v2/models/iris/ready"


def serve(root: Path, *args: str, **env: str) -> Server:
    """The real ``stevedore-server run`` of the environment running the tests, bound to 127.0.0.1, serving the
    example plugin (``iris``) and the trainer test plugin (``iris-trainer``), found on its ``PYTHONPATH``."""
    site = root / "site"
    record_distribution(site, "stevedore-test-trainer", {"iris-trainer": "stevedore_test_trainer:IrisTrainer"})
    plugins = "stevedore-sklearn-logreg,stevedore-test-trainer"
    python_path = f"{site}:{INSTALLED / 'trainer'}"
    state = str(root / "state")
    return ready_server(
        Venv(Path(sys.prefix), ()), root / "server.log", "--plugins", plugins, *args,
        PYTHONPATH=python_path, STEVEDORE_STATE_DIR=state, **env,
    )  # fmt: skip


@pytest.fixture(scope="module")
def laptop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server as a laptop runs it: on loopback, no API keys, no CORS, the default allowed hosts."""
    server = serve(tmp_path_factory.mktemp("laptop"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def configured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a CORS origin and its own list of allowed hosts."""
    args = ("--cors-origins", "http://app.example", "--allowed-hosts", "models.example,127.0.0.1,10.0.0.0/8,fe80::/10")
    server = serve(tmp_path_factory.mktemp("configured"), *args)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def open_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = serve(tmp_path_factory.mktemp("open-hosts"), "--allowed-hosts", "*")
    yield server
    server.stop()


def port(server: Server) -> int:
    number = urlsplit(server.url).port
    assert number is not None
    return number


def post(server: Server, route: tuple[str, bytes], **headers: str) -> httpx.Response:
    path, body = route
    return httpx.post(server.url + path, content=body, headers=PLAIN | headers, timeout=60)


def get(server: Server, path: str, **headers: str | bytes) -> httpx.Response:
    return httpx.get(server.url + path, headers=headers, timeout=60)


def refused(response: httpx.Response, status: int) -> str:
    """``response`` is our ``status`` with a JSON ``{"error": ...}``; the error."""
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"] == "application/json", response.headers
    error = response.json()["error"]
    assert isinstance(error, str) and error, response.text[:300]
    return error


def jobs(server: Server) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = get(server, "/jobs").json()["jobs"]
    return listed


# -- cross-site writes ----------------------------------------------------------


@pytest.mark.server
def test_a_cross_site_prediction_is_refused_and_the_same_without_origin_served(laptop: Server) -> None:
    error = refused(post(laptop, PREDICT, Origin=EVIL), 403)
    assert "cross-site" in error and EVIL in error and "--cors-origins" in error
    answer = post(laptop, PREDICT)
    assert answer.status_code == 200 and answer.json()["predictions"] == [0], answer.text


@pytest.mark.server
def test_a_cross_site_training_is_refused_before_a_job_starts(laptop: Server) -> None:
    before = len(jobs(laptop))
    refused(post(laptop, TRAIN, Origin=EVIL), 403)
    assert len(jobs(laptop)) == before
    started = post(laptop, TRAIN)
    assert started.status_code == 202, started.text
    assert len(jobs(laptop)) == before + 1


@pytest.mark.server
def test_cross_site_unload_and_load_are_refused_before_the_repository_acts(laptop: Server) -> None:
    try:
        refused(post(laptop, UNLOAD, Origin=EVIL), 403)
        assert get(laptop, READY).status_code == 200, "a refused unload unloaded the model"
        unloaded = post(laptop, UNLOAD)
        assert unloaded.status_code == 200, unloaded.text
        assert get(laptop, READY).status_code != 200
        refused(post(laptop, LOAD, Origin=EVIL), 403)
        assert get(laptop, READY).status_code != 200, "a refused load loaded the model"
    finally:  # the other tests predict with it
        loaded = post(laptop, LOAD)
    assert loaded.status_code == 200, loaded.text
    assert get(laptop, READY).status_code == 200


@pytest.mark.server
@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_every_method_that_can_change_something_is_checked(laptop: Server, method: str) -> None:
    """The route answers 405 to these methods: the refusal comes first, whatever the route would say."""
    response = httpx.request(method, laptop.url + "/models/iris/predict", headers={"Origin": EVIL}, timeout=60)
    refused(response, 403)


@pytest.mark.server
def test_reads_from_another_origin_are_left_to_the_browser(laptop: Server) -> None:
    """A page cannot read another origin's answer (and a rebinding one is refused for its ``Host``)."""
    assert get(laptop, "/models", Origin=EVIL).status_code == 200


@pytest.mark.server
def test_a_browser_that_says_cross_site_without_an_origin_is_refused(laptop: Server) -> None:
    error = refused(post(laptop, PREDICT, **{"Sec-Fetch-Site": "cross-site"}), 403)
    assert "Sec-Fetch-Site" in error
    for site in ("same-origin", "same-site", "none"):
        assert post(laptop, PREDICT, **{"Sec-Fetch-Site": site}).status_code == 200, site


@pytest.mark.server
@pytest.mark.parametrize(
    "origin",
    ["null", "http://127.0.0.1", "http://127.0.0.1:1", "ftp://127.0.0.1:{port}", "http://127.0.0.1:{port}/"],
)
def test_an_origin_that_is_not_the_servers_own_is_foreign(laptop: Server, origin: str) -> None:
    """``null`` is nobody's; another port of the same host is another origin, as is another scheme than http
    and https, or no origin at all (a path)."""
    refused(post(laptop, PREDICT, Origin=origin.format(port=port(laptop))), 403)


@pytest.mark.server
@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("127.0.0.1:{port}", "http://127.0.0.1:{port}"),
        ("localhost:{port}", "http://localhost:{port}"),
        ("localhost:{port}", "https://localhost:{port}"),  # behind a TLS proxy
        ("LocalHost:{port}", "http://localhost:{port}"),
        ("[::1]:{port}", "http://[::1]:{port}"),
        ("localhost", "https://localhost"),
        ("localhost:80", "http://localhost"),
    ],
)
def test_the_servers_own_origin_is_served(laptop: Server, host: str, origin: str) -> None:
    """As the web console sends its predictions: from the origin the browser reached the server by."""
    headers = {"Host": host.format(port=port(laptop)), "Origin": origin.format(port=port(laptop))}
    answer = post(laptop, PREDICT, **headers)
    assert answer.status_code == 200, answer.text


@pytest.mark.server
def test_an_origin_cors_allows_is_served(configured: Server) -> None:
    answer = post(configured, PREDICT, Origin="http://app.example")
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == "http://app.example"
    refused(post(configured, PREDICT, Origin=EVIL), 403)


@pytest.mark.server
def test_a_cors_preflight_is_answered_by_cors(configured: Server) -> None:
    headers = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
    preflight = httpx.options(configured.url + PREDICT[0], headers=headers, timeout=60)
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == "http://app.example"


# -- DNS rebinding --------------------------------------------------------------


@pytest.mark.server
def test_a_foreign_host_is_refused_on_a_loopback_server(laptop: Server) -> None:
    """What a rebinding page sends: its own name, with the server's port; reads are refused as writes are."""
    rebound = f"evil.example:{port(laptop)}"
    error = refused(get(laptop, "/models", Host=rebound), 400)
    assert "evil.example" in error and "--allowed-hosts" in error
    refused(post(laptop, PREDICT, Host=rebound, Origin=f"http://{rebound}"), 400)
    refused(get(laptop, "/jobs", Host="evil.example"), 400)
    refused(get(laptop, "/models", Host=f"192.168.0.7:{port(laptop)}"), 400)  # loopback names only, by default


@pytest.mark.server
@pytest.mark.parametrize("host", ["localhost:{port}", "localhost", "127.0.0.1:{port}", "[::1]:{port}", "LOCALHOST."])
def test_the_loopback_names_are_allowed_with_any_port(laptop: Server, host: str) -> None:
    assert get(laptop, "/models", Host=host.format(port=port(laptop))).status_code == 200


@pytest.mark.server
@pytest.mark.parametrize("host", ["", "a b", "localhost:x", "localhost:²".encode(), "[::1", "user@localhost"])
def test_a_host_that_is_no_host_is_refused(laptop: Server, host: str | bytes) -> None:
    refused(get(laptop, "/models", Host=host), 400)


@pytest.mark.server
def test_a_request_without_host_is_allowed(laptop: Server) -> None:
    """HTTP/1.0 needs no ``Host``; a browser always sends one, so such a request came from no web page."""
    with socket.create_connection(("127.0.0.1", port(laptop)), timeout=30) as connection:
        connection.sendall(b"GET /models HTTP/1.0\r\n\r\n")
        answer = b"".join(iter(lambda: connection.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]


@pytest.mark.server
def test_allowed_hosts_replace_the_default(configured: Server) -> None:
    assert get(configured, "/models", Host=f"models.example:{port(configured)}").status_code == 200
    assert get(configured, "/models", Host="MODELS.example").status_code == 200
    refused(get(configured, "/models", Host=f"localhost:{port(configured)}"), 400)
    for address in (f"10.1.2.3:{port(configured)}", "[fe80::1]"):  # a probe's, by the pod's address
        assert get(configured, "/models", Host=address).status_code == 200, address
    refused(get(configured, "/models", Host="192.168.0.7"), 400)  # an address of no network it names


@pytest.mark.server
def test_any_host_is_allowed_with_a_star(open_hosts: Server) -> None:
    assert get(open_hosts, "/models", Host="evil.example").status_code == 200
    refused(post(open_hosts, PREDICT, Origin=EVIL), 403)  # writes from other origins are still refused


@pytest.mark.parametrize(
    "bind", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST", "::ffff:127.0.0.1"]
)
def test_a_loopback_server_allows_the_loopback_names_and_its_address_by_default(bind: str) -> None:
    hosts = default_allowed_hosts(bind)
    assert hosts is not None and {"localhost", "127.0.0.1", "[::1]"} <= hosts
    assert hosts - {"localhost", "127.0.0.1", "[::1]"} <= {"127.0.0.2", "[::ffff:127.0.0.1]"}


@pytest.mark.parametrize("bind", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.1", "fe80::1", "models.example"])
def test_a_server_bound_elsewhere_allows_any_host_by_default(bind: str) -> None:
    assert default_allowed_hosts(bind) is None
    assert allowed_hosts(None, bind) is None


def test_allowed_hosts_are_names_without_ports() -> None:
    given = ("Models.Example:8080", "::1", "[fe80::1]:80", "api.example.")
    assert allowed_hosts(given, "0.0.0.0") == {"models.example", "[::1]", "[fe80::1]", "api.example"}
    assert allowed_hosts(("a.example", "*"), "127.0.0.1") is None


def test_cors_for_any_origin_without_keys_is_warned_of(caplog: pytest.LogCaptureFixture) -> None:
    """With ``*``, the origin check stands aside (CORS allows every page): without keys, every page may write."""
    with caplog.at_level(logging.WARNING, logger="stevedore.process"):
        warn_if_open(Settings(cors_origins=("*",)))
        warned = [record.getMessage() for record in caplog.records]
        warn_if_open(Settings(cors_origins=("*",), api_keys=("k",)))
        warn_if_open(Settings(cors_origins=("https://app.example",)))
    assert len(warned) == 1 and "--cors-origins '*'" in warned[0], warned
    assert len(caplog.records) == 1


def test_allowed_hosts_may_name_ip_networks(caplog: pytest.LogCaptureFixture) -> None:
    given = ("models.example", "10.0.0.0/8", "fd00::/8", "not/a-network")
    with caplog.at_level(logging.WARNING, logger="stevedore.http"):
        networks = allowed_networks(given)
    assert [str(network) for network in networks] == ["10.0.0.0/8", "fd00::/8"]
    assert allowed_hosts(given, "0.0.0.0") == {"models.example"}  # networks are no names: no warning for them
    assert [record.getMessage() for record in caplog.records] == [
        "allowed_hosts: 'not/a-network' is no IP network (`10.0.0.0/8`, `fd00::/8`): it allows none"
    ]
