"""
One reload of a L{LiveConfigService}: skip known bytes, refuse bad ones,
swap good ones, tell observers and subscribers; and fold reloads requested
while one is running.  Built through the public API, parsing C{inline},
on a L{Clock}.
"""

from __future__ import annotations

import itertools
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
from twisted_demo.live._log import LOG_BURST, LOG_INTERVAL
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
        f"{outcome.new.sha256[:12]} ({setup.path}, generation None)"
    )
    assert setup.metric("configmapdemo_config_reloads_total") == 1


def test_first_load_is_logged_as_loaded_and_not_counted_as_a_reload(
    tmp_path: Path,
) -> None:
    with captured_log() as log:
        setup = Setup(tmp_path / "config.yaml")
    current = setup.live.current
    assert current is not None
    assert log.messages() == [
        f"Loaded {setup.path}: sha256 {current.sha256[:12]}, generation None"
    ]
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
            f"Config file updated: sha256 {old} -> {new} "
            f"({setup.path}, generation None)"
            for old, new in itertools.pairwise(served[: LOG_BURST + 1])
        ]
        setup.clock.advance(LOG_INTERVAL)
    assert log.messages()[LOG_BURST:] == [
        f"Config file updated 5 times in {LOG_INTERVAL:.1f}s, logged as one line: "
        f"sha256 {served[LOG_BURST]} -> {served[-1]} ({setup.path}, "
        "generation None)"
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
    assert setup.live.last_error is None
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
    assert setup.live.last_error is None
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
    assert outcome == Failed(f"{path}: cannot parse: 'bug'", None)
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
