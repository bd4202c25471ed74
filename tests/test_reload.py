"""
One reload of a L{LiveConfigService}: skip known bytes, refuse bad ones,
swap good ones, tell observers and subscribers; and fold reloads requested
while one is running.  Built through the public API, parsing C{inline},
on a L{Clock}.
"""

from __future__ import annotations

import errno
import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import LogLevel

from tests.support import captured_log, result_of
from tests.test_watcher import FakeNotifier
from twisted_demo.config import parse_message
from twisted_demo.live import (
    Failed,
    LiveConfigMetrics,
    LiveConfigService,
    Loaded,
    Outcome,
    Unchanged,
    Updated,
    inline,
)
from twisted_demo.live._drift import DRIFT_WARNING
from twisted_demo.live._log import LOG_BURST, LOG_INTERVAL
from twisted_demo.live._process import ParseCrashed
from twisted_demo.live._service import DEADLINE
from twisted_demo.live._watcher import IN_CLOSE_WRITE, WATCH_MASK
from twisted_demo.testing import AtomicWriter


class Setup:
    def __init__(self, path: Path, runner: Any = inline) -> None:
        path.write_bytes(b"message: first\n")
        self.path = path
        self.clock = Clock()
        self.live = LiveConfigService(
            path, parse_message, reactor=self.clock, runner=runner
        )
        self.registry = CollectorRegistry()
        self.outcomes: list[Outcome[str]] = []
        self.live.observe(LiveConfigMetrics(self.registry, "configmapdemo"))
        self.live.observe(self.outcomes.append)
        if runner is inline:
            assert isinstance(self.reload(), Updated)

    def reload(self) -> Outcome[str]:
        outcome: Outcome[str] = result_of(self.live.reload())
        return outcome

    def metric(self, name: str) -> float | None:
        value: float | None = self.registry.get_sample_value(name)
        return value


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path / "config.yaml")


def test_changed_file_is_swapped_in_and_logged_once(setup: Setup) -> None:
    old = setup.live.current
    assert old is not None
    setup.path.write_bytes(b"message: second\n")
    setup.clock.advance(5)
    with captured_log() as log:
        outcome = setup.reload()
    assert isinstance(outcome, Updated)
    assert outcome.old is old
    assert setup.live.current is outcome.new
    assert (outcome.new.value, outcome.new.loaded_at) == ("second", 5)
    assert outcome.new.path == str(setup.path)
    [line] = log.messages()
    assert line == (
        f"Config file updated: sha256 {old.sha256[:12]} -> "
        f"{outcome.new.sha256[:12]} ({setup.path})"
    )
    assert setup.metric("configmapdemo_config_reloads_total") == 1


def test_first_load_is_logged_as_loaded_and_not_counted_as_a_reload(
    tmp_path: Path,
) -> None:
    with captured_log() as log:
        setup = Setup(tmp_path / "config.yaml")
    current = setup.live.current
    assert current is not None
    assert log.messages() == [f"Loaded {setup.path}: sha256 {current.sha256[:12]}"]
    assert setup.metric("configmapdemo_config_reloads_total") == 0
    assert setup.metric("configmapdemo_config_last_reload_successful") == 1


def test_loaded_config_cannot_be_changed(setup: Setup) -> None:
    current = setup.live.current
    assert current is not None
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        current.value = "changed"  # type: ignore[misc]


def _update(setup: Setup, number: int) -> str:
    """
    Write and reload update C{number}; return the digest served, as logged.
    """
    setup.path.write_bytes(f"message: update {number}\n".encode())
    outcome = setup.reload()
    assert isinstance(outcome, Updated)
    return outcome.new.sha256[:12]


def test_storm_of_updates_is_logged_a_line_each_then_one_line_a_second(
    setup: Setup,
) -> None:
    first = setup.live.current
    assert first is not None
    with captured_log() as log:
        served = [first.sha256[:12]]
        served += [_update(setup, n) for n in range(LOG_BURST + 5)]
        assert log.messages() == [
            f"Config file updated: sha256 {old} -> {new} ({setup.path})"
            for old, new in itertools.pairwise(served[: LOG_BURST + 1])
        ]
        setup.clock.advance(LOG_INTERVAL)
    assert log.messages()[LOG_BURST:] == [
        f"Config file updated 5 times in {LOG_INTERVAL:.1f}s, logged as one line: "
        f"sha256 {served[LOG_BURST]} -> {served[-1]} ({setup.path})"
    ]
    assert setup.metric("configmapdemo_config_reloads_total") == LOG_BURST + 5
    assert setup.clock.getDelayedCalls() == []


