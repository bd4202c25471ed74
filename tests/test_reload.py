"""
One reload: skip known bytes, refuse bad ones, swap good ones; and fold
reloads requested while one is running.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import LogLevel

from tests.support import captured_log
from twisted_demo.metrics import ReloadMetrics
from twisted_demo.reload import (
    LOG_BURST,
    LOG_INTERVAL,
    Outcome,
    Reloader,
    ReloadResult,
)
from twisted_demo.source import ConfigFile
from twisted_demo.store import ConfigStore
from twisted_demo.testing import AtomicWriter


class Setup:
    def __init__(self, path: Path, run: Any = None) -> None:
        path.write_bytes(b"message: first\n")
        self.path = path
        self.file = ConfigFile(path)
        self.clock = Clock()
        self.store = ConfigStore(self.file.load(self.clock.seconds()))
        self.metrics = ReloadMetrics()
        self.results: list[ReloadResult] = []
        kwargs = {} if run is None else {"run": run}
        self.reloader = Reloader(
            self.file,
            self.store,
            self.clock,
            observers=[self.metrics.observe, self.results.append],
            **kwargs,
        )

    def reload(self) -> ReloadResult:
        results: list[ReloadResult] = []
        self.reloader.reload().addCallback(results.append)
        [result] = results
        return result

    def metric(self, name: str) -> float | None:
        value: float | None = self.metrics.registry.get_sample_value(name)
        return value


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path / "config.yaml")


def test_changed_file_is_swapped_in_and_logged_once(setup: Setup) -> None:
    old = setup.store.current
    assert old is not None
    setup.path.write_bytes(b"message: second\n")
    setup.clock.advance(5)
    with captured_log() as log:
        result = setup.reload()
    assert result.outcome is Outcome.UPDATED
    assert setup.store.current is result.config
    assert result.config is not None
    assert (result.config.message, result.config.loaded_at) == ("second", 5)
    [line] = log.messages()
    assert line.startswith(
        f"Config file updated: sha256 {old.sha256[:12]} -> "
        f"{result.config.sha256[:12]} ({setup.path}, generation None)"
    )
    assert setup.metric("configmapdemo_config_reloads_total") == 1


def _update(setup: Setup, number: int) -> str:
    """
    Write and reload update C{number}; return the digest served, as logged.
    """
    setup.path.write_bytes(f"message: update {number}\n".encode())
    result = setup.reload()
    assert result.outcome is Outcome.UPDATED
    assert result.config is not None
    return result.config.sha256[:12]


def test_storm_of_updates_is_logged_a_line_each_then_one_line_a_second(
    setup: Setup,
) -> None:
    first = setup.store.current
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
    setup.reloader.update_log.startService()
    for number in range(LOG_BURST):
        _update(setup, number)
    with captured_log() as log:
        last = _update(setup, LOG_BURST)
        assert log.messages() == []
        setup.reloader.update_log.stopService()
        assert len(log.messages()) == 1
        assert log.messages()[0].startswith("Config file updated: sha256 ")
        assert f"-> {last} " in log.messages()[0]
        # Once stopped, nothing is held back.
        _update(setup, LOG_BURST + 1)
        assert len(log.messages()) == 2
    assert setup.clock.getDelayedCalls() == []


def test_unchanged_file_is_not_reloaded_or_logged(setup: Setup) -> None:
    before = setup.store.current
    with captured_log() as log:
        result = setup.reload()
    assert result.outcome is Outcome.UNCHANGED
    assert setup.store.current is before
    assert log.messages() == []
    assert setup.metric("configmapdemo_config_reloads_total") == 0


def test_broken_yaml_keeps_last_good_config_and_is_reported_once(
    setup: Setup,
) -> None:
    good = setup.store.current
    setup.path.write_bytes(b"message: [broken\n")
    with captured_log() as log:
        first = setup.reload()
        again = setup.reload()
    assert (first.outcome, again.outcome) == (Outcome.FAILED, Outcome.FAILED)
    assert again.repeated and not first.repeated
    assert setup.store.current is good
    expected = f"{setup.path} line 2, column 1: did not find expected ',' or ']'"
    assert setup.reloader.last_error == expected
    assert log.messages(LogLevel.error) == [
        "Config reload failed, still serving the last good config: " + expected
    ]
    assert setup.metric("configmapdemo_config_reload_failures_total") == 1
    assert setup.metric("configmapdemo_config_last_reload_successful") == 0


def test_good_file_after_a_failure_clears_the_error(setup: Setup) -> None:
    setup.path.write_bytes(b"message: [broken\n")
    setup.reload()
    setup.path.write_bytes(b"message: fixed\n")
    result = setup.reload()
    assert result.outcome is Outcome.UPDATED
    assert setup.reloader.last_error is None
    assert setup.metric("configmapdemo_config_last_reload_successful") == 1


def test_reverting_to_the_served_bytes_after_a_failure_recovers(
    setup: Setup,
) -> None:
    setup.path.write_bytes(b"message: [broken\n")
    setup.reload()
    setup.path.write_bytes(b"message: first\n")
    with captured_log() as log:
        result = setup.reload()
    assert (result.outcome, result.recovered) == (Outcome.UNCHANGED, True)
    assert setup.reloader.last_error is None
    assert setup.metric("configmapdemo_config_last_reload_successful") == 1
    assert len(log.messages(LogLevel.info)) == 1


def test_two_different_bad_files_are_each_counted(setup: Setup) -> None:
    setup.path.write_bytes(b"other: 1\n")
    setup.reload()
    setup.path.write_bytes(b"other: 2\n")
    result = setup.reload()
    assert not result.repeated
    assert setup.metric("configmapdemo_config_reload_failures_total") == 2


def test_missing_file_keeps_last_good_config(setup: Setup) -> None:
    good = setup.store.current
    setup.path.unlink()
    result = setup.reload()
    assert result.outcome is Outcome.FAILED
    assert result.error == f"{setup.path}: cannot read: No such file or directory"
    assert setup.store.current is good


def test_new_generation_with_same_bytes_updates_generation_silently(
    tmp_path: Path,
) -> None:
    writer = AtomicWriter(tmp_path)
    writer.write({"config.yaml": b"message: same\n"})
    setup_file = ConfigFile(tmp_path / "config.yaml")
    store = ConfigStore(setup_file.load(0))
    reloader = Reloader(setup_file, store, Clock())
    generation = writer.write({"config.yaml": b"message: same\n", "new": b"x"})
    with captured_log() as log:
        reloader.reload()
    assert store.current is not None
    assert store.current.generation == generation
    assert log.messages() == []


def test_reloads_requested_while_one_runs_fold_into_one_more(
    tmp_path: Path,
) -> None:
    pending: list[tuple[Callable[[], object], Deferred[object]]] = []

    def run_later(f: Callable[[], object]) -> Deferred[object]:
        d: Deferred[object] = Deferred()
        pending.append((f, d))
        return d

    setup = Setup(tmp_path / "config.yaml", run=run_later)
    setup.path.write_bytes(b"message: second\n")
    answers = [setup.reloader.reload() for _ in range(4)]
    assert len(pending) == 1
    f, d = pending.pop()
    d.callback(f())
    assert len(pending) == 1
    f, d = pending.pop()
    d.callback(f())
    outcomes: list[Outcome] = []
    for answer in answers:
        answer.addCallback(lambda r: outcomes.append(r.outcome))
    assert outcomes == [Outcome.UPDATED] + [Outcome.UNCHANGED] * 3
    assert pending == []


def test_crash_while_reading_is_reported_not_raised(tmp_path: Path) -> None:
    setup = Setup(
        tmp_path / "config.yaml", run=lambda f: fail(RuntimeError("disk on fire"))
    )
    with captured_log() as log:
        result = setup.reload()
    assert result.outcome is Outcome.FAILED
    assert result.error == f"{setup.path}: internal error while reloading"
    assert any("disk on fire" in m for m in log.messages(LogLevel.critical))
