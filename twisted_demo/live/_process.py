"""
Parsing in a child process of lower priority: the server's side.

Why a process: parsing a 1 MiB config takes most of a second of CPU (0.8 s
for 51k lines with PyYAML's C loader), and hostile input far more.  In a
thread of the server that time holds the GIL, and every request the
reactor serves meanwhile waits for it at each system call, so a reload
slows requests far beyond its own cost.  In a child process the parse
shares only the CPU, and at a lower priority the operating system gives
the reactor that CPU first.  The child also contains the damage of a parse
that crashes, hangs or eats memory on hostile input: it runs under an
address space limit, a CPU limit per parse and a deadline, and the server
reports the input and keeps serving.  A child that dies on the same input
L{DEATHS} times in a row (the OOM killer, a crash in C) refuses that input,
as a parse that raises does: trying it again would only kill another.

The child is the module L{twisted_demo.live._child}, run by the server's
interpreter (see L{_BOOTSTRAP}), as Twisted trial's distributed runner
runs its workers.  It finds the parse function by its
import path (C{module:qualname}) on the server's C{sys.path}, which it gets
as C{PYTHONPATH}, an empty entry made absolute.  Its working directory is
C{/} and C{PYTHONSAFEPATH} is set, so that a stray C{yaml.py} in the
server's working directory is not imported unless the server's own path
names that directory.  Requests and replies are data (see L{_child} for the
format), framed by L{Int32StringReceiver} on the child's stdin and stdout.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import signal
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Generic, TypeVar, cast

from attrs import frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import (
    IDelayedCall,
    IProcessTransport,
    IReactorProcess,
    IReactorTime,
    IWriteDescriptor,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

from twisted_demo.live import _child
from twisted_demo.live._errors import ConfigError, ParseCrashed

__all__ = ["DEATHS", "Limits", "ParseCrashed", "ParserProcess", "ParserUnavailable"]

_T = TypeVar("_T")

#: What a parse function takes: the bytes of one file, or the bytes of
#: several by file name.
_Input = TypeVar("_Input", bytes, Mapping[str, bytes], bytes | Mapping[str, bytes])

#: How long a stopping service waits for the child to finish its parse
#: and exit before killing it.  A child that is not stuck exits within
#: milliseconds of the end of its input; 1.5 s leaves a program that first
#: drains its connections for 3 s within a stop of 5 s in all.
STOP_TIMEOUT = 1.5

#: Twisted's name for the signal a stuck child gets; SIGKILL also ends a
#: child stopped by SIGSTOP.
_KILL = "KILL"

#: How many times in a row a child may be killed by a signal we did not
#: send while parsing the same input (the OOM killer, a crash in C) before
#: that input is refused as crashing the parser, instead of being tried
#: again.  A child that exits (one that cannot start) is not counted: that
#: is never the input's fault.
DEATHS = 3


class ParserUnavailable(Exception):
    """
    The parser process could not give an answer: it could not start, died,
    or passed its deadline and was killed.  The input may be fine; asking
    again starts a fresh process.
    """


@frozen
class Limits:
    """
    What one parse may cost the parser process.

    @ivar address_space: RLIMIT_AS of the process, in bytes: a bound on
        its resident memory too, which stays a few MiB below it (the parts
        of shared libraries never read are mapped but not resident).
    @ivar cpu_seconds: CPU seconds per parse (RLIMIT_CPU).
    """

    address_space: int = _child.PARSER_MEMORY
    cpu_seconds: int = _child.CPU_SECONDS


def import_path(parse: Callable[..., object]) -> str:
    """
    The path (C{module:qualname}) by which the parser process imports
    C{parse}.

    @raise TypeError: If C{parse} cannot be found by such a path: a lambda,
        a nested function, a function of C{__main__}, a bound method.
    """
    module = getattr(parse, "__module__", None)
    qualname = getattr(parse, "__qualname__", None)
    path = f"{module}:{qualname}"
    found: object = sys.modules.get(module or "")
    for name in (qualname or "").split("."):
        found = getattr(found, name, None)
    if module is None or module == "__main__" or found is not parse:
        raise TypeError(
            f"{parse!r} cannot run in the parser process: it needs a function "
            "defined at the top level of an importable module (not a lambda, "
            f"a nested function or __main__), found by its import path ({path})"
        )
    return path


class _ChildFraming(Int32StringReceiver):
    """
    The Int32 framing of the child's stdin and stdout.
    """

    MAX_LENGTH = _child.MAX_MESSAGE

    def __init__(self, child: _Child) -> None:
        self._child = child

    def stringReceived(self, string: bytes) -> None:
        self._child.owner._replied(self._child, string)

    def lengthLimitExceeded(self, length: int) -> None:
        self._child.owner._broken(self._child, f"a reply of {length} bytes")


class _Child(ProcessProtocol):
    """
    One child process: its framing, its stderr lines, and its end.
    """

    _log = Logger(namespace="twisted_demo.live.parser")

    def __init__(self, owner: ParserProcess) -> None:
        self.owner = owner
        self.framing = _ChildFraming(self)
        self.ended: Deferred[None] = Deferred()
        self.alive = True
        #: Why we ended it, if we did; set, its end is no news.
        self.ending: str | None = None
        self._stderr = b""
        self.last_line = ""
        #: Whether it ended by a signal (the OOM killer, a crash in C).
        self.signalled = False
        #: How many parses it was sent: after the first, its heap holds
        #: what earlier parses left, fragmented.
        self.parses = 0

    @property
    def process(self) -> IProcessTransport:
        return cast(IProcessTransport, self.transport)

    def connectionMade(self) -> None:
        # The process transport is an ITransport whose write() goes to the
        # child's stdin.
        self.framing.makeConnection(self.process)

    def send(self, message: bytes) -> None:
        self.framing.sendString(message)
        # Sent only to an idle child, which has read all that came before:
        # straight into its pipe, not at the reactor's next pass.  While
        # requests keep the server busy that pass comes late, and the
        # reload waits for it (B1: about 1 ms of its p50).
        stdin = stdin_writer(self.process)
        if stdin is not None:
            stdin.doWrite()

    def close(self, why: str) -> None:
        """
        Close the child's stdin: it finishes its parse, if any, and exits.
        """
        self.ending = why
        self.process.closeStdin()

    def kill(self, why: str) -> None:
        self.ending = why
        try:
            self.process.signalProcess(_KILL)
        except ProcessExitedAlready:
            pass

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 1:
            self.framing.dataReceived(data)
        elif childFD == 2:
            self._log_stderr(data)

    def _log_stderr(self, data: bytes) -> None:
        self._stderr += data
        *lines, self._stderr = self._stderr.split(b"\n")
        for line in lines:
            text = line.decode("utf-8", "replace")
            if text.strip():
                self.last_line = text.strip()
            self._log.warn("Config parser process: {line}", line=text)

    def processEnded(self, reason: Failure) -> None:
        self.alive = False
        value = reason.value
        self.signalled = isinstance(value, ProcessTerminated) and bool(value.signal)
        if self._stderr:
            self._log_stderr(b"\n")
        self.owner._ended(self, _how_it_ended(reason, self.last_line))
        self.ended.callback(None)


def _cpu_seconds(pid: int | None) -> float | None:
    """
    The user and system CPU time process C{pid} has used, from
    C{/proc/PID/stat}; L{None} where that cannot be read (no C{/proc}, or
    the process has ended).
    """
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The fields after the command name, which is in parentheses and may
    # hold spaces: utime and stime are the 12th and 13th of them.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stdin_writer(process: IProcessTransport) -> IWriteDescriptor | None:
    """
    The descriptor that writes to C{process}'s stdin, whose C{doWrite}
    writes what the transport holds now, as far as the pipe takes it.

    Twisted writes to a process only when the reactor next reports its pipe
    writable, and offers no public way to write now
    (https://github.com/twisted/twisted/issues/5303); its POSIX process
    transport keeps the descriptor in C{pipes}, outside
    L{IProcessTransport}.  This is the one place that reaches for it, and
    C{tests/test_footprint.py} fails if Twisted moves it.  Without it
    (another reactor's transport), writes wait for the reactor as before.
    """
    writer = getattr(process, "pipes", {}).get(0)
    return writer if IWriteDescriptor.providedBy(writer) else None


def _how_it_ended(reason: Failure, last_line: str) -> str:
    value = reason.value
    if isinstance(value, ProcessTerminated):
        if value.signal is not None:
            return f"killed by {signal.Signals(value.signal).name}"
        if value.exitCode:
            how = f"exit status {value.exitCode}"
            return f"{how}: {last_line}" if last_line else how
    return "exit status 0"


@frozen
class _ParseRequest(Generic[_T]):
    path: str
    message: bytes
    result: Deferred[_T]


class _Parse:
    """
    The request a child is parsing, its deadline's timer, and the child's
    CPU time when that timer was set.
    """

    def __init__(
        self, request: _ParseRequest[object], child: _Child, timer: IDelayedCall
    ) -> None:
        self.request = request
        self.child = child
        self.timer = timer
        self.cpu = _cpu_seconds(child.process.pid)


class ParserProcess(Service):
    """
    Calls parse functions in a child process, one at a time (the rest
    wait in order), each with a deadline.

    The deadline allows for the child's low priority: a parse that has not
    answered when it passes, but has used CPU since it was set (a busy node
    gives a nice child little CPU, not none), gets another C{deadline}
    seconds; its CPU limit bounds how long it can go on.  A child that used
    no CPU over a whole deadline (stopped, blocked, asleep) is killed.

    The child starts with the service, and again with the next call after
    one ended: past its deadline, killed, or after a parse that hit a
    limit.  C{stopService} closes its input, waits up to L{STOP_TIMEOUT}
    seconds for it to exit, then kills it.

    @param reactor: Provides L{IReactorProcess} and L{IReactorTime}.
    @param deadline: Seconds each call may take, from its request to its
        reply (the child's start included when it starts for it), again
        and again for as long as the child uses CPU meanwhile.
    @param niceness: How much nicer than the server the child runs.
    @param limits: What one parse may cost the child.
    @param preload: Modules the child imports as it starts, before the
        first request: the parse function's module, so that the first
        parse costs no more than the others.
    """

    _log = Logger(namespace="twisted_demo.live.parser")

    def __init__(
        self,
        reactor: IReactorProcess,
        *,
        deadline: float = 10.0,
        niceness: int = _child.NICENESS,
        limits: Limits = Limits(),
        preload: Sequence[str] = (),
    ) -> None:
        self._processes = reactor
        self._preload = tuple(preload)
        self._clock = IReactorTime(reactor)
        self._deadline = deadline
        self._niceness = niceness
        self._limits = limits
        self._child: _Child | None = None
        self._waiting: deque[_ParseRequest[object]] = deque()
        self._current: _Parse | None = None
        self._stopped = False
        #: The digest of the input the last child that died in a parse was
        #: given, and how many children in a row died on it.
        self._deaths: tuple[bytes, int] = (b"", 0)

    def startService(self) -> None:
        super().startService()
        self._stopped = False
        try:
            self._running()
        except ParserUnavailable as e:
            self._log.warn("{error}; another try with the next parse", error=e)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._stopped = True
        waiting, self._waiting = self._waiting, deque()
        for request in waiting:
            request.result.errback(ParserUnavailable("the parser process stopped"))
        child, self._child = self._child, None
        if child is None or not child.alive:
            return succeed(None)
        child.close("the parser process was stopped")
        kill = self._clock.callLater(
            STOP_TIMEOUT, child.kill, "the parser process was stopped"
        )

        def ended(result: None) -> None:
            if kill.active():
                kill.cancel()

        return child.ended.addCallback(ended)

    def __call__(self, parse: Callable[[_Input], _T], data: _Input) -> Deferred[_T]:
        """
        Call C{parse(data)} in the parser process.

        @param parse: A function at the top level of an importable module.
        @param data: Bytes, or a mapping of file names to bytes.
        @raise TypeError: At once, if C{parse} cannot be imported by its
            path or C{data} is of another type.
        @return: Fires with the value C{parse} returned (pickled and
            unpickled), or fails with L{ConfigError} (raised by C{parse},
            or the input went past a limit of the process),
            L{ParseCrashed} (also when L{DEATHS} children in a row died
            on this input) or L{ParserUnavailable} (as every call does
            once the service is stopped, until it is started again).
        """
        path = import_path(parse)
        message = _child.encode_request(path, data)
        if self._stopped:
            # A call made after the stop (a reload queued behind the one
            # under way) would start a child that nothing ever stops.
            return fail(ParserUnavailable("the parser process stopped"))
        if len(message) > _child.MAX_MESSAGE:
            return fail(
                ConfigError(
                    f"{len(message)} bytes of input is more than the parser "
                    f"process accepts ({_child.MAX_MESSAGE})"
                )
            )
        result: Deferred[_T] = Deferred()
        self._waiting.append(
            cast(_ParseRequest[object], _ParseRequest(path, message, result))
        )
        self._next()
        return result

    def _running(self) -> _Child:
        """
        The child, started now if none is running.

        @raise ParserUnavailable: If it cannot be started.
        """
        if self._child is None or not self._child.alive:
            child = _Child(self)
            try:
                self._processes.spawnProcess(
                    child,
                    _interpreter(),
                    [
                        sys.executable,
                        *_FLAGS,
                        "-c",
                        _BOOTSTRAP,
                        str(self._niceness),
                        str(self._limits.address_space),
                        str(self._limits.cpu_seconds),
                        *self._preload,
                    ],
                    env=_environment(),
                    path="/",
                    childFDs={0: "w", 1: "r", 2: "r"},
                )
            except OSError as e:
                # Fork refused: a pids limit, or out of memory.
                raise ParserUnavailable(
                    f"the parser process could not start ({e.strerror or e})"
                ) from None
            self._child = child
        return self._child

    def _next(self) -> None:
        """
        Send the first waiting request, unless one is being parsed.
        """
        while self._current is None and self._waiting:
            request = self._waiting.popleft()
            try:
                child = self._running()
            except ParserUnavailable as e:
                request.result.errback(e)
                continue
            timer = self._clock.callLater(self._deadline, self._overdue)
            self._current = _Parse(request, child, timer)
            child.parses += 1
            child.send(request.message)

    def _finish(self, child: _Child) -> _ParseRequest[object] | None:
        """
        The request C{child} was parsing, now no longer current.
        """
        current = self._current
        if current is None or current.child is not child:
            return None
        self._current = None
        if current.timer.active():
            current.timer.cancel()
        return current.request

    def _replied(self, child: _Child, reply: bytes) -> None:
        request = self._finish(child)
        if request is None:
            self._retire(child, kill=True, why="it replied to nothing")
            return
        self._deaths = (b"", 0)
        tag, body = reply[:1], reply[1:]
        text = body.decode("utf-8", "replace")
        if tag == _child.VALUE:
            try:
                value = pickle.loads(body)
            except Exception as e:
                request.result.errback(
                    ParseCrashed(
                        f"{request.path}: the value it returned cannot be "
                        f"unpickled here ({type(e).__name__}: {e})"
                    )
                )
            else:
                request.result.callback(value)
        elif tag == _child.ERROR:
            request.result.errback(ConfigError.from_json(body))
        elif tag == _child.CRASH:
            request.result.errback(ParseCrashed(f"{request.path}: {text}"))
        elif tag == _child.LIMIT:
            # A fresh child for the next parse, with none of this one's heap.
            self._retire(child, kill=False, why="it went past a limit")
            if child.parses > 1:
                # What earlier parses left in its heap may have made the
                # difference: only a fresh child's refusal is the input's.
                self._waiting.appendleft(request)
            else:
                request.result.errback(ConfigError(text))
        else:
            self._retire(child, kill=True, why=f"an unknown reply {tag!r}")
            request.result.errback(
                ParserUnavailable(
                    f"the parser process sent an unknown reply ({tag!r}) and was killed"
                )
            )
        self._next()

    def _broken(self, child: _Child, what: str) -> None:
        """
        C{child} broke the protocol: kill it, and fail its request.
        """
        request = self._finish(child)
        self._retire(child, kill=True, why=what)
        if request is not None:
            request.result.errback(
                ParserUnavailable(f"the parser process sent {what} and was killed")
            )
        self._next()

    def _overdue(self) -> None:
        current = self._current
        assert current is not None
        child = current.child
        cpu = _cpu_seconds(child.process.pid)
        if cpu is not None and current.cpu is not None and cpu > current.cpu:
            # Slow, not stuck: at its priority on a busy node it gets what
            # CPU the server leaves, and its CPU limit still bounds it.
            current.cpu = cpu
            current.timer = self._clock.callLater(self._deadline, self._overdue)
            return
        request = current.request
        self._current = None
        why = f"the parse passed its deadline of {self._deadline:g} s"
        self._retire(child, kill=True, why=why)
        request.result.errback(
            ParserUnavailable(f"{why}; the parser process was killed")
        )
        self._next()

    def _retire(self, child: _Child, *, kill: bool, why: str) -> None:
        """
        Take no more work to C{child}, and end it.
        """
        if self._child is child:
            self._child = None
        if not child.alive:
            return
        if kill:
            child.kill(why)
        else:
            child.close(why)

    def _ended(self, child: _Child, how: str) -> None:
        if self._child is child:
            self._child = None
        request = self._finish(child)
        if request is not None:
            request.result.errback(self._death(request, child, how))
            self._next()
        elif child.ending is None and self.running:
            self._log.warn(
                "Config parser process ended ({how}) while idle; another starts "
                "with the next parse",
                how=how,
            )

    def _death(
        self, request: _ParseRequest[object], child: _Child, how: str
    ) -> Exception:
        """
        Why C{request} failed when C{child} ended during its parse: the
        input's fault once L{DEATHS} children in a row were killed on it
        by signals we did not send, else the process's, to be tried again.
        """
        if child.ending is not None:
            return ParserUnavailable(child.ending)
        if not child.signalled:
            return ParserUnavailable(f"the parser process ended ({how})")
        digest = hashlib.sha256(request.message).digest()
        previous, count = self._deaths
        count = count + 1 if previous == digest else 1
        self._deaths = (digest, count)
        if count >= DEATHS:
            self._deaths = (b"", 0)
            return ParseCrashed(
                f"{request.path}: the parser process ended ({how}) parsing "
                f"this input, {count} times in a row"
            )
        return ParserUnavailable(f"the parser process ended ({how})")


#: The child's interpreter flags: C{-S}, no C{site}.  Its C{sys.path} is
#: the server's, given whole as C{PYTHONPATH}, so C{site} would only add
#: the imports of its own start and of the C{.pth} files it runs (about
#: 0.3 MiB and ten modules before the parse module's own).
_FLAGS = ("-S",)

#: The child's program: lower its priority first, then import and run
#: L{_child.main}.  Its start-up is mostly imports (the parse module's
#: among them), which then cost a server starting on the same CPU a tenth
#: of it, where at the server's priority they would take half until done.
#: C{-c} rather than C{-m}, which would import C{runpy} and its modules
#: before any of ours.
_BOOTSTRAP = (
    "import os, sys; os.nice(int(sys.argv[1]));"
    f" from {_child.__name__} import main; main(sys.argv[2:])"
)


def _interpreter() -> str:
    """
    The file to run as the child: the server's own interpreter.  On Linux
    it is named through C{/proc/self/exe}, which the kernel resolves to the
    running binary whatever the directories on C{sys.executable}'s path
    allow: a service dropped to an unprivileged user may run an interpreter
    under a directory it can no longer search (C{/root/.pyenv}).  The
    child's C{sys.path} does not depend on the name it was run by: it gets
    the server's as C{PYTHONPATH}.
    """
    return "/proc/self/exe" if os.path.exists("/proc/self/exe") else sys.executable


def _environment() -> dict[str, str]:
    """
    The child's environment: the server's, with its C{sys.path} as
    C{PYTHONPATH} (an empty entry, the working directory, made absolute).
    """
    env = dict(os.environ)
    cwd = os.getcwd()
    env["PYTHONPATH"] = os.pathsep.join(
        os.path.abspath(entry) if entry else cwd for entry in sys.path
    )
    # Python 3.11 and later: -m puts no working directory first on sys.path.
    env["PYTHONSAFEPATH"] = "1"
    return env