def test_updates_a_second_apart_are_each_logged_at_once(setup: Setup) -> None:
    with captured_log() as log:
        for number in range(3 * LOG_BURST):
            _update(setup, number)
            setup.clock.advance(LOG_INTERVAL)
    assert len(log.messages()) == 3 * LOG_BURST
    assert all(m.startswith("Config file updated: sha256") for m in log.messages())


def test_update_held_back_is_logged_when_the_service_stops(setup: Setup) -> None:
    setup.live.startService()
    setup.clock.advance(0.1)
    for number in range(LOG_BURST):
        _update(setup, number)
    with captured_log() as log:
        last = _update(setup, LOG_BURST)
        assert log.messages() == []
        setup.live.stopService()
        assert len(log.messages()) == 1
        assert log.messages()[0].startswith("Config file updated: sha256 ")
        assert f"-> {last} " in log.messages()[0]
        # Once stopped, nothing is held back.
        _update(setup, LOG_BURST + 1)
        assert len(log.messages()) == 2
    assert setup.clock.getDelayedCalls() == []


def test_unchanged_file_is_not_reloaded_or_logged(setup: Setup) -> None:
    before = setup.live.current
    assert before is not None
    with captured_log() as log:
        outcome = setup.reload()
    assert outcome == Unchanged(before, recovered=False)
    assert setup.live.current is before
    assert log.messages() == []
    assert setup.metric("configmapdemo_config_reloads_total") == 0


def test_broken_yaml_keeps_last_good_config_and_is_reported_once(
    setup: Setup,
) -> None:
    good = setup.live.current
    setup.path.write_bytes(b"message: [broken\n")
    with captured_log() as log:
        first = setup.reload()
        again = setup.reload()
    expected = f"{setup.path} line 2, column 1: did not find expected ',' or ']'"
    assert first == Failed(expected, good, repeated=False)
    assert again == Failed(expected, good, repeated=True)
    assert setup.live.current is good
    assert setup.live.last_error == expected
    assert log.messages(LogLevel.error) == [
        "Config reload failed, still serving the last good config: " + expected
    ]
    # The same error in fields, for a structured log to index.
    [event] = [e for e in log.events if e.get("log_level") == LogLevel.error]
    assert event["error_detail"] == {
        "problem": "did not find expected ',' or ']'",
        "file": str(setup.path),
        "key": None,
        "line": 2,
        "column": 1,
    }
    assert first.detail is again.detail is setup.live.last_error_detail
    assert setup.metric("configmapdemo_config_reload_failures_total") == 1
    assert setup.metric("configmapdemo_config_last_reload_successful") == 0


def test_refusal_without_a_place_names_the_file_then_the_reason(
    setup: Setup,
) -> None:
    setup.path.write_bytes(b"other: 1\n")
    outcome = setup.reload()
    assert isinstance(outcome, Failed)
    assert outcome.error == f"{setup.path}: 'message' is missing"


def test_good_file_after_a_failure_clears_the_error(setup: Setup) -> None:
    setup.path.write_bytes(b"message: [broken\n")
    setup.reload()
    setup.path.write_bytes(b"message: fixed\n")
    assert isinstance(setup.reload(), Updated)
    assert (setup.live.last_error, setup.live.last_error_detail) == (None, None)
    assert setup.metric("configmapdemo_config_last_reload_successful") == 1


def test_reverting_to_the_served_bytes_after_a_failure_recovers(
    setup: Setup,
) -> None:
    setup.path.write_bytes(b"message: [broken\n")
    setup.reload()
    setup.path.write_bytes(b"message: first\n")
    with captured_log() as log:
        outcome = setup.reload()
    assert isinstance(outcome, Unchanged) and outcome.recovered
    assert outcome.current is setup.live.current
    assert (setup.live.last_error, setup.live.last_error_detail) == (None, None)
    assert setup.metric("configmapdemo_config_last_reload_successful") == 1
    assert log.messages(LogLevel.info) == [
        f"Config file {setup.path} is back to the version being served "
        f"(sha256 {outcome.current.sha256[:12]}); last error cleared"
    ]


def test_two_different_bad_files_are_each_counted(setup: Setup) -> None:
    setup.path.write_bytes(b"other: 1\n")
    setup.reload()
    setup.path.write_bytes(b"other: 2\n")
    outcome = setup.reload()
    assert isinstance(outcome, Failed) and not outcome.repeated
    assert setup.metric("configmapdemo_config_reload_failures_total") == 2


