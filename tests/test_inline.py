"""Inline calls: a predict of a model declaring ``inline``, measured under the budget, runs on the event loop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import pytest
from fastapi.testclient import TestClient

from stevedore_server.base.settings import ModelLimits, ModelSettings, Settings
from stevedore_server.core import inline, startup
from stevedore_server.core.inline import INLINE_WINDOW, CallCost, calibrate
from stevedore_server.core.runtime import ModelRuntime
from stevedore_server.plugins.loading import LoadedModel

from .helpers import Registers, fresh_manager
from .predictors import ArrayInput, ObjectPayload, RowSum

MODEL_THREAD = "model-"
BUDGET = 0.001  # the default inline budget
#: Seconds a call on a row ``[8]`` is held at most: only a broken run gets there, and its test then fails.
HOLD_LIMIT = 60.0


class Clock:
    """The clock the inline module reads in these tests. It moves only when a model call spends time on it or a
    test lets time pass, so every duration the calibration and the policy judge is the one the test chose, on a
    busy machine as on an idle one (model calls on several threads may move it: hence the lock)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.lock = threading.Lock()

    def perf_counter(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


class WhereRuns(RowSum):
    """Records the thread of each call; spends ``fixed`` seconds a call (a few microseconds, as a small model's
    call does) and ``spin`` a row on the tests' clock, ``pause`` more on a row ``[9]``; holds a call on a row
    ``[8]`` until ``release`` is set."""

    name = "whereruns"
    inline = True
    threads: ClassVar[list[str]] = []
    clock: ClassVar[Clock]
    hold_started: ClassVar[threading.Event] = threading.Event()
    release: ClassVar[threading.Event] = threading.Event()
    hold_ended: ClassVar[threading.Event] = threading.Event()

    def __init__(self, spin: float = 0.0, pause: float = 0.15, fixed: float = 5e-6, **overrides: Any) -> None:
        super().__init__(**overrides)
        self.spin = spin
        self.pause = pause
        self.fixed = fixed

    def run_predict(self, rows: list[list[float]]) -> list[float]:
        model = type(self)
        model.threads.append(threading.current_thread().name)
        if [8] in rows:
            model.hold_started.set()
            try:
                model.release.wait(timeout=HOLD_LIMIT)
            finally:
                model.hold_ended.set()
        model.clock.advance(self.fixed + self.spin * len(rows) + (self.pause if [9] in rows else 0.0))
        return super().run_predict(rows)


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The tests' clock in place of the real one, for the inline module only; the model's state made fresh."""
    tests_clock = Clock()
    monkeypatch.setattr(inline, "time", tests_clock)
    WhereRuns.clock = tests_clock
    WhereRuns.threads.clear()
    for event in (WhereRuns.hold_started, WhereRuns.release, WhereRuns.hold_ended):
        event.clear()
    return tests_clock


def thread_of(client: TestClient, rows: list[list[float]], name: str = "whereruns") -> str:
    response = client.post(f"/models/{name}/predict", json=rows)
    assert response.status_code == 200, response.text
    return WhereRuns.threads[-1]


def test_a_fast_model_predicts_on_the_event_loop(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Registers(WhereRuns()))
    assert not thread_of(client, [[1, 2]]).startswith(MODEL_THREAD)
    assert client.post("/models/whereruns/predict", json=[[1, 2], [3, 4]]).json()["predictions"] == [3, 7]


@pytest.mark.parametrize(
    "settings",
    [Settings(inline_budget=0), Settings(models={"whereruns": ModelSettings(inline_budget=0)})],
    ids=["server", "model"],
)
def test_an_inline_budget_of_zero_keeps_the_model_on_its_thread(
    make_client: Callable[..., TestClient], settings: Settings
) -> None:
    client = make_client(Registers(WhereRuns()), settings=settings)
    assert thread_of(client, [[1, 2]]).startswith(MODEL_THREAD)


def test_a_predictor_that_does_not_declare_inline_runs_on_its_thread(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Registers(WhereRuns(inline=False)))
    assert thread_of(client, [[1, 2]]).startswith(MODEL_THREAD)


def test_a_models_table_can_put_a_model_on_the_event_loop(make_client: Callable[..., TestClient]) -> None:
    settings = Settings(models={"whereruns": ModelSettings(inline_budget=0.002)})
    client = make_client(Registers(WhereRuns(inline=False)), settings=settings)
    assert not thread_of(client, [[1, 2]]).startswith(MODEL_THREAD)


def test_a_request_expected_over_the_budget_runs_on_the_thread(make_client: Callable[..., TestClient]) -> None:
    # 20 µs a row: one row is well within 1 ms, a thousand rows are 20 ms.
    client = make_client(Registers(WhereRuns(spin=20e-6)))
    assert not thread_of(client, [[1, 2]]).startswith(MODEL_THREAD)
    assert thread_of(client, [[1, 2]] * 1000).startswith(MODEL_THREAD)
    assert not thread_of(client, [[1, 2]]).startswith(MODEL_THREAD)


def test_a_model_that_stalls_the_event_loop_moves_to_its_thread_for_good(
    make_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(Registers(WhereRuns()))
    with caplog.at_level(logging.WARNING, logger="stevedore.inline"):
        assert not thread_of(client, [[9]]).startswith(MODEL_THREAD)  # 150 ms on the loop: over 100 ms
    assert "whereruns version 1 runs on its threads from now on" in caplog.text
    for _ in range(3):
        assert thread_of(client, [[1, 2]]).startswith(MODEL_THREAD)


def test_slow_calls_go_to_the_thread_and_three_over_ten_budgets_keep_them_there(
    make_client: Callable[..., TestClient], clock: Clock
) -> None:
    client = make_client(Registers(WhereRuns(pause=0.02)))  # 20 ms: over ten budgets, under a stall
    # Slower than measured: the next call goes to the thread (the second one was the first second's check).
    assert [thread_of(client, [[9]]).startswith(MODEL_THREAD) for _ in range(3)] == [False, False, True]
    clock.advance(inline.INLINE_PROBE_INTERVAL)  # a second later, one call checks on the loop: the third strike
    assert [thread_of(client, [[9]]).startswith(MODEL_THREAD) for _ in range(2)] == [False, True]
    clock.advance(inline.INLINE_PROBE_INTERVAL)
    assert thread_of(client, [[1, 2]]).startswith(MODEL_THREAD)  # for good: no more checks


def test_the_event_loop_answers_while_a_request_over_the_budget_runs_on_the_thread(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(Registers(WhereRuns(spin=200e-6)))  # a thousand rows: 200 ms, on the thread
    WhereRuns.threads.clear()  # forget the self-test's and the calibration's calls
    rows = [[1, 2]] * 999 + [[8]]  # held by the model until released
    big = threading.Thread(target=client.post, args=("/models/whereruns/predict",), kwargs={"json": rows})
    big.start()
    try:
        assert WhereRuns.hold_started.wait(timeout=60), "the large request never reached the model"
        assert client.get("/livez").status_code == 200
        # Answered while the model still held the large call: that call was not on the event loop.
        assert not WhereRuns.hold_ended.is_set(), "/livez answered only once the large call had ended"
    finally:
        WhereRuns.release.set()
        big.join(timeout=60)
    assert len(WhereRuns.threads) == 1 and WhereRuns.threads[0].startswith(MODEL_THREAD), WhereRuns.threads


# -- the runtime's decisions, on a loaded model ----------------------------------------------


def loaded_entry(predictor: Any) -> LoadedModel:
    entry = startup.load(Settings(), fresh_manager(Registers(predictor))).models[0]
    assert entry.ready, entry.reason
    return entry


def runtime_of(entry: LoadedModel, cost: CallCost | None, budget: float = 0.001) -> ModelRuntime:
    limits = ModelLimits(max_batch_size=1, max_batch_time=0, timeout=1, max_concurrency=1, max_queue=1,
                         inline_budget=budget)  # fmt: skip
    return ModelRuntime(entry, limits, None, cost)


def test_calibration_gives_a_fixed_and_a_per_row_cost() -> None:
    cost = calibrate(loaded_entry(WhereRuns(spin=20e-6, fixed=50e-6)), BUDGET)
    assert cost is not None
    assert (cost.fixed, cost.per_row) == pytest.approx((50e-6, 20e-6))
    assert cost.of(1000) == pytest.approx(0.02005)


def test_a_numpy_input_model_is_timed_on_arrays_as_its_requests_come() -> None:
    entry = loaded_entry(ArrayInput())
    ArrayInput.received.clear()
    assert calibrate(entry, BUDGET) is not None
    assert set(ArrayInput.received) == {np.ndarray}


def test_no_calibration_for_a_payload_that_is_not_rows() -> None:
    assert calibrate(loaded_entry(ObjectPayload()), BUDGET) is None


def test_a_model_whose_output_is_not_a_row_a_row_is_still_timed_by_its_input_rows() -> None:
    assert calibrate(loaded_entry(WhereRuns(row_aligned=False)), BUDGET) is not None


def test_a_model_slower_than_the_budget_is_timed_once_and_never_runs_inline() -> None:
    entry = loaded_entry(WhereRuns(spin=2e-3))  # 2 ms a row: the one-row fixture alone is over 1 ms
    WhereRuns.threads.clear()
    assert calibrate(entry, BUDGET) is None
    assert len(WhereRuns.threads) == 2  # a warm-up and one timed call


def test_no_calibration_where_a_thousand_rows_are_not_a_valid_payload() -> None:
    schema = dict(WhereRuns.predict_schema, maxItems=10)
    assert calibrate(loaded_entry(WhereRuns(predict_schema=schema)), BUDGET) is None


def test_a_model_busy_on_its_thread_is_not_called_inline_as_well() -> None:
    runtime = runtime_of(loaded_entry(WhereRuns()), CallCost(1e-4, 0))
    assert runtime.runs_inline(1)
    runtime.threads.submitted += 1  # a call handed to the thread and not ended
    assert not runtime.runs_inline(1)
    runtime.threads.finished += 1
    assert runtime.runs_inline(1)


def test_an_odd_slow_call_does_not_move_the_model_but_a_slowdown_does(clock: Clock) -> None:
    runtime = runtime_of(loaded_entry(WhereRuns()), CallCost(1e-4, 0))
    policy = runtime.inline
    assert policy is not None
    for _ in range(INLINE_WINDOW - 1):
        policy.judge(1, 1e-4)
    policy.judge(1, 9e-4)  # a pause (another process, a collection): within ten budgets
    assert runtime.runs_inline(1)
    for _ in range(INLINE_WINDOW):
        policy.judge(1, 2e-3)  # twenty times the measured cost, every time
    policy.next_probe = clock.now + 60
    assert not runtime.runs_inline(1)
    policy.next_probe = 0  # a second later: one call checks whether the model is still slow
    assert runtime.runs_inline(1)
    assert not runtime.runs_inline(1)
    assert policy.cost is not None  # slow, not stalling: it may come back


def test_the_budget_bounds_the_rows_run_inline() -> None:
    runtime = runtime_of(loaded_entry(WhereRuns()), CallCost(1e-4, 1e-6))
    assert runtime.runs_inline(800)
    assert not runtime.runs_inline(1000)
    assert not runtime_of(loaded_entry(WhereRuns()), CallCost(1e-4, 1e-6), budget=0).runs_inline(1)
