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
interpreter (see L{_spawn}), as Twisted trial's distributed runner
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
import pickle
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar, cast

from attrs import frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorProcess,
    IReactorTime,
)
from twisted.logger import Logger

from twisted_demo.live import _child
from twisted_demo.live._errors import ConfigError, ParseCrashed
from twisted_demo.live._spawn import (
    Child,
    Limits,
    command,
    cpu_seconds,
    environment,
    interpreter,
    killed_by,
    log_stderr,
    spawn,
)

__all__ = [
    "DEATHS",
    "Limits",
    "ParseCrashed",
    "ParserProcess",
    "ParserUnavailable",
    "answer_of",
    "parse_in_child",
]

_T = TypeVar("_T")

#: What a parse function takes: the bytes of one file, or the bytes of
#: several by file name.
_Input = TypeVar("_Input", bytes, Mapping[str, bytes], bytes | Mapping[str, bytes])

#: How long a stopping service waits for the child to finish its parse
#: and exit before killing it.  A child that is not stuck exits within
#: milliseconds of the end of its input; 1.5 s leaves a program that first
#: drains its connections for 3 s within a stop of 5 s in all.
STOP_TIMEOUT = 1.5

#: The limits of a parse unless the service sets others.
_LIMITS = Limits()

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


def answer_of(path: str, reply: bytes) -> object:
    """
    The value of a fresh parser process's C{reply} to a request for the
    parse function at C{path}.

    @raise ConfigError: The parse refused the input, or went past a limit.
    @raise ParseCrashed: The parse crashed, or its value cannot be had.
    @raise ParserUnavailable: The reply is none the parser process sends.
    """
    tag, body = reply[:1], reply[1:]
    text = body.decode("utf-8", "replace")
    if tag == _child.VALUE:
        try:
            return pickle.loads(body)
        except Exception as e:
            raise ParseCrashed(
                f"{path}: the value it returned cannot be unpickled here "
                f"({type(e).__name__}: {e})"
            ) from None
    if tag == _child.ERROR:
        raise ConfigError.from_json(body)
    if tag == _child.CRASH:
        raise ParseCrashed(f"{path}: {text}")
    if tag == _child.LIMIT:
        raise ConfigError(text)
    raise ParserUnavailable(f"the parser process sent an unknown reply ({tag!r})")


def parse_in_child(
    parse: Callable[[Any], _T],
    data: bytes | Mapping[str, bytes],
    *,
    limits: Limits = _LIMITS,
    preload: Sequence[str] = (),
    deadline: float = 30.0,
) -> _T:
    """
    C{parse(data)} in a parser process started for it, at this process's
    priority and with C{limits}, waited for at most C{deadline} seconds:
    blocking, for a program's start-up before its reactor runs and for a
    command line.  The answer is the one a live service's parser process
    gives the same input, going past a limit included, and this process's
    memory holds only the input and the value.  What the parse writes on
    stderr is logged, a line at a time, as the live parser process's is.

    @raise ConfigError: The parse refused C{data}, or went past a limit.
    @raise ParseCrashed: The parse crashed on it.
    @raise ParserUnavailable: The parser process could not start, ended
        without an answer or did not answer in time.
    """
    path = import_path(parse)
    message = _child.encode_request(path, data)
    try:
        ended = subprocess.run(
            command(0, limits, preload),
            executable=interpreter(),
            input=_child.LENGTH.pack(len(message)) + message,
            capture_output=True,
            env=environment(),
            cwd="/",
            check=False,
            timeout=deadline,
        )
    except subprocess.TimeoutExpired:
        raise ParserUnavailable(
            f"no answer from the parser process in {deadline:g}s"
        ) from None
    except OSError as e:
        raise ParserUnavailable(f"the parser process could not start ({e})") from None
    for line in ended.stderr.decode("utf-8", "replace").splitlines():
        log_stderr(line)
    if ended.returncode < 0:
        how = killed_by(-ended.returncode)
        raise ParserUnavailable(f"the parser process ended ({how})")
    size = _child.LENGTH.size
    header, reply = ended.stdout[:size], ended.stdout[size:]
    if len(header) < size or _child.LENGTH.unpack(header) != (len(reply),):
        how = f"exit status {ended.returncode}"
        raise ParserUnavailable(f"the parser process ended ({how}) without an answer")
    return cast(_T, answer_of(path, reply))


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
        self, request: _ParseRequest[object], child: Child, timer: IDelayedCall
    ) -> None:
        self.request = request
        self.child = child
        self.timer = timer
        self.cpu = cpu_seconds(child.process.pid)


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
        first request: the parse function's module, and what it imports
        only when called, so that the first parse costs no more than the
        others.  C{module:name} also looks C{name} up in the module, for a
        package that loads its parts on first use.
    """

    _log = Logger(namespace="twisted_demo.live.parser")

    def __init__(
        self,
        reactor: IReactorProcess,
        *,
        deadline: float = 10.0,
        niceness: int = _child.NICENESS,
        limits: Limits = _LIMITS,
        preload: Sequence[str] = (),
    ) -> None:
        self._processes = reactor
        self._preload = tuple(preload)
        self._clock = IReactorTime(reactor)
        self._deadline = deadline
        self._niceness = niceness
        self._limits = limits
        self._child: Child | None = None
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

    def parse_now(self, parse: Callable[[_Input], _T], data: _Input) -> _T:
        """
        C{parse(data)} by L{parse_in_child}, with this parser process's
        limits and imports: blocking, for a start-up before the reactor
        runs.
        """
        return parse_in_child(
            parse,
            data,
            limits=self._limits,
            preload=self._preload,
            deadline=self._deadline,
        )

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

    def _running(self) -> Child:
        """
        The child, started now if none is running.

        @raise ParserUnavailable: If it cannot be started.
        """
        if self._child is None or not self._child.alive:
            try:
                child = spawn(
                    self, self._processes, self._niceness, self._limits, self._preload
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

    def _finish(self, child: Child) -> _ParseRequest[object] | None:
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

    def _replied(self, child: Child, reply: bytes) -> None:
        request = self._finish(child)
        if request is None:
            self._retire(child, kill=True, why="it replied to nothing")
            return
        self._deaths = (b"", 0)
        tag = reply[:1]
        if tag == _child.LIMIT:
            # A fresh child for the next parse, with none of this one's heap.
            self._retire(child, kill=False, why="it went past a limit")
            if child.parses > 1:
                # What earlier parses left in its heap may have made the
                # difference: only a fresh child's refusal is the input's.
                self._waiting.appendleft(request)
                self._next()
                return
        try:
            value = answer_of(request.path, reply)
        except ParserUnavailable as e:
            self._retire(child, kill=True, why=f"an unknown reply {tag!r}")
            request.result.errback(ParserUnavailable(f"{e} and was killed"))
        except Exception as e:
            request.result.errback(e)
        else:
            request.result.callback(value)
        self._next()

    def _broken(self, child: Child, what: str) -> None:
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
        cpu = cpu_seconds(child.process.pid)
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

    def _retire(self, child: Child, *, kill: bool, why: str) -> None:
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

    def _ended(self, child: Child, how: str) -> None:
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
        self, request: _ParseRequest[object], child: Child, how: str
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
