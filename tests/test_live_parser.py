"""
The live service with its default runner, the parser process: what a
reload does when that process cannot start, passes its deadline or dies,
and the parameters the service hands it.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.internet.task import Clock
from zope.interface import implementer

from tests import parsers
from tests.support import captured_log, until
from tests.test_parser_process import ProcessesWithClock
from twisted_demo.config import parse_message
from twisted_demo.live import Failed, LiveConfigService, Outcome, Updated
from twisted_demo.live._process import DEATHS, STOP_TIMEOUT, ParserProcess

reactor: Any = _reactor

T = TypeVar("T")


@implementer(IReactorProcess, IReactorTime)
class _RefusingFork:
    """
    The reactor, except that the first C{refusals} spawns fail as fork
    does under a pids limit.
    """

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals

    def spawnProcess(self, *args: Any, **kwargs: Any) -> Any:
        if self.refusals:
            self.refusals -= 1
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        return reactor.spawnProcess(*args, **kwargs)

    def callLater(self, *args: Any, **kwargs: Any) -> Any:
        return reactor.callLater(*args, **kwargs)

    def seconds(self) -> float:
        return float(reactor.seconds())

    def getDelayedCalls(self) -> Any:
        return reactor.getDelayedCalls()


@pytest_twisted.ensureDeferred
async def test_parser_that_cannot_start_fails_the_reload_and_a_later_one_works(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: good\n")
    live = LiveConfigService(
        path,
        parse_message,
        reactor=reactor,
        runner=ParserProcess(_RefusingFork(refusals=2)),
    )
    outcomes: list[Outcome[str]] = []
    live.observe(outcomes.append)
    with captured_log() as log:
        # Starting the service starts the parser process (the first fork
        # refused) and the first reload (the second); the watcher's first
        # tick reloads again.
        live.startService()
        loaded = await live.when_loaded()
    await live.stopService()
    failed, updated = outcomes
    assert failed == Failed(
        f"{path}: cannot parse: the parser process could not start"
        " (Resource temporarily unavailable)",
        None,
        retry_in=0.5,
    )
    assert updated == Updated(None, loaded)
    assert live.last_error is None
    assert loaded.value == "good"
    assert any(
        "could not start (Resource temporarily unavailable)" in m
        for m in log.messages()
    )


async def _first_outcome(live: LiveConfigService[T]) -> Outcome[T]:
    """
    The outcome of C{live}'s first reload, started as a program starts it
    and stopped after.
    """
    outcomes: list[Outcome[T]] = []
    live.observe(outcomes.append)
    live.startService()
    try:
        await until(reactor, lambda: bool(outcomes), "the first reload")
    finally:
        await live.stopService()
    return outcomes[0]


@pytest_twisted.ensureDeferred
async def test_parse_that_crashes_in_the_parser_process_refuses_the_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: good\n")
    # The default runner: a real parser process, where parsers.crash raises.
    live = LiveConfigService(path, parsers.crash, reactor=reactor, tick=3600)
    with captured_log():
        failed = await _first_outcome(live)
    assert isinstance(failed, Failed)
    # The parse function's import path, the exception's type and where it
    # was raised; never the exception's text, which may quote the file.
    crashed = r": cannot parse: [\w.]+:\w+: \w+ \(\w+\.py line \d+, in \w+\)"
    assert re.fullmatch(re.escape(str(path)) + crashed, failed.error), failed.error
    assert "tests.parsers:crash: KeyError (parsers.py line " in failed.error
    assert str(live.last_error) == failed.error
    # docs/library.md quotes one such error, as last_error gives it.
    library = (Path(__file__).parent.parent / "docs" / "library.md").read_text()
    [row] = [
        line for line in library.splitlines() if line.startswith("| `ParseCrashed` |")
    ]
    [quoted] = re.findall(r"`([^`]*cannot parse: [^`]*)`", row)
    assert re.fullmatch(r"…/\S+" + crashed, quoted), quoted
    # The same bytes would crash it again: they wait for their next change.
    assert failed.retry_in is None


@pytest_twisted.ensureDeferred
async def test_parser_memory_is_the_parser_process_limit(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"anything\n")
    memory = 48 * 2**20
    live = LiveConfigService(
        path, parsers.where, reactor=reactor, tick=3600, parser_memory=memory
    )
    live.startService()
    try:
        loaded = await live.when_loaded()
    finally:
        await live.stopService()
    assert loaded.value.address_space == (memory, memory)


def _on_clock(
    path: Path, parse: Callable[[bytes], Any], **kw: Any
) -> tuple[Clock, LiveConfigService[Any], list[Outcome[Any]]]:
    """
    A service with an hour's tick whose time is a L{Clock}, parsing in
    real parser processes, and the list of the outcomes it reports.
    """
    clock = Clock()
    live = LiveConfigService(
        path, parse, reactor=ProcessesWithClock(clock), tick=3600, **kw
    )
    outcomes: list[Outcome[Any]] = []
    live.observe(outcomes.append)
    return clock, live, outcomes


async def _stop(live: LiveConfigService[Any], clock: Clock) -> None:
    """
    Stop C{live}, killing a parser process still in a parse.
    """
    stopped = live.stopService()
    clock.advance(STOP_TIMEOUT)
    await stopped


@pytest_twisted.ensureDeferred
async def test_service_deadline_is_the_parser_process_deadline(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "hanging.pid"
    path = tmp_path / "config.yaml"
    # parsers.hang's input is the file it marks once it hangs.
    path.write_bytes(str(marker).encode())
    clock, live, outcomes = _on_clock(path, parsers.hang, deadline=7)
    with captured_log():
        live.startService()
        try:
            await until(reactor, marker.exists, "the parse to hang")
            # Its first steps may have used CPU, which renews the deadline
            # once; asleep, it uses none.
            for _ in range(2):
                clock.advance(7.0)
                if outcomes:
                    break
        finally:
            await _stop(live, clock)
    [failed] = outcomes
    assert failed == Failed(
        f"{path}: cannot parse: the parse passed its deadline of 7 s; "
        "the parser process was killed",
        None,
        retry_in=0.5,
    )


def has(outcomes: list[Outcome[Any]], count: int) -> Callable[[], bool]:
    """
    Whether C{outcomes} holds C{count} outcomes.
    """
    return lambda: len(outcomes) == count


@pytest_twisted.ensureDeferred
async def test_file_that_kills_the_parser_each_time_is_refused_after_three(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"SIGKILL")
    clock, live, outcomes = _on_clock(path, parsers.die)
    with captured_log():
        live.startService()
        try:
            # Tried again after 0.5 s and 1 s, as the service's own failure.
            for count, retry in [(1, 0.5), (2, 1.0)]:
                await until(reactor, has(outcomes, count), "a failure")
                failed = outcomes[-1]
                assert isinstance(failed, Failed)
                assert failed.retry_in == retry
                clock.advance(retry)
            await until(reactor, has(outcomes, 3), "the third failure")
            # No retry waits (only the watcher's hourly tick): the file is
            # refused until it changes.
            assert [c.getTime() for c in clock.getDelayedCalls()] == [3600]
            path.write_bytes(b"SIGABRT")
            second = await live.reload()
        finally:
            await _stop(live, clock)
    refused = outcomes[2]
    assert refused == Failed(
        f"{path}: cannot parse: tests.parsers:die: the parser process ended "
        f"(killed by SIGKILL) parsing this input, {DEATHS} times in a row",
        None,
        retry_in=None,
    )
    # Other bytes that kill it are tried again: the count starts afresh.
    assert isinstance(second, Failed)
    assert second.retry_in == 0.5


@pytest_twisted.ensureDeferred
async def test_refusal_keeps_its_fields_through_the_parser_process(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: good\npassword: !!int hunter2\n")
    # The default runner: the refusal crosses from the parser process as
    # its fields, not as text to be read back.
    live = LiveConfigService(path, parse_message, reactor=reactor, tick=3600)
    with captured_log() as log:
        failed = await _first_outcome(live)
    assert isinstance(failed, Failed) and failed.detail is not None
    assert failed.detail.as_dict() == {
        "problem": "not a valid integer",
        "file": str(path),
        "key": None,
        "line": 2,
        "column": 11,
    }
    assert failed.error == f"{path} line 2, column 11: not a valid integer"
    assert live.last_error_detail is failed.detail
    assert not any("hunter2" in m for m in log.messages())