def test_missing_file_keeps_last_good_config(setup: Setup) -> None:
    good = setup.live.current
    setup.path.unlink()
    outcome = setup.reload()
    assert outcome == Failed(
        f"{setup.path}: cannot read: No such file or directory", good
    )
    assert setup.live.current is good


def test_new_generation_with_same_bytes_updates_generation_silently(
    tmp_path: Path,
) -> None:
    writer = AtomicWriter(tmp_path)
    writer.write({"config.yaml": b"message: same\n"})
    live = LiveConfigService(
        tmp_path / "config.yaml", parse_message, reactor=Clock(), runner=inline
    )
    result_of(live.reload())
    generation = writer.write({"config.yaml": b"message: same\n", "new": b"x"})
    with captured_log() as log:
        outcome = result_of(live.reload())
    assert isinstance(outcome, Unchanged)
    assert live.current is not None
    assert live.current.generation == live.generation == generation
    assert log.messages() == []


def test_reloads_requested_while_one_runs_fold_into_one_more(
    tmp_path: Path,
) -> None:
    pending: list[tuple[Callable[[bytes], str], bytes, Deferred[str]]] = []

    def run_later(parse: Callable[[bytes], str], data: bytes) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        pending.append((parse, data, d))
        return d

    def finish_one() -> None:
        parse, data, d = pending.pop()
        d.callback(parse(data))

    setup = Setup(tmp_path / "config.yaml", runner=run_later)
    answers = [setup.live.reload() for _ in range(4)]
    assert len(pending) == 1
    finish_one()
    assert len(pending) == 0, "the second reload finds the bytes just loaded"
    outcomes = [type(result_of(answer)) for answer in answers]
    assert outcomes == [Updated, Unchanged, Unchanged, Unchanged]


def test_parser_crash_is_a_failure_that_is_retried(tmp_path: Path) -> None:
    runs: list[str] = []

    def runner(parse: Callable[[bytes], str], data: bytes) -> Deferred[str]:
        runs.append("run")
        if len(runs) == 1:
            return fail(RuntimeError("the parser process died (killed by SIGSEGV)"))
        return inline(parse, data)

    setup = Setup(tmp_path / "config.yaml", runner=runner)
    with captured_log() as log:
        first = setup.reload()
    assert first == Failed(
        f"{setup.path}: cannot parse: the parser process died (killed by SIGSEGV)",
        None,
    )
    [logged] = log.messages()
    assert "Traceback" not in logged
    assert isinstance(setup.reload(), Updated)


def test_runner_that_raises_fails_the_reload_without_blocking_the_next(
    tmp_path: Path,
) -> None:
    runs: list[str] = []

    def runner(parse: Callable[[bytes], str], data: bytes) -> Deferred[str]:
        runs.append("run")
        if len(runs) == 1:
            raise RuntimeError("the runner broke")
        return inline(parse, data)

    setup = Setup(tmp_path / "config.yaml", runner=runner)
    first = setup.reload()
    assert first == Failed(f"{setup.path}: cannot parse: the runner broke", None)
    assert isinstance(setup.reload(), Updated)


def test_parse_function_that_crashes_inline_is_logged_with_its_traceback(
    tmp_path: Path,
) -> None:
    def crashes(data: bytes) -> str:
        raise KeyError("bug")

    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: hi\n")
    live = LiveConfigService(path, crashes, reactor=Clock(), runner=inline)
    with captured_log() as log:
        outcome = result_of(live.reload())
    # The failure names the exception and where, never its text, which
    # may quote the file.
    assert isinstance(outcome, Failed) and outcome.current is None
    assert outcome.error.startswith(f"{path}: cannot parse: KeyError (test_reload.py ")
    assert outcome.error.endswith(", in crashes)")
    assert "bug" not in outcome.error
    assert any(
        "Traceback" in m and "KeyError" in m for m in log.messages(LogLevel.critical)
    )


def test_subscribers_are_told_old_and_new_after_the_swap(setup: Setup) -> None:
    seen: list[tuple[Loaded[str] | None, Loaded[str], Loaded[str] | None]] = []
    setup.live.subscribe(lambda old, new: seen.append((old, new, setup.live.current)))
    old = setup.live.current
    setup.path.write_bytes(b"message: new\n")
    setup.reload()
    setup.reload()
    new = setup.live.current
    assert new is not None and new.value == "new"
    assert seen == [(old, new, new)]


