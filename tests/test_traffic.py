"""Traffic between versions (``[traffic.NAME]``) against a real ``stevedore-server run``: weights within a binomial
bound, stickiness by header and by JSON pointer, shadows compared and counted while clients see only the live
answers, the variant named in the body and the headers, ``PUT /traffic/NAME`` with its admin scope, and a weight
change seen by both workers of ``--workers 2`` (by the route, and by the settings file read again on SIGHUP)."""

from __future__ import annotations

import hashlib
import math
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from .counting import metric
from .documentation import block, page
from .helpers import record_distribution, wait_until
from .test_docs_examples import check_answer, commands, curl
from .venvs import REPO, Server, Venv, ready_server

pytestmark = pytest.mark.server

ADMIN_KEY, INFER_KEY = "traffic-admin-key", "traffic-infer-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
INFER = {"Authorization": f"Bearer {INFER_KEY}"}
WHOLE, FRACTIONAL = [[1, 2]], [[0.25, 0.01]]  # version 2.0.0 rounds to one decimal: equal on the first only

CONFIG = """
[traffic.wines]
split = [{ model = "wine:1.0.0", weight = 90 }, { model = "wine:2.0.0", weight = 10 }]

[traffic.by-user]
split = [{ model = "wine:1.0.0", weight = 50 }, { model = "wine:2.0.0", weight = 50 }]
sticky = "header:X-User"

[traffic.by-row]
split = [{ model = "wine:1.0.0", weight = 50 }, { model = "wine:2.0.0", weight = 50 }]
sticky = "pointer:/0/0"

[traffic.shadowed]
split = [{ model = "wine:1.0.0", weight = 1 }]
shadow = "wine:2.0.0"

[traffic.tolerant]
split = [{ model = "wine:1.0.0", weight = 1 }]
shadow = "wine:2.0.0"
tolerance = 0.1

[traffic.sampled]
split = [{ model = "wine:1.0.0", weight = 1 }]
shadow = "wine:2.0.0"
shadow_share = 0.5

[traffic.shed]
split = [{ model = "wine:1.0.0", weight = 1 }]
shadow = "wine:2.0.0"

[traffic.failing-shadow]
split = [{ model = "wine:1.0.0", weight = 1 }]
shadow = "wine-failing"

[traffic.wine]
split = [{ model = "wine:1.0.0", weight = 1 }]
"""


#: The plugin the servers serve: its distribution's name and its entry point.
WINES = ("stevedore-test-wines", {"wines": "tests.traffic_models:wines"})


def serve(directory: Path, config: str, *args: str, plugin: tuple[str, dict[str, str]] = WINES, **env: str) -> Server:
    """The real server of the environment running the tests, serving ``plugin`` (by default the two versions of
    ``wine``, ``traffic_models``) with the settings file ``config``, ready."""
    site = directory / "site"
    record_distribution(site, *plugin)
    (directory / "stevedore.toml").write_text(config)
    options = ("--config", str(directory / "stevedore.toml"), "--plugins", plugin[0], *args)
    here = Venv(Path(sys.prefix), ())
    return ready_server(here, directory / "server.log", *options, deadline=120, PYTHONPATH=f"{REPO}:{site}", **env)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One worker, API keys on: an admin key and a key that may only infer."""
    directory = tmp_path_factory.mktemp("traffic")
    keys = directory / "api-keys"
    lines = [
        f"{hashlib.sha256(ADMIN_KEY.encode()).hexdigest()} admin",
        f"{hashlib.sha256(INFER_KEY.encode()).hexdigest()} infer",
    ]
    keys.write_text("\n".join(lines) + "\n")
    running = serve(directory, CONFIG, STEVEDORE_API_KEY_FILE=str(keys))
    yield running
    running.stop()


def predict(client: httpx.Client, name: str, rows: object, **headers: str) -> httpx.Response:
    response = client.post(f"/models/{name}/predict", json=rows, headers={**INFER, **headers})
    assert response.status_code == 200, response.text
    return response


def version_of(response: httpx.Response) -> str:
    """The version that answered, as the body and the header both say it."""
    body = response.json()
    assert (response.headers["X-Model-Name"], body["model_name"]) == ("wine", "wine")
    assert response.headers["X-Model-Version"] == body["model_version"]
    return str(body["model_version"])


def test_weights_hold_within_a_binomial_bound(server: Server) -> None:
    """400 requests at 90/10: the count of the 10 % variant within four standard deviations of its mean, and the
    metrics count each variant's."""
    requests, share = 400, 0.10
    with httpx.Client(base_url=server.url, timeout=30) as client:
        counts = Counter(version_of(predict(client, "wines", WHOLE)) for _ in range(requests))
    mean, deviation = requests * share, math.sqrt(requests * share * (1 - share))
    assert set(counts) == {"1.0.0", "2.0.0"}
    assert abs(counts["2.0.0"] - mean) <= 4 * deviation, counts
    for version, count in counts.items():
        counted = metric(server, "stevedore_traffic_requests_total", traffic="wines", model="wine", version=version)
        assert counted == count


