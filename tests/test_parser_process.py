"""
The parser process: parse functions called by import path in a child of
lower priority, with a deadline and limits, whose failures fail one parse
and nothing else.

These tests run real child processes.  Deadlines and the stop timeout run
on a L{Clock} wherever a test decides when they pass; waits for a real
process are polls with a deadline.
"""

from __future__ import annotations

import ast
import errno
import os
import re
import signal
import struct
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, AnyStr, TypeVar, cast

import pytest
import pytest_twisted
from twisted.application.service import MultiService, Service
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IDelayedCall,
    IProcessProtocol,
    IProcessTransport,
    IReactorProcess,
    IReactorTime,
)
from twisted.internet.task import Clock, deferLater
from twisted.logger import (
    ILogObserver,
    LogEvent,
    LogLevel,
    formatEvent,
    globalLogPublisher,
)
from twisted.python.failure import Failure
from zope.interface import implementer

import twisted_demo.live._child
import twisted_demo.live._process
from tests import parsers
from tests.support import until
from tests.test_docs import ROOT
from twisted_demo.live._errors import ConfigError
from twisted_demo.live._process import (
    DEATHS,
    STOP_TIMEOUT,
    Limits,
    ParseCrashed,
    ParserProcess,
    ParserUnavailable,
    parse_in_child,
)
from twisted_demo.live._spawn import killed_by
from twisted_demo.server import DRAIN_TIMEOUT
from twisted_demo.signals import StopInOrder

reactor: Any = _reactor

_T = TypeVar("_T")

#: How long a parse may take to answer before the test fails.
WAIT = 30.0

#: A deadline no parse in these tests comes near, for tests where it
#: must not pass.
NEVER = 3600.0