def test_unsubscribed_callbacks_are_not_told(setup: Setup) -> None:
    told: list[str] = []
    unsubscribe = setup.live.subscribe(lambda old, new: told.append(new.value))
    stop_observing = setup.live.observe(lambda outcome: told.append("outcome"))
    unsubscribe()
    stop_observing()
    setup.path.write_bytes(b"message: new\n")
    setup.reload()
    assert told == []


def test_when_loaded_waits_for_the_first_valid_config(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: [broken\n")
    live = LiveConfigService(path, parse_message, reactor=Clock(), runner=inline)
    loaded = live.when_loaded()
    assert isinstance(result_of(live.reload()), Failed)
    assert not loaded.called
    assert live.current is None
    path.write_bytes(b"message: fixed\n")
    result_of(live.reload())
    assert result_of(loaded) is live.current
    assert result_of(live.when_loaded()) is live.current


def test_load_blocking_loads_or_raises_the_one_line_error(tmp_path: Path) -> None:
    from twisted_demo.live import ConfigError

    path = tmp_path / "config.yaml"
    path.write_bytes(b"other: 1\n")
    live = LiveConfigService(path, parse_message, reactor=Clock(), runner=inline)
    with pytest.raises(ConfigError) as e:
        live.load_blocking()
    assert str(e.value) == f"{path}: 'message' is missing"
    path.write_bytes(b"message: ok\n")
    loaded = live.load_blocking()
    assert loaded is live.current and loaded.value == "ok"


class Started:
    """
    A running service on a L{Clock} (so its watcher polls each tick), with
    the demo's metrics, drift included, and a runner the test controls
    (the first version is loaded inline, as L{load_blocking} does).
    """

    def __init__(
        self, path: Path, runner: Any = inline, tick: float = 0.1, **kw: Any
    ) -> None:
        self.path = path
        self.clock = Clock()
        self.tick = tick
        self.live = LiveConfigService(
            path, parse_message, reactor=self.clock, runner=runner, tick=tick, **kw
        )
        self.registry = CollectorRegistry()
        self.live.observe(
            LiveConfigMetrics(
                self.registry, "configmapdemo", drift=lambda: self.live.drift
            )
        )
        self.outcomes: list[Outcome[str]] = []
        self.live.observe(self.outcomes.append)
        with captured_log():
            # As a program starts: the first version is read before.
            self.live.load_blocking()
            self.live.startService()

    def advance(self, seconds: float) -> None:
        """
        Let C{seconds} pass, a tick at a time.
        """
        step = min(self.tick, 0.1)
        for _ in range(round(seconds / step)):
            self.clock.advance(step)

    def metric(self, name: str) -> float | None:
        value: float | None = self.registry.get_sample_value(name)
        return value

    def drift(self) -> float:
        """
        What C{/metrics} says of the drift.
        """
        value = self.metric("configmapdemo_config_drift_seconds")
        assert value is not None
        return value

    def served(self) -> str | None:
        current = self.live.current
        return None if current is None else current.value


class FlakyRunner:
    """
    Fails with C{failure()} the first C{failures} times, then parses inline.
    """

    def __init__(self, failures: int, failure: Callable[[], Exception]) -> None:
        self.failures = failures
        self.failure = failure
        self.calls: list[Any] = []

    def __call__(self, parse: Callable[[bytes], str], data: bytes) -> Deferred[str]:
        self.calls.append(data)
        if len(self.calls) <= self.failures:
            return fail(self.failure())
        return inline(parse, data)


class ParserUnavailable(Exception):
    """
    Stands for the parser process's failures: died, timed out, not started.
    """


def test_reload_failed_by_the_parser_is_retried_with_backoff_until_it_succeeds(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: first\n")
    runner = FlakyRunner(
        0, lambda: ParserUnavailable("the parser process died (killed by SIGKILL)")
    )
    # A tick of an hour: only the retries may reload.
    started = Started(path, runner, tick=3600)
    assert started.served() == "first"
    runner.failures = 5
    runner.calls.clear()
    path.write_bytes(b"message: second\n")
    with captured_log() as log:
        started.live.reload()
        # Retried after 0.5, 1, 2, 4 and 8 seconds: the sixth call works.
        for waited, calls in [(0.5, 2), (1, 3), (2, 4), (4, 5), (8, 6)]:
            assert len(runner.calls) == calls - 1
            started.clock.advance(waited)
            assert len(runner.calls) == calls, f"retry after {waited}s"
    assert started.served() == "second"
    error = f"{path}: cannot parse: the parser process died (killed by SIGKILL)"
    failures = [o for o in started.outcomes if isinstance(o, Failed)]
    assert [f.retry_in for f in failures] == [0.5, 1, 2, 4, 8]
    assert [f.error for f in failures] == [error] * 5
    # Reported once, counted once, while the last good config kept serving.
    assert log.messages(LogLevel.error) == [
        "Config reload failed, still serving the last good config: "
        f"{error} (trying again in 0.5s)"
    ]
    assert started.metric("configmapdemo_config_reload_failures_total") == 1
    assert started.metric("configmapdemo_config_last_reload_successful") == 1
    # Nothing is retried once it worked.
    started.advance(60)
    assert len(runner.calls) == 6


def test_retries_back_off_to_thirty_seconds(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: first\n")
    runner = FlakyRunner(1000, lambda: ParserUnavailable("could not start"))
    started = Started(path, runner, tick=3600)
    path.write_bytes(b"message: second\n")
    started.live.reload()
    started.advance(300)
    failures = [o for o in started.outcomes if isinstance(o, Failed)]
    delays = [f.retry_in for f in failures]
    assert delays[:8] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert set(delays[6:]) == {30}
    assert started.served() == "first"
    assert started.live.last_error == f"{path}: cannot parse: could not start"


def test_retry_policy_given_sets_each_wait(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: first\n")
    runner = FlakyRunner(0, lambda: ParserUnavailable("could not start"))
    asked: list[int] = []

    def policy(attempt: int) -> float:
        asked.append(attempt)
        return 10.0 * attempt

    started = Started(path, runner, tick=3600, retry_policy=policy)
    for message in [b"second", b"third"]:
        runner.failures = len(runner.calls) + 3
        path.write_bytes(b"message: " + message + b"\n")
        started.live.reload()
        started.advance(10 + 20 + 30 + 1)
        assert started.served() == message.decode()
    # As ClientService asks its retryPolicy: the failures in a row so far,
    # counted afresh after a success.
    assert asked == [1, 2, 3, 1, 2, 3]
    failures = [o for o in started.outcomes if isinstance(o, Failed)]
    assert [f.retry_in for f in failures] == [10, 20, 30] * 2


def test_notifier_factory_given_is_the_one_the_watcher_uses(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: first\n")
    notifiers: list[FakeNotifier] = []

    def make() -> FakeNotifier:
        notifiers.append(FakeNotifier())
        return notifiers[-1]

    # An hour's tick: only the notifier's event can make it reload.
    started = Started(path, tick=3600, notifier_factory=make)
    [notifier] = notifiers
    assert started.live.watching
    assert notifier.watched == [(str(tmp_path), WATCH_MASK)]
    path.write_bytes(b"message: second\n")
    notifier.event("config.yaml", IN_CLOSE_WRITE)
    started.clock.advance(3600)
    assert started.served() == "second"
    started.live.stopService()
    assert not notifier.connected


def test_refused_file_is_not_retried_until_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: first\n")
    runner = FlakyRunner(0, ParserUnavailable)
    started = Started(path, runner)
    path.write_bytes(b"other: 1\n")
    started.live.reload()
    started.advance(120)
    assert len(runner.calls) == 1, "the refused bytes are not parsed again"
    [failed] = [o for o in started.outcomes if isinstance(o, Failed) and not o.repeated]
    assert failed.retry_in is None
    assert started.served() == "first"


def test_retry_stops_when_the_file_is_refused_after_all(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: first\n")
    runner = FlakyRunner(0, ParserUnavailable)
    started = Started(path, runner, tick=3600)
    runner.failures = 3
    path.write_bytes(b"other: 1\n")
    started.live.reload()
    started.advance(120)
    failures = [o for o in started.outcomes if isinstance(o, Failed)]
    assert [f.retry_in for f in failures] == [0.5, 1, 2, None]
    assert started.live.last_error == f"{path}: 'message' is missing"
    assert len(runner.calls) == 4


def test_read_that_ran_out_of_descriptors_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: first\n")
    started = Started(path)
    real_open = os.open
    refusals = [OSError(errno.EMFILE, os.strerror(errno.EMFILE))]

    def open_at_the_limit(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if os.fspath(file) == str(path) and refusals:
            raise refusals.pop()
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_at_the_limit)
    path.write_bytes(b"message: second\n")
    started.live.reload()
    [failed] = [o for o in started.outcomes if isinstance(o, Failed)]
    assert failed.error == f"{path}: cannot read: Too many open files"
    assert failed.retry_in == 0.5
    started.advance(0.5)
    assert started.served() == "second"


def test_runner_that_never_answers_fails_the_reload_and_keeps_serving(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: first\n")
    hung: list[Deferred[str]] = []

    def runner(parse: Callable[[bytes], str], data: bytes) -> Deferred[str]:
        if hung:
            return inline(parse, data)
        d: Deferred[str] = Deferred()
        hung.append(d)
        return d

    # A tick of an hour: only the retry may reload.
    started = Started(path, runner, tick=3600)
    path.write_bytes(b"message: second\n")
    answer = started.live.reload()
    started.clock.advance(DEADLINE - 0.1)
    assert not answer.called
    started.clock.advance(0.1)
    error = f"{path}: cannot parse: no answer from the parser in {DEADLINE:g}s"
    assert result_of(answer) == Failed(error, started.live.current, retry_in=0.5)
    assert started.live.last_error == error
    assert started.served() == "first"
    assert started.metric("configmapdemo_config_last_reload_successful") == 0
    assert started.metric("configmapdemo_config_reload_failures_total") == 1
    # A late answer changes nothing; the retry parses the file.
    hung[0].callback("too late")
    started.advance(1)
    assert started.served() == "second"
    assert started.live.last_error is None
    assert started.metric("configmapdemo_config_last_reload_successful") == 1


def test_drift_counts_how_long_the_disk_differs_from_what_is_served(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: first\n")
    started = Started(path)
    started.advance(5)
    assert started.live.drift == started.drift() == 0
    with captured_log() as log:
        path.write_bytes(b"other: 1\n")
        started.advance(DRIFT_WARNING - 1)
        assert started.live.last_error is not None, "refused, so still differing"
        assert DRIFT_WARNING - 2 <= started.drift() <= DRIFT_WARNING
        assert log.messages(LogLevel.warn) == []
        started.advance(2)
        assert log.messages(LogLevel.warn) == [
            f"Config file {path} has differed from the config being served "
            f"for {DRIFT_WARNING:.0f}s"
        ]
        started.advance(60)
        assert started.drift() == pytest.approx(DRIFT_WARNING + 61, abs=0.5)
        assert len(log.messages(LogLevel.warn)) == 1, "one line per episode"
        path.write_bytes(b"message: second\n")
        started.advance(2)
    assert started.served() == "second"
    assert started.live.drift == started.drift() == 0
    assert any(
        line.startswith(f"Config file {path} matches the config being served again")
        for line in log.messages(LogLevel.info)
    )


def test_drift_shows_an_update_that_is_never_acted_on(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: first\n")

    def wedged(parse: Callable[[bytes], str], data: bytes) -> Deferred[str]:
        return Deferred()

    started = Started(path, wedged)
    started.advance(1)
    path.write_bytes(b"message: second\n")
    with captured_log():
        started.advance(10)
    assert started.served() == "first"
    assert 8 <= started.drift() <= 10


def crashes_on_odd(data: bytes) -> str:
    """
    A parse with a bug: it crashes on some valid-looking bytes.
    """
    if b"odd" in data:
        raise KeyError("odd")
    return parse_message(data)


@pytest.mark.parametrize("where", ["parser process", "inline"])
def test_parse_that_crashes_on_the_file_is_refused_not_retried(
    tmp_path: Path, where: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: first\n")
    calls: list[bytes] = []

    def runner(parse: Callable[[bytes], str], data: bytes) -> Deferred[str]:
        calls.append(data)
        if where == "inline":
            return inline(crashes_on_odd, data)
        if b"odd" in data:
            # What the parser process answers when parse raises.
            return fail(ParseCrashed("tests.test_reload:crashes_on_odd: KeyError"))
        return inline(parse, data)

    started = Started(path, runner, tick=3600)
    path.write_bytes(b"message: odd\n")
    with captured_log():
        started.live.reload()
        started.advance(120)
    assert len(calls) == 1, "the bytes that crash the parse are not parsed again"
    [failed] = [o for o in started.outcomes if isinstance(o, Failed)]
    assert failed.retry_in is None
    assert failed.error.startswith(f"{path}: cannot parse: ")
    assert started.served() == "first"
    # The next change is read as usual.
    path.write_bytes(b"message: even\n")
    started.live.reload()
    assert started.served() == "even"