def test_a_traffic_name_is_called_by_v2_infer_too(server: Server) -> None:
    body = {"inputs": [{"name": "input-0", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]}
    with httpx.Client(base_url=server.url, timeout=30, headers=INFER) as client:
        answers = [client.post("/v2/models/wines/infer", json=body) for _ in range(60)]
    assert all(answer.status_code == 200 for answer in answers), answers[0].text
    assert {answer.json()["model_version"] for answer in answers} == {"1.0.0", "2.0.0"}
    assert all(answer.headers["X-Model-Version"] == answer.json()["model_version"] for answer in answers)


def test_a_traffic_name_is_called_by_grpc_infer_sticky_by_its_metadata(server: Server) -> None:
    """gRPC ModelInfer of a traffic name: the variant named in the answer; a sticky header read from the call's
    metadata."""
    request = service_pb2.ModelInferRequest(model_name="by-user")
    request.inputs.add(name="input-0", datatype="FP64", shape=[1, 2])
    request.raw_input_contents.append(np.array([[1.0, 2.0]]).tobytes())
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for user in ("ada", "grace", "bob", "carol"):
            metadata = (("authorization", f"Bearer {INFER_KEY}"), ("x-user", user))
            versions = {stub.ModelInfer(request, metadata=metadata).model_version for _ in range(4)}
            assert versions == {"1.0.0" if position(user) < 0.5 else "2.0.0"}, user


def test_a_header_keeps_each_user_on_one_version(server: Server) -> None:
    """Each user's requests land on one version, the one its key's blake2b hash says (the same in every process
    and run: no salted ``hash``); across users both versions serve."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        seen = {
            user: {version_of(predict(client, "by-user", WHOLE, **{"X-User": user})) for _ in range(4)}
            for user in (f"user-{number}" for number in range(40))
        }
    assert all(len(versions) == 1 for versions in seen.values()), seen
    assert {version for versions in seen.values() for version in versions} == {"1.0.0", "2.0.0"}
    expected = {user: "1.0.0" if position(user) < 0.5 else "2.0.0" for user in seen}
    assert {user: versions.pop() for user, versions in seen.items()} == expected


def position(key: str) -> float:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64


def test_a_json_pointer_keeps_each_key_on_one_version(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        seen = {key: {version_of(predict(client, "by-row", [[key, 1]])) for _ in range(4)} for key in range(40)}
    assert all(len(versions) == 1 for versions in seen.values()), seen
    assert {version for versions in seen.values() for version in versions} == {"1.0.0", "2.0.0"}


def test_shadow_answers_are_counted_and_never_returned(server: Server) -> None:
    """Clients only ever see the live version's answers; the shadow's are compared (equal on whole rows, different
    on fractional ones), within the tolerance where one is set, and a shadow's failure is counted, not returned."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for rows, live in ((WHOLE, [3.0]), (FRACTIONAL, [0.26])):
            for name in ("shadowed", "tolerant"):
                for _ in range(5):
                    response = predict(client, name, rows)
                    assert (version_of(response), response.json()["predictions"]) == ("1.0.0", live)
        for _ in range(3):
            response = predict(client, "failing-shadow", [[-1, 2]])
            assert (version_of(response), response.json()["predictions"]) == ("1.0.0", [1.0])
    labels = {"live": "wine:1.0.0", "shadow": "wine:2.0.0"}
    expected = {("shadowed", "equal"): 5, ("shadowed", "different"): 5, ("tolerant", "equal"): 10}

    def counted() -> dict[tuple[str, str], float]:
        return {
            (name, outcome): metric(
                server, "stevedore_shadow_comparisons_total", traffic=name, outcome=outcome, **labels
            )
            for name, outcome in expected
        }

    wait_until(lambda: counted() == expected, "the shadow comparisons counted", explain=lambda: str(counted()))
    assert metric(server, "stevedore_shadow_comparisons_total", traffic="tolerant", outcome="different") == 0
    failed = {"traffic": "failing-shadow", "outcome": "failed"}
    wait_until(lambda: metric(server, "stevedore_shadow_comparisons_total", **failed) == 3, "the failed shadows")


def test_a_shadow_copy_waits_for_the_live_requests_and_is_shed_when_they_keep_the_server_busy(server: Server) -> None:
    """A copy runs only once no request is being answered: while one takes longer than a copy may wait, the copy
    is dropped (counted), and the live answer never waited for it; with the server idle, the next is compared."""
    shed = {"traffic": "shed", "live": "wine:1.0.0", "shadow": "wine:2.0.0"}
    with httpx.Client(base_url=server.url, timeout=30) as busy, httpx.Client(base_url=server.url, timeout=30) as client:
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(predict, busy, "wine-slow", [[2.5, 0]])  # longer than SHADOW_PATIENCE
            wait_until(lambda: "wine-slow: sleeping 2.5 s" in server.log(), "the slow request running")
            started = time.monotonic()
            assert predict(client, "shed", WHOLE).json()["predictions"] == [3.0]
            answered = time.monotonic() - started
            assert slow.result().json()["predictions"] == [2.5]
        assert answered < 1.0  # the live answer did not wait for the busy server's copy
        wait_until(lambda: metric(server, "stevedore_shadow_comparisons_total", outcome="dropped", **shed) == 1, "shed")
        assert metric(server, "stevedore_shadow_comparisons_total", outcome="equal", **shed) == 0
        predict(client, "shed", WHOLE)
    wait_until(lambda: metric(server, "stevedore_shadow_comparisons_total", outcome="equal", **shed) == 1, "compared")


def test_a_shadow_share_copies_that_share_of_the_requests(server: Server) -> None:
    """``shadow_share = 0.5``: of 200 requests, the copies within four standard deviations of 100."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(200):
            predict(client, "sampled", WHOLE)

    def compared() -> float:
        return metric(server, "stevedore_shadow_comparisons_total", traffic="sampled")

    def settled() -> bool:  # the copies still pending compared
        before = compared()
        time.sleep(0.3)
        return compared() == before

    wait_until(settled, "the copies compared")
    assert abs(compared() - 100) <= 4 * math.sqrt(200 * 0.25), compared()
    assert metric(server, "stevedore_shadow_comparisons_total", traffic="sampled", outcome="equal") == compared()


def test_a_traffic_name_that_is_a_models_is_listed_failed_and_the_model_keeps_it(server: Server) -> None:
    listed = httpx.get(server.url + "/traffic/wine", headers=INFER).json()
    assert listed["state"] == "failed" and "model's name" in listed["reason"]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert {version_of(predict(client, "wine", WHOLE)) for _ in range(10)} == {"2.0.0"}  # its default version
        assert {version_of(predict(client, "wine/versions/1.0.0", WHOLE)) for _ in range(3)} == {"1.0.0"}


def test_changing_a_split_needs_the_admin_scope_and_a_valid_body(server: Server) -> None:
    split = {"split": [{"model": "wine:1.0.0", "weight": 1}, {"model": "wine:2.0.0", "weight": 1}]}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.put("/traffic/by-user", json=split).status_code == 401
        assert client.put("/traffic/by-user", json=split, headers=INFER).status_code == 403
        assert client.get("/traffic", headers=INFER).status_code == 200
        bad = [
            {"split": []},
            {"split": [{"model": "wine:1.0.0", "weight": -1}]},
            {"split": [{"model": "wine:1.0.0", "weight": 0}]},
            {"split": [{"model": "wine:1.0.0"}]},
            {"split": [{"model": "wine:1.0.0", "weight": 1}, {"model": "wine:1.0.0", "weight": 2}]},
            {"weights": [1]},
            [1, 2],
        ]
        for body in bad:
            response = client.put("/traffic/by-user", json=body, headers=ADMIN)
            assert response.status_code == 400 and "split" in response.json()["error"], (body, response.text)
        assert client.put("/traffic/by-user", content=b"{", headers=ADMIN).status_code == 400
        assert client.put("/traffic/nope", json=split, headers=ADMIN).status_code == 404
        changed = client.put("/traffic/by-user", json=split, headers=ADMIN)
        assert changed.status_code == 200, changed.text
        assert changed.json()["split"] == [
            {"model": "wine:1.0.0", "weight": 1.0},
            {"model": "wine:2.0.0", "weight": 1.0},
        ]


WORKERS_CONFIG = """
[traffic.wines]
split = [{ model = "wine:1.0.0", weight = 90 }, { model = "wine:2.0.0", weight = 10 }]
sticky = "header:X-User"
"""


def versions_on_fresh_connections(server: Server, count: int, **headers: str) -> Counter[str]:
    """The versions that answered ``count`` requests, each on a connection of its own (so that every worker
    takes some)."""
    found: Counter[str] = Counter()
    for _ in range(count):
        response = httpx.post(server.url + "/models/wines/predict", json=WHOLE, headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        found[version_of(response)] += 1
    return found


def test_a_weight_change_is_seen_by_both_workers(tmp_path: Path) -> None:
    """``PUT`` answers once both workers route by the new split; a sticky key lands on the same version in both;
    the file's split read again on SIGHUP (which restarts each worker in turn) replaces the one put before."""
    server = serve(tmp_path, WORKERS_CONFIG, "--workers", "2")
    try:
        sticky = versions_on_fresh_connections(server, 30, **{"X-User": "ada"})
        assert len(sticky) == 1 and sticky.most_common(1)[0][0] == ("1.0.0" if position("ada") < 0.9 else "2.0.0")
        split = {"split": [{"model": "wine:1.0.0", "weight": 0}, {"model": "wine:2.0.0", "weight": 1}]}
        changed = httpx.put(server.url + "/traffic/wines", json=split, timeout=60)
        assert changed.status_code == 200, changed.text
        assert versions_on_fresh_connections(server, 60) == Counter({"2.0.0": 60})
        listed = [httpx.get(server.url + "/traffic/wines", timeout=30).json()["split"] for _ in range(20)]
        assert all(entry == split["split"] for entry in listed), listed
        reloaded = WORKERS_CONFIG.replace("weight = 90", "weight = 100").replace("weight = 10 ", "weight = 0 ")
        (tmp_path / "stevedore.toml").write_text(reloaded)
        server.process.send_signal(signal.SIGHUP)

        def only_first() -> bool:
            return versions_on_fresh_connections(server, 20) == Counter({"1.0.0": 20})

        wait_until(only_first, "both workers to route by the file read again", deadline=120, explain=server.log)
    finally:
        server.stop()


def test_sighup_reads_the_files_traffic_tables_again(tmp_path: Path) -> None:
    """One process: SIGHUP serves the file's traffic tables as they are now (a split changed, a name added), in
    place of a split put before; a file that no longer reads leaves them as they were, and the server serving."""
    server = serve(tmp_path, WORKERS_CONFIG)
    try:
        split = {"split": [{"model": "wine:2.0.0", "weight": 1}]}
        assert httpx.put(server.url + "/traffic/wines", json=split, timeout=30).status_code == 200
        reloaded = WORKERS_CONFIG.replace("weight = 90", "weight = 100").replace("weight = 10 ", "weight = 0 ")
        (tmp_path / "stevedore.toml").write_text(
            reloaded + '\n[traffic.more]\nsplit = [{ model = "wine:2.0.0", weight = 1 }]\n'
        )
        server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: versions_on_fresh_connections(server, 10) == Counter({"1.0.0": 10}), "the file read again")
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert version_of(predict(client, "more", WHOLE)) == "2.0.0"
            (tmp_path / "stevedore.toml").write_text("[traffic.wines]\nsplit = 3\n")
            server.process.send_signal(signal.SIGHUP)
            wait_until(lambda: "the traffic names serve as before" in server.log(), "the error logged")
            assert version_of(predict(client, "more", WHOLE)) == "2.0.0"
            assert versions_on_fresh_connections(server, 10) == Counter({"1.0.0": 10})
    finally:
        server.stop()


def test_the_pages_traffic_examples_answer_as_shown(tmp_path: Path) -> None:
    """The page's settings file served as it is, and its curl commands answering as shown; then its shadow's
    comparisons counted."""
    settings = block("toml", "[traffic.wine-live]", page("pipelines.md"))
    server = serve(tmp_path, settings)
    try:
        for command in commands(block("sh", "localhost:8000/models/wine-live/predict", page("pipelines.md"))):
            check_answer(command, *curl(command.line, server.url))
        equal = {"traffic": "wine-live", "outcome": "equal"}
        wait_until(lambda: metric(server, "stevedore_shadow_comparisons_total", **equal) == 1, "the comparison")
    finally:
        server.stop()