def gone(pid: int) -> bool:
    """
    Whether process C{pid} has ended and been reaped.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@implementer(IReactorProcess, IReactorTime)
class ProcessesWithClock:
    """
    Real processes from the global reactor, and time from a L{Clock}; a
    C{program} given, that Python program is what they run; a C{refusal}
    given, no process starts and that is raised.
    """

    def __init__(
        self,
        clock: Clock,
        program: str | None = None,
        refusal: OSError | None = None,
    ) -> None:
        self.clock = clock
        self.program = program
        self.refusal = refusal

    def spawnProcess(
        self,
        processProtocol: IProcessProtocol,
        executable: bytes | str,
        args: Sequence[bytes | str],
        env: Mapping[AnyStr, AnyStr] | None = None,
        path: bytes | str | None = None,
        uid: int | None = None,
        gid: int | None = None,
        usePTY: bool = False,
        childFDs: Mapping[int, int | str] | None = None,
    ) -> IProcessTransport:
        if self.refusal is not None:
            raise self.refusal
        if self.program is not None:
            # In place of the parser process.
            args = [sys.executable, "-c", self.program]
        transport: IProcessTransport = reactor.spawnProcess(
            processProtocol,
            executable,
            args,
            env=env,
            path=path,
            uid=uid,
            gid=gid,
            usePTY=usePTY,
            childFDs=childFDs,
        )
        return transport

    def seconds(self) -> float:
        return self.clock.seconds()

    def callLater(
        self, delay: float, callable: Callable[..., Any], *args: object, **kw: object
    ) -> IDelayedCall:
        return self.clock.callLater(delay, callable, *args, **kw)

    def getDelayedCalls(self) -> Sequence[IDelayedCall]:
        return self.clock.getDelayedCalls()


def impostor(reply: bytes) -> str:
    """
    A program that reads one request, answers it with C{reply}, then waits
    for its input to end.
    """
    return (
        "import struct, sys\n"
        "(n,) = struct.unpack('>I', sys.stdin.buffer.read(4))\n"
        "sys.stdin.buffer.read(n)\n"
        f"sys.stdout.buffer.write({reply!r})\n"
        "sys.stdout.flush()\n"
        "sys.stdin.buffer.read()\n"
    )


class Services:
    """
    Makes parser processes, and stops each at the end of the test.
    """

    def __init__(self) -> None:
        self.clock = Clock()
        self._made: list[ParserProcess] = []

    def on_reactor(self, deadline: float = NEVER, **kw: Any) -> ParserProcess:
        """
        A started service on the real reactor.
        """
        return self._start(ParserProcess(reactor, deadline=deadline, **kw))

    def on_clock(self, deadline: float = 5.0, **kw: Any) -> ParserProcess:
        """
        A started service whose deadlines run on L{clock}.
        """
        return self._start(
            ParserProcess(ProcessesWithClock(self.clock), deadline=deadline, **kw)
        )

    def _start(self, service: ParserProcess) -> ParserProcess:
        service.startService()
        self._made.append(service)
        return service

    async def stop(self) -> None:
        for service in self._made:
            if service.running:
                stopped = service.stopService()
                # A child still in a parse is killed.
                self.clock.advance(STOP_TIMEOUT)
                await stopped


@pytest_twisted.async_yield_fixture
async def services() -> AsyncIterator[Services]:
    made = Services()
    try:
        yield made
    finally:
        await made.stop()


@implementer(ILogObserver)
class Events(list[LogEvent]):
    def __call__(self, event: LogEvent) -> None:
        self.append(event)

    def warnings(self) -> list[LogEvent]:
        """
        The events logged at warn or above.
        """
        serious = {LogLevel.warn, LogLevel.error, LogLevel.critical}
        return [e for e in self if e["log_level"] in serious]


@contextmanager
def logged() -> Iterator[Events]:
    events = Events()
    globalLogPublisher.addObserver(events)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(events)


async def hang_in_child(
    service: ParserProcess, tmp_path: Path
) -> tuple[Deferred[None], int]:
    """
    Start a parse that never returns; wait until the child is in it.

    @return: The parse's Deferred and the child's pid.
    """
    marker = tmp_path / "hanging.pid"
    result = service(parsers.hang, str(marker).encode())
    await until(reactor, marker.exists, "the child to start the hanging parse")
    return result, int(marker.read_text())


def within(d: Deferred[_T]) -> Deferred[_T]:
    """
    C{d}, failed with a timeout if it has not fired after L{WAIT} seconds,
    so that a test of a broken parser process fails instead of hanging.
    """
    return d.addTimeout(WAIT, reactor)


async def failure_of(d: Deferred[Any]) -> BaseException:
    """
    The exception C{d} fails with (within L{WAIT} seconds).
    """
    try:
        value = await within(d)
    except Exception as e:
        return e
    raise AssertionError(f"expected a failure, got {value!r}")


@pytest_twisted.ensureDeferred
async def test_value_comes_back_for_bytes_and_for_files(services: Services) -> None:
    parse = services.on_reactor()
    assert await within(parse(parsers.echo, b"message: hi\n")) == b"message: hi\n"
    files = {"tls.crt": b"CERT", "tls.key": b"KEY", "empty": b""}
    assert await within(parse(parsers.echo, files)) == files
    value = await within(parse(parsers.exception_value, b"a value"))
    assert isinstance(value, ValueError)
    assert value.args == ("a value",)


@pytest_twisted.ensureDeferred
async def test_parse_runs_in_a_child_at_lower_priority_without_twisted(
    services: Services,
) -> None:
    parse = services.on_reactor()
    child = await within(parse(parsers.where, b""))
    assert child.pid != os.getpid()
    assert child.niceness == min(os.nice(0) + 10, 19)
    assert child.address_space == (Limits().address_space,) * 2
    assert child.cwd == "/"
    assert "twisted" not in child.modules
    assert "tests" in child.modules


@pytest_twisted.ensureDeferred
async def test_preloaded_modules_are_imported_before_the_first_request(
    services: Services,
) -> None:
    plain = await within(services.on_reactor()(parsers.where, b""))
    parse = services.on_reactor(preload=["xml.dom.minidom", "no_such_module"])
    child = await within(parse(parsers.where, b""))
    assert "xml" not in plain.modules
    assert "xml" in child.modules
    # A module that cannot be imported is left for the parse that needs it.
    assert await within(parse(parsers.echo, b"still parsed")) == b"still parsed"


@pytest_twisted.ensureDeferred
async def test_child_imports_nothing_from_the_working_directory(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "struct.py").write_text("raise ImportError('a stray struct.py')\n")
    monkeypatch.chdir(tmp_path)
    parse = services.on_reactor()
    assert await within(parse(parsers.echo, b"still parsed")) == b"still parsed"


@pytest_twisted.ensureDeferred
async def test_requests_are_answered_in_order(services: Services) -> None:
    parse = services.on_reactor()
    results = [parse(parsers.echo, b"%d" % n) for n in range(20)]
    assert [await within(d) for d in results] == [b"%d" % n for n in range(20)]


@pytest_twisted.ensureDeferred
async def test_config_error_text_comes_back(services: Services) -> None:
    parse = services.on_reactor()
    error = await failure_of(parse(parsers.refuse, b"no good"))
    assert isinstance(error, ConfigError)
    assert str(error) == "config.yaml line 1, column 1: no good"
    assert await within(parse(parsers.echo, b"next")) == b"next"


@pytest_twisted.ensureDeferred
async def test_other_exception_is_a_one_line_crash(services: Services) -> None:
    parse = services.on_reactor()
    pid = (await within(parse(parsers.where, b""))).pid
    error = await failure_of(parse(parsers.crash, b"missing"))
    assert isinstance(error, ParseCrashed)
    assert "\n" not in str(error)
    assert "tests.parsers:crash" in str(error)
    assert "KeyError" in str(error)
    assert "parsers.py" in str(error)
    # Named by its type and place, never its text, which quotes the input.
    assert "missing" not in str(error)
    # The child lives on.
    assert (await within(parse(parsers.where, b""))).pid == pid


@pytest_twisted.ensureDeferred
async def test_value_too_big_or_unpicklable_is_a_crash(services: Services) -> None:
    parse = services.on_reactor()
    assert isinstance(await failure_of(parse(parsers.huge, b"")), ParseCrashed)
    assert isinstance(await failure_of(parse(parsers.unpicklable, b"")), ParseCrashed)
    assert await within(parse(parsers.echo, b"next")) == b"next"


def test_function_not_importable_by_path_is_refused_at_once() -> None:
    parse = ParserProcess(reactor)

    def nested(data: bytes) -> bytes:
        return data

    def in_main(data: bytes) -> bytes:
        return data

    in_main.__module__ = "__main__"
    bound = parsers.Parser().parse
    for function in [lambda data: data, nested, in_main, bound]:
        with pytest.raises(TypeError, match="cannot run in the parser process"):
            parse(function, b"")
    assert not parse.running


def test_input_of_another_type_is_refused_at_once() -> None:
    parse = ParserProcess(reactor)
    with pytest.raises(TypeError):
        parse(parsers.echo, cast(Any, "text"))
    with pytest.raises(TypeError):
        parse(parsers.echo, cast(Any, {"name": "text"}))


@pytest_twisted.ensureDeferred
async def test_input_over_the_size_limit_is_refused(services: Services) -> None:
    parse = services.on_reactor()
    big = b"x" * twisted_demo.live._child.MAX_MESSAGE
    assert isinstance(await failure_of(parse(parsers.echo, big)), ConfigError)
    almost = b"x" * 2**20
    assert await within(parse(parsers.echo, {"config.yaml": almost})) == {
        "config.yaml": almost
    }


def periods_until_called(clock: Clock, d: Deferred[Any], period: float) -> int:
    """
    Advance C{clock} by C{period} until C{d} has fired (at most ten times);
    return how many periods passed.
    """
    for passed in range(1, 11):
        clock.advance(period)
        if d.called:
            return passed
    raise AssertionError(f"not called after 10 periods of {period} s")


@pytest_twisted.ensureDeferred
async def test_hanging_parse_is_killed_at_the_deadline(
    services: Services, tmp_path: Path
) -> None:
    parse = services.on_clock(deadline=5.0)
    result, pid = await hang_in_child(parse, tmp_path)
    # The parse's first steps (writing its marker) may have used CPU: a
    # deadline is renewed once for them, and then passes with none used.
    assert periods_until_called(services.clock, result, 5.0) <= 2
    error = await failure_of(result)
    assert isinstance(error, ParserUnavailable)
    assert "deadline of 5 s" in str(error)
    await until(reactor, lambda: gone(pid), "the hanging child to be killed")
    child = await within(parse(parsers.where, b""))
    assert child.pid != pid


@pytest_twisted.ensureDeferred
async def test_stopped_child_is_killed_at_the_deadline(services: Services) -> None:
    parse = services.on_clock(deadline=5.0)
    pid = (await within(parse(parsers.where, b""))).pid
    os.kill(pid, signal.SIGSTOP)
    result = parse(parsers.echo, b"never parsed")
    services.clock.advance(5.0)
    assert result.called
    assert isinstance(await failure_of(result), ParserUnavailable)
    await until(reactor, lambda: gone(pid), "the stopped child to be killed")
    assert await within(parse(parsers.echo, b"next")) == b"next"


@pytest_twisted.ensureDeferred
async def test_waiting_requests_get_their_own_deadline(
    services: Services, tmp_path: Path
) -> None:
    parse = services.on_clock(deadline=5.0)
    result, _ = await hang_in_child(parse, tmp_path)
    waiting = parse(parsers.echo, b"waited")
    assert periods_until_called(services.clock, result, 5.0) <= 2
    assert isinstance(await failure_of(result), ParserUnavailable)
    assert await within(waiting) == b"waited"


def cpu_used(pid: int) -> float:
    """
    The CPU seconds process C{pid} has used.
    """
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def more_cpu(pid: int) -> Callable[[], bool]:
    """
    Whether process C{pid} has used more CPU than it has now.
    """
    used = cpu_used(pid)
    return lambda: cpu_used(pid) > used


@pytest_twisted.ensureDeferred
async def test_slow_parse_that_uses_cpu_outlives_its_deadline(
    services: Services,
) -> None:
    # A parse at nice +10 on a busy node: slow, but running.  The deadline
    # is renewed each time it passes while the child used CPU, and the
    # child is killed once one passes without.
    parse = services.on_clock(deadline=5.0, limits=Limits(cpu_seconds=3600))
    pid = (await within(parse(parsers.where, b""))).pid
    result = parse(parsers.spin, b"")
    for _ in range(4):
        await until(reactor, more_cpu(pid), "the child to use CPU")
        services.clock.advance(5.0)
        assert not result.called
    os.kill(pid, signal.SIGSTOP)
    # CPU used between the last renewal and the stop may renew it once.
    assert periods_until_called(services.clock, result, 5.0) <= 2
    error = await failure_of(result)
    assert isinstance(error, ParserUnavailable)
    assert "deadline of 5 s" in str(error)
    await until(reactor, lambda: gone(pid), "the stopped child to be killed")


@pytest_twisted.ensureDeferred
async def test_input_that_kills_the_child_three_times_is_refused(
    services: Services,
) -> None:
    parse = services.on_reactor()
    # An outside kill, or a death on other bytes, is the process's fault:
    # tried again.
    for _ in range(DEATHS - 1):
        error = await failure_of(parse(parsers.die, b"SIGSEGV"))
        assert isinstance(error, ParserUnavailable)
        assert "killed by SIGSEGV" in str(error)
    # The same bytes killing DEATHS children in a row are the input's fault.
    for _ in range(DEATHS - 1):
        error = await failure_of(parse(parsers.die, b"SIGKILL"))
        assert isinstance(error, ParserUnavailable)
    error = await failure_of(parse(parsers.die, b"SIGKILL"))
    assert isinstance(error, ParseCrashed)
    assert str(error) == (
        "tests.parsers:die: the parser process ended (killed by SIGKILL) "
        f"parsing this input, {DEATHS} times in a row"
    )
    # Counted afresh, and the next parse is served by a new child.
    assert isinstance(
        await failure_of(parse(parsers.die, b"SIGKILL")), ParserUnavailable
    )
    assert await within(parse(parsers.echo, b"next")) == b"next"


@pytest_twisted.ensureDeferred
async def test_killed_child_fails_its_parse_and_the_next_one_works(
    services: Services, tmp_path: Path
) -> None:
    parse = services.on_clock()
    result, pid = await hang_in_child(parse, tmp_path)
    with logged() as events:
        os.kill(pid, signal.SIGKILL)
        error = await failure_of(result)
    assert isinstance(error, ParserUnavailable)
    assert "SIGKILL" in str(error)
    # The caller hears of it; the log does not repeat it.
    assert events.warnings() == []
    assert (await within(parse(parsers.where, b""))).pid != pid


@pytest_twisted.ensureDeferred
async def test_child_dead_while_idle_is_logged_once_and_restarted(
    services: Services,
) -> None:
    parse = services.on_reactor()
    pid = (await within(parse(parsers.where, b""))).pid
    with logged() as events:
        os.kill(pid, signal.SIGKILL)
        await until(reactor, lambda: bool(events.warnings()), "a warning")
        [warning] = events.warnings()
        assert warning["how"] == "killed by SIGKILL"
        assert (await within(parse(parsers.where, b""))).pid != pid
    assert len(events.warnings()) == 1


@pytest_twisted.ensureDeferred
async def test_memory_hungry_parse_is_refused_by_the_limit(
    services: Services,
) -> None:
    parse = services.on_reactor()
    pid = (await within(parse(parsers.where, b""))).pid
    with logged() as events:
        error = await failure_of(parse(parsers.hungry, b""))
        assert isinstance(error, ConfigError)
        assert "72 MiB" in str(error)
        # A fresh child, with none of the hungry one's heap, parses next.
        assert (await within(parse(parsers.where, b""))).pid != pid
        await until(reactor, lambda: gone(pid), "the hungry child to exit")
    assert events.warnings() == []


@pytest_twisted.ensureDeferred
async def test_hostile_yaml_is_refused_by_the_memory_limit(
    services: Services,
) -> None:
    parse = services.on_reactor(niceness=0)
    # 1 MiB of empty mappings: PyYAML's C loader needs 265 MiB for it.
    hostile = b"[" + b"{}," * (2**20 // 3 - 1) + b"{}]"
    error = await failure_of(parse(parsers.load_yaml, hostile))
    assert isinstance(error, ConfigError)
    assert "MiB of memory" in str(error)
    assert await within(parse(parsers.load_yaml, b"a: 1\nb: 2\n")) == 2


@pytest_twisted.ensureDeferred
async def test_memory_refusal_is_tried_again_in_a_fresh_child(
    services: Services,
) -> None:
    parse = services.on_reactor()
    first = await within(parse(parsers.fits_only_when_fresh, b"one"))
    # Out of memory in a child that parsed before: a fresh child parses it,
    # rather than the input being refused for what an earlier one left.
    second = await within(parse(parsers.fits_only_when_fresh, b"two"))
    assert second != first
    # A fresh child's refusal stands: the input is refused, not retried.
    error = await failure_of(parse(parsers.hungry, b""))
    assert isinstance(error, ConfigError)
    assert "MiB of memory" in str(error)


@pytest_twisted.ensureDeferred
async def test_parse_past_its_cpu_seconds_is_refused(services: Services) -> None:
    # At the server's priority, so that a busy machine delays it less.
    parse = services.on_reactor(niceness=0, limits=Limits(cpu_seconds=1))
    error = await failure_of(parse(parsers.spin, b""))
    assert isinstance(error, ConfigError)
    assert "1 s of CPU" in str(error)
    assert await within(parse(parsers.echo, b"next")) == b"next"


@pytest_twisted.ensureDeferred
async def test_group_signals_leave_the_child_alive_and_stop_is_quiet(
    services: Services,
) -> None:
    parse = services.on_reactor()
    pid = (await within(parse(parsers.where, b""))).pid
    with logged() as events:
        # What a terminal's Ctrl-C, timeout(1) or a reload signal sends to
        # the whole process group.
        for number in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
            os.kill(pid, number)
        assert (await within(parse(parsers.where, b""))).pid == pid
        await within(parse.stopService())
        await until(reactor, lambda: gone(pid), "the child to exit")
    assert events.warnings() == []


@pytest_twisted.ensureDeferred
async def test_stop_waits_for_the_parse_then_kills_the_child(
    services: Services, tmp_path: Path
) -> None:
    parse = services.on_clock(deadline=NEVER)
    result, pid = await hang_in_child(parse, tmp_path)
    waiting = parse(parsers.echo, b"never sent")
    with logged() as events:
        stopped = parse.stopService()
        assert isinstance(await failure_of(waiting), ParserUnavailable)
        services.clock.advance(STOP_TIMEOUT - 0.1)
        assert not stopped.called
        services.clock.advance(0.1)
        await within(stopped)
    assert isinstance(await failure_of(result), ParserUnavailable)
    assert gone(pid)
    assert events.warnings() == []


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(struct.pack(">I", 2**24) + b"V", id="too long"),
        pytest.param(struct.pack(">I", 3) + b"Z??", id="unknown"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_child_breaking_the_protocol_is_killed(reply: bytes) -> None:
    clock = Clock()
    parse = ParserProcess(ProcessesWithClock(clock, impostor(reply)))
    with logged() as events:
        error = await failure_of(parse(parsers.echo, b"hello"))
        assert isinstance(error, ParserUnavailable)
        assert "killed" in str(error)
        await within(parse.stopService())
    assert events.warnings() == []


@pytest_twisted.ensureDeferred
async def test_child_that_cannot_start_fails_the_parse_with_its_reason() -> None:
    program = "import sys; sys.exit('No module named twisted_demo')"
    parse = ParserProcess(ProcessesWithClock(Clock(), program))
    with logged() as events:
        # However often: a child that cannot start is never the input's fault.
        for _ in range(DEATHS):
            error = await failure_of(parse(parsers.echo, b"hello"))
            assert isinstance(error, ParserUnavailable)
            assert "exit status 1: No module named twisted_demo" in str(error)
    # Its stderr is in the log.
    assert [e["line"] for e in events.warnings()] == [
        "No module named twisted_demo"
    ] * DEATHS


def test_fork_refused_fails_the_parse_and_start_logs_it() -> None:
    refusal = OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
    parse = ParserProcess(ProcessesWithClock(Clock(), refusal=refusal))
    with logged() as events:
        parse.startService()
        result = parse(parsers.echo, b"hello")
    [warning] = events.warnings()
    assert os.strerror(errno.EAGAIN) in str(warning["error"])
    failures: list[Failure] = []
    result.addErrback(failures.append)
    [failure] = failures
    assert failure.check(ParserUnavailable)
    assert "could not start" in failure.getErrorMessage()
    assert parse.stopService().called


@pytest_twisted.ensureDeferred
async def test_missing_parse_module_is_a_crash(services: Services) -> None:
    parse = services.on_reactor()

    def gone_from_child(data: bytes) -> bytes:
        return data

    # Importable here, by a name the child cannot import.
    gone_from_child.__module__ = "tests.parsers_not_in_the_child"
    gone_from_child.__qualname__ = "gone_from_child"
    module = ModuleType("tests.parsers_not_in_the_child")
    module.gone_from_child = gone_from_child  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        error = await failure_of(parse(gone_from_child, b""))
    finally:
        del sys.modules[module.__name__]
    assert isinstance(error, ParseCrashed)
    assert "ModuleNotFoundError" in str(error)


def test_uses_no_private_twisted_names_and_the_child_no_twisted() -> None:
    for module, twisted_allowed in [
        (twisted_demo.live._process, True),
        (twisted_demo.live._child, False),
    ]:
        assert module.__file__ is not None
        tree = ast.parse(Path(module.__file__).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(alias.name for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if not any(name.startswith("twisted") for name in names[:1]):
                continue
            if names[0].startswith("twisted_demo"):
                continue
            assert twisted_allowed, f"{module.__name__} imports {names[0]}"
            for name in names:
                assert not any(part.startswith("_") for part in name.split(".")), (
                    f"{module.__name__} imports the private {name}"
                )


class Draining(Service):
    """
    Stands for the web server: its stop takes the whole drain timeout.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return deferLater(self._clock, DRAIN_TIMEOUT, lambda: None)


