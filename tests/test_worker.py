"""
The parser process: work done in a child of lower priority, whose crash
fails the work it had and nothing else.
"""

from __future__ import annotations

import errno
import os
import pickle
import threading
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.interfaces import IReactorProcess
from zope.interface import implementer

from tests.support import captured_log, niceness_of, until
from twisted_demo.config import parse_message
from twisted_demo.live import (
    ConfigError,
    Failed,
    LiveConfigService,
    Outcome,
    Updated,
)
from twisted_demo.worker import (
    ParserProcess,
    ParserRunner,
    WorkerDied,
    WorkerError,
    _Child,
)

reactor: Any = _reactor


@pytest_twisted.async_yield_fixture
async def parser() -> AsyncIterator[ParserProcess]:
    service = ParserProcess(reactor, reactor)
    service.startService()
    try:
        yield service
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_config_is_parsed_in_a_child_process() -> None:
    runner = ParserRunner(reactor)
    runner.startService()
    try:
        message = await runner(parse_message, b"message: from the child\n")
        with pytest.raises(ConfigError) as refused:
            await runner(parse_message, b"other: 1\n")
        child = await runner.process(os.getpid)
    finally:
        await runner.stopService()
    assert message == "from the child"
    assert str(refused.value) == "'message' is missing"
    assert child != os.getpid()


@pytest_twisted.ensureDeferred
async def test_parse_function_that_crashes_fails_with_one_line() -> None:
    runner = ParserRunner(reactor)
    try:
        with pytest.raises(WorkerError) as e:
            await runner(os.fspath, 42)
    finally:
        await runner.stopService()
    assert str(e.value).startswith("TypeError: ")
    assert "\n" not in str(e.value)


@pytest_twisted.ensureDeferred
async def test_child_does_not_import_modules_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "yaml.py").write_text("raise ImportError('a stray yaml.py')\n")
    monkeypatch.chdir(tmp_path)
    runner = ParserRunner(reactor)
    try:
        message = await runner(parse_message, b"message: parsed\n")
    finally:
        await runner.stopService()
    assert message == "parsed"


@pytest_twisted.ensureDeferred
async def test_child_runs_nicer_than_the_server(parser: ParserProcess) -> None:
    child = await parser(os.getpid)
    assert niceness_of(child) == niceness_of(os.getpid()) + 10


@pytest_twisted.ensureDeferred
async def test_work_sent_while_the_child_is_busy_comes_back_in_order(
    parser: ParserProcess,
) -> None:
    calls = [parser(partial(sum, [n, 1])) for n in range(5)]
    assert [await d for d in calls] == [1, 2, 3, 4, 5]


@pytest_twisted.ensureDeferred
async def test_work_larger_than_the_pipe_holds_arrives_whole(
    parser: ParserProcess,
) -> None:
    # Four times the largest pipe a user may set up without privileges: the
    # write that an idle child takes at once cannot hold it all.
    size = 4 * int(Path("/proc/sys/fs/pipe-max-size").read_text())
    big = parser(partial(len, b"x" * size))
    after = parser(partial(sum, [1, 2]))
    assert await big == size
    assert await after == 3


def test_work_goes_through_a_transport_that_shows_no_pipes() -> None:
    written: list[tuple[int, bytes]] = []

    class Transport:
        def writeToChild(self, fd: int, data: bytes) -> None:
            written.append((fd, data))

    child = _Child()
    child.makeConnection(Transport())
    child.send(partial(sum, [1, 2]))
    [(fd, frame)] = written
    assert fd == 0
    assert pickle.loads(frame[4:])() == 3


@pytest_twisted.ensureDeferred
async def test_work_that_raises_fails_with_the_childs_traceback(
    parser: ParserProcess,
) -> None:
    with pytest.raises(WorkerError, match=r"FileNotFoundError.*no-such-file"):
        await parser(partial(Path.read_bytes, Path("/no-such-file")))
    # The child is still there for the next call.
    assert await parser(partial(sum, [1, 2])) == 3


@pytest_twisted.ensureDeferred
async def test_result_that_cannot_be_pickled_fails_that_work_only(
    parser: ParserProcess,
) -> None:
    with pytest.raises(WorkerError, match="pickle"):
        await parser(threading.Lock)
    assert await parser(partial(sum, [1, 2])) == 3


@pytest_twisted.ensureDeferred
async def test_crashed_child_fails_its_work_and_is_replaced(
    parser: ParserProcess,
) -> None:
    first = await parser(os.getpid)
    with pytest.raises(WorkerDied, match="killed by SIGABRT"):
        await parser(os.abort)
    second = await parser(os.getpid)
    assert second != first
    assert parser.pid == second


@pytest_twisted.ensureDeferred
async def test_stopping_ends_the_child(parser: ParserProcess) -> None:
    child = await parser(os.getpid)
    await parser.stopService()
    assert parser.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
    # A later call starts another.
    assert await parser(os.getpid) not in (None, child)


@pytest_twisted.ensureDeferred
async def test_stderr_of_the_child_is_logged(parser: ParserProcess) -> None:
    with captured_log() as log:
        await parser(partial(os.write, 2, b"parser says hello\n"))
        await until(
            reactor,
            lambda: any("parser says hello" in m for m in log.messages()),
            "the child's stderr in the log",
        )


@implementer(IReactorProcess)
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
        runner=ParserRunner(_RefusingFork(refusals=2)),
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
        "could not start (Resource temporarily unavailable); another try" in m
        for m in log.messages()
    )
