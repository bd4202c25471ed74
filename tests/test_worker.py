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
from twisted.internet.defer import fail, succeed
from twisted.internet.interfaces import IReactorProcess
from zope.interface import implementer

from tests.support import captured_log, niceness_of, result_of, until
from twisted_demo.config import Config, parse_config
from twisted_demo.reload import Outcome, Reloader
from twisted_demo.source import ConfigFile
from twisted_demo.store import ConfigStore
from twisted_demo.testing import AtomicWriter
from twisted_demo.worker import ParserProcess, WorkerDied, WorkerError, _Child

reactor: Any = _reactor


@pytest_twisted.async_yield_fixture
async def parser() -> AsyncIterator[ParserProcess]:
    service = ParserProcess(reactor, reactor)
    service.startService()
    try:
        yield service
    finally:
        await service.stopService()


def test_config_survives_pickling_with_a_read_only_mapping() -> None:
    config = parse_config(
        b"message: hi\nnested: {a: [1, 2]}\n", source="c.yaml", loaded_at=1.5
    )
    copy: Config = pickle.loads(pickle.dumps(config))
    assert copy == config
    with pytest.raises(TypeError):
        copy.data["message"] = "changed"  # type: ignore[index]


@pytest_twisted.ensureDeferred
async def test_config_is_parsed_in_a_child_process(
    parser: ParserProcess, tmp_path: Path
) -> None:
    writer = AtomicWriter(tmp_path)
    writer.write({"config.yaml": b"message: from the child\nlimits: {cpu: 2}\n"})
    config_file = ConfigFile(tmp_path / "config.yaml")
    reading = await parser(partial(ConfigFile.read_unless_known, config_file, (), 7.0))
    assert reading.config is not None
    assert reading.config.message == "from the child"
    assert reading.config.data["limits"] == {"cpu": 2}
    assert reading.config.loaded_at == 7.0
    assert reading.generation == os.readlink(tmp_path / "..data")
    assert await parser(os.getpid) == parser.pid != os.getpid()


@pytest_twisted.ensureDeferred
async def test_child_does_not_import_modules_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "yaml.py").write_text("raise ImportError('a stray yaml.py')\n")
    (tmp_path / "config.yaml").write_bytes(b"message: parsed\n")
    monkeypatch.chdir(tmp_path)
    parser = ParserProcess(reactor, reactor)
    try:
        reading = await parser(
            partial(
                ConfigFile.read_unless_known,
                ConfigFile(tmp_path / "config.yaml"),
                (),
                0,
            )
        )
    finally:
        await parser.stopService()
    assert reading.config is not None and reading.config.message == "parsed"


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


def _serving_good(tmp_path: Path, run: Any) -> tuple[Path, ConfigStore, Reloader]:
    """
    A reloader using C{run}, of a file whose config C{message: good} is
    being served.
    """
    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: good\n")
    config_file = ConfigFile(path)
    store = ConfigStore(config_file.load(0))
    return path, store, Reloader(config_file, store, reactor, run=run)


def test_reload_whose_parser_dies_keeps_the_last_good_config(
    tmp_path: Path,
) -> None:
    died = "the parser process died (killed by SIGSEGV)"
    path, store, reloader = _serving_good(tmp_path, lambda work: fail(WorkerDied(died)))
    path.write_bytes(b"message: crashes the parser\n")
    with captured_log() as log:
        result = result_of(reloader.reload())
    assert result.outcome is Outcome.FAILED
    assert store.current is not None and store.current.message == "good"
    assert reloader.last_error == f"{path}: cannot parse: {died}"
    [logged] = log.messages()
    assert "still serving the last good config" in logged
    assert "Traceback" not in logged


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


@pytest_twisted.ensureDeferred
async def test_parser_that_cannot_start_fails_the_reload_and_a_later_one_works(
    tmp_path: Path,
) -> None:
    parser = ParserProcess(_RefusingFork(refusals=2), reactor)
    path, store, reloader = _serving_good(tmp_path, parser)
    with captured_log() as log:
        parser.startService()
        path.write_bytes(b"message: new\n")
        failed = await reloader.reload()
        updated = await reloader.reload()
    await parser.stopService()
    assert failed.outcome is Outcome.FAILED
    assert reloader.last_error is None
    assert failed.error == (
        f"{path}: cannot parse: the parser process could not start"
        " (Resource temporarily unavailable)"
    )
    assert updated.outcome is Outcome.UPDATED
    assert store.current is not None and store.current.message == "new"
    assert any(
        "could not start (Resource temporarily unavailable); another try" in m
        for m in log.messages()
    )


def test_runner_that_raises_fails_the_reload_without_blocking_the_next(
    tmp_path: Path,
) -> None:
    runs: list[str] = []

    def run(work: Any) -> Any:
        runs.append("called")
        if len(runs) == 1:
            raise RuntimeError("the runner broke")
        return succeed(work())

    path, _, reloader = _serving_good(tmp_path, run)
    path.write_bytes(b"message: new\n")
    with captured_log():
        first = result_of(reloader.reload())
    second = result_of(reloader.reload())
    assert first.outcome is Outcome.FAILED
    assert first.error == f"{path}: internal error while reloading"
    assert second.outcome is Outcome.UPDATED
