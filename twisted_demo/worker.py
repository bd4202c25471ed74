"""
Reading and parsing the config in a child process of lower priority.

Parsing a 1 MiB config takes tens of milliseconds of CPU.  In a thread of
the server that time holds the GIL, and every request the reactor serves
meanwhile waits for it at each system call, so a reload slows requests
far beyond its own cost.  In a child process the parse shares only the
CPU, and at a lower priority the operating system gives the reactor that
CPU first.  The child also contains the damage of a parser that crashes
on hostile input: the service reports the file and keeps serving.

The parent sends one pickled zero-argument callable at a time on the
child's stdin and reads the pickled result on its stdout, each framed
with a 4-byte big-endian length.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import traceback
from collections import deque
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.interfaces import (
    IDelayedCall,
    IProcessTransport,
    IReactorProcess,
    IReactorTime,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_demo import worker_child
from twisted_demo.live._errors import ConfigError

_T = TypeVar("_T")

_LENGTH = worker_child.LENGTH

#: How much nicer than the server the child runs by default.
NICENESS = worker_child.NICENESS

#: How long a stopping service waits for the child before killing it.
STOP_TIMEOUT = 2.0


class WorkerDied(Exception):
    """
    The child process ended while it had work; the text says how.
    """


class WorkerError(Exception):
    """
    The work raised in the child; the text is the child's traceback.
    """


class _Child(ProcessProtocol):
    """
    One child process: sends work in order and fires each result in turn.
    """

    _log = Logger(namespace="twisted_demo.worker")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pending: deque[Deferred[Any]] = deque()
        self.ended: Deferred[None] = Deferred()
        self.alive = True
        self._stderr = b""

    def send(self, work: Callable[[], Any]) -> Deferred[Any]:
        payload = pickle.dumps(work, pickle.HIGHEST_PROTOCOL)
        frame = _LENGTH.pack(len(payload)) + payload
        if not self._pending:
            frame = self._write_now(frame)
        d: Deferred[Any] = Deferred()
        self._pending.append(d)
        if frame:
            transport = cast(IProcessTransport, self.transport)
            transport.writeToChild(0, frame)
        return d

    def _write_now(self, frame: bytes) -> bytes:
        """
        Write what the pipe to an idle child takes of C{frame} at once, and
        return the rest.

        Twisted's pipe writer waits for the reactor to report the pipe
        writable, which costs two system calls and a pass of the reactor
        per frame.  An idle child has read every frame sent before, so
        nothing is buffered for it and this write keeps the order.
        """
        # Process.pipes is Twisted's, outside IProcessTransport: without it
        # every frame goes through the transport.
        pipes = getattr(self.transport, "pipes", {})
        writer = pipes.get(0)
        if writer is None:
            return frame
        try:
            written = os.write(writer.fileno(), frame)
        except OSError:
            # Full or broken: Twisted's writer buffers, or reports the end.
            return frame
        return frame[written:]

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 2:
            self._log_stderr(data)
            return
        self._buffer += data
        while len(self._buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer)
            end = _LENGTH.size + length
            if len(self._buffer) < end:
                return
            frame = bytes(memoryview(self._buffer)[_LENGTH.size : end])
            del self._buffer[:end]
            d = self._pending.popleft()
            try:
                ok, value = pickle.loads(frame)
            except Exception:
                # Whatever happens, the caller hears back.
                d.errback(WorkerError(traceback.format_exc()))
                continue
            if ok:
                d.callback(value)
            else:
                d.errback(WorkerError(value))

    def _log_stderr(self, data: bytes) -> None:
        self._stderr += data
        *lines, self._stderr = self._stderr.split(b"\n")
        for line in lines:
            self._log.warn(
                "Config parser process: {line}",
                line=line.decode("utf-8", "replace"),
            )

    def processEnded(self, reason: Failure) -> None:
        self.alive = False
        if self._stderr:
            self._log_stderr(b"\n")
        pending, self._pending = self._pending, deque()
        if reason.check(ProcessDone) and not pending:
            # It reached the end of its input: the service is stopping.
            self.ended.callback(None)
            return
        why = reason.getErrorMessage()
        signal_number = getattr(reason.value, "signal", None)
        if signal_number:
            why = f"killed by {signal.Signals(signal_number).name}"
        self._log.warn(
            "Config parser process ended ({why}); another starts with the next reload",
            why=why,
        )
        for d in pending:
            d.errback(WorkerDied(f"the parser process died ({why})"))
        self.ended.callback(None)


#: The child's program.  It drops the current directory that C{-c} puts
#: first on C{sys.path} (a stray C{yaml.py} there must not be imported),
#: and imports the parser's side from the interpreter's own path, where an
#: installed service is; only a checkout that is not installed is found
#: through the directory this module was loaded from (argv[1]), and that
#: is searched last.
_BOOT = """\
# configmapdemo parser process
import sys
del sys.path[0]
try:
    import twisted_demo.worker_child as child