@pytest_twisted.ensureDeferred
async def test_demo_stop_with_both_parsers_stuck_ends_within_five_seconds(
    services: Services, tmp_path: Path
) -> None:
    # The demo's parts as makeService stops them on SIGTERM: the web server
    # first, for up to its drain timeout, then the config and the
    # certificate pair, each with a parser process that cannot end at the
    # end of its input: one stopped while idle, one in a parse.
    busy = services.on_clock(deadline=NEVER)
    _, busy_pid = await hang_in_child(busy, tmp_path)
    idle = services.on_clock(deadline=NEVER)
    idle_pid = (await within(idle(parsers.where, b""))).pid
    os.kill(idle_pid, signal.SIGSTOP)
    service = StopInOrder(reactor.callFromThread)
    configs = MultiService()
    configs.setServiceParent(service)
    busy.setServiceParent(configs)
    idle.setServiceParent(configs)
    Draining(services.clock).setServiceParent(service)
    service.startService()
    ended: list[object] = []
    service.stopService().addCallback(ended.append)
    services.clock.advance(DRAIN_TIMEOUT)
    services.clock.advance(4.9 - DRAIN_TIMEOUT)
    # Whatever the real processes take to end, no more clock time passes.
    await until(reactor, lambda: bool(ended), "the stop to end by 4.9 s")
    assert gone(busy_pid) and gone(idle_pid)


class CountingSpawns(ProcessesWithClock):
    """
    Counts the processes started.
    """

    spawned = 0

    def spawnProcess(self, *args: Any, **kw: Any) -> IProcessTransport:
        self.spawned += 1
        return super().spawnProcess(*args, **kw)


@pytest_twisted.ensureDeferred
async def test_parse_asked_after_stop_fails_without_starting_a_child() -> None:
    # As when a reload folded into one under way runs once that one ends,
    # after the service stopped: no child outlives the stop.
    processes = CountingSpawns(Clock())
    parse = ParserProcess(processes)
    parse.startService()
    await within(parse(parsers.where, b""))
    await within(parse.stopService())
    error = await failure_of(parse(parsers.where, b""))
    assert isinstance(error, ParserUnavailable)
    assert "stopped" in str(error)
    assert processes.spawned == 1
    # Started again, it parses again.
    parse.startService()
    assert (await within(parse(parsers.echo, b"again"))) == b"again"
    await within(parse.stopService())


# -- one parse in a process started for it, blocking --------------------------


def test_a_parse_in_a_child_of_its_own_answers_as_the_parser_process_does() -> None:
    assert parse_in_child(parsers.echo, b"hello") == b"hello"
    with pytest.raises(ConfigError):
        parse_in_child(parsers.refuse, b"x")
    with pytest.raises(ParseCrashed) as crashed:
        parse_in_child(parsers.crash, b"hunter2")
    assert re.fullmatch(
        r"tests\.parsers:crash: KeyError \(parsers\.py line \d+, in crash\)",
        str(crashed.value),
    )
    with pytest.raises(ConfigError) as refused:
        parse_in_child(parsers.hungry, b"", limits=Limits(address_space=64 * 2**20))
    assert "64 MiB of memory" in str(refused.value)