except ModuleNotFoundError:
    sys.path.append(sys.argv[1])
    import twisted_demo.worker_child as child
child.main(int(sys.argv[2]))
"""


def _interpreter() -> str:
    """
    The file to run the child from: the interpreter this process runs.
    """
    # /proc/self/exe reaches the running binary even where its path is not
    # searchable by the service's user (an interpreter under /root, run
    # with --uid), or was replaced by an upgrade; argv[0] stays
    # sys.executable, from which Python finds its virtual environment.
    proc_exe = "/proc/self/exe"
    return proc_exe if os.path.exists(proc_exe) else sys.executable


class ParserProcess(Service):
    """
    Runs work in a child process, one call at a time: a runner for
    L{twisted_demo.reload.Reloader}.  The child starts with the service
    (or with the first call) and again after it dies.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorProcess,
        clock: IReactorTime,
        niceness: int = NICENESS,
    ) -> None:
        self._reactor = reactor
        self._clock = clock
        self._niceness = niceness
        self._child: _Child | None = None

    @property
    def pid(self) -> int | None:
        """
        The running child's process id, if one runs.
        """
        if self._child is None or not self._child.alive:
            return None
        transport = cast(IProcessTransport, self._child.transport)
        return cast(int | None, transport.pid)

    def _running(self) -> _Child:
        """
        The child, started now if none is running.

        @raise WorkerDied: If it cannot be started.
        """
        if self._child is None or not self._child.alive:
            child = _Child()
            try:
                self._spawn(child)
            except OSError as e:
                # Fork refused: a pids limit, or out of memory.
                raise WorkerDied(
                    f"the parser process could not start ({e.strerror or e})"
                ) from None
            self._child = child
        return self._child

    def _spawn(self, child: _Child) -> None:
        self._reactor.spawnProcess(
            child,
            _interpreter(),
            [
                sys.executable,
                "-c",
                _BOOT,
                str(Path(__file__).resolve().parent.parent),
                str(self._niceness),
            ],
            env=None,
            childFDs={0: "w", 1: "r", 2: "r"},
        )

    def startService(self) -> None:
        super().startService()
        try:
            self._running()
        except WorkerDied as e:
            self._log.warn("{error}; another try with the next reload", error=e)

    def __call__(self, work: Callable[[], _T]) -> Deferred[_T]:
        """
        Call C{work()} (a picklable callable) in the child.

        @return: Fires with its (picklable) result, or fails with
            L{WorkerError} if it raised or L{WorkerDied} if the child ended.
        """
        try:
            return cast("Deferred[_T]", self._running().send(work))
        except Exception:
            # The child cannot start, or the work cannot be pickled.
            return fail()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        child, self._child = self._child, None
        if child is None or not child.alive:
            return succeed(None)
        transport = cast(IProcessTransport, child.transport)
        # At the end of its input the child exits; a child stuck in a
        # parse is killed.
        transport.closeStdin()
        kill: IDelayedCall = self._clock.callLater(STOP_TIMEOUT, self._kill, transport)

        def stopped(result: None) -> None:
            if kill.active():
                kill.cancel()

        return child.ended.addCallback(stopped)

    def _kill(self, transport: IProcessTransport) -> None:
        try:
            transport.signalProcess("KILL")
        except ProcessExitedAlready:
            pass


class ParserRunner(Service):
    """
    A runner for C{twisted_demo.live.LiveConfigService} on a
    L{ParserProcess}: C{parse(data)} is called in the child, and a
    C{ConfigError} it raises there is raised again here.
    """

    def __init__(self, reactor: Any, niceness: int = NICENESS) -> None:
        self.process = ParserProcess(reactor, reactor, niceness)

    def startService(self) -> None:
        super().startService()
        self.process.startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.process.stopService()

    def __call__(self, parse: Callable[[Any], _T], data: Any) -> Deferred[_T]:
        def unwrap(result: tuple[bool, Any]) -> _T:
            ok, value = result
            if not ok:
                raise ConfigError(value)
            return cast(_T, value)

        def one_line(failure: Failure) -> Failure:
            if failure.check(WorkerError):
                # The child's traceback: its last line says what was raised.
                lines = str(failure.value).strip().splitlines()
                return Failure(WorkerError(lines[-1] if lines else "parse crashed"))
            return failure

        work = partial(worker_child.call_parse, parse, data)
        return self.process(work).addCallbacks(unwrap, one_line)