def test_a_child_of_its_own_killed_is_the_parser_s_failure_not_the_file_s() -> None:
    with pytest.raises(ParserUnavailable) as ended:
        parse_in_child(parsers.die, b"SIGKILL")
    assert str(ended.value) == "the parser process ended (killed by SIGKILL)"
    # A real-time signal has no name of its own.
    assert killed_by(signal.SIGRTMIN + 6) == f"killed by signal {signal.SIGRTMIN + 6}"


def test_a_child_of_its_own_that_never_answers_is_given_up_on(tmp_path: Path) -> None:
    with pytest.raises(ParserUnavailable) as late:
        parse_in_child(parsers.hang, str(tmp_path / "pid").encode(), deadline=0.5)
    assert str(late.value) == "no answer from the parser process in 0.5s"


def test_what_a_child_of_its_own_writes_on_stderr_is_logged() -> None:
    with logged() as events:
        assert parse_in_child(parsers.noisy, b"abc") == 3
    assert [formatEvent(e) for e in events.warnings()] == [
        "Config parser process: a warning from the parse"
    ]


def test_a_child_of_its_own_has_the_cpu_limit_the_readme_quotes() -> None:
    with pytest.raises(ConfigError) as spun:
        parse_in_child(parsers.spin, b"", limits=Limits(cpu_seconds=1))
    assert "more than 1 s of CPU" in str(spun.value)
    # What configmapdemo check runs with (README, "Validate before you apply").
    defaults = Limits()
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert (
        f"limits ({defaults.address_space // 2**20} MiB of memory,"
        f" {defaults.cpu_seconds} s of CPU)"
    ) in readme
