"""
One parser process, as the server sees it: how it is started (the running
interpreter without C{site}, a program that lowers its priority before it
imports anything, the server's import path), the framing of its stdin and
stdout, its stderr lines, how it ended, and the CPU time it has used.
Which requests it is sent, and when it is replaced, is
L{twisted_demo.live._process}'s.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import (
    IProcessTransport,
    IReactorProcess,
    IWriteDescriptor,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

from twisted_demo.live import _child

if TYPE_CHECKING:
    from twisted_demo.live._process import ParserProcess

__all__ = [
    "BOOTSTRAP",
    "FLAGS",
    "Child",
    "Limits",
    "command",
    "cpu_seconds",
    "environment",
    "interpreter",
    "killed_by",
    "log_stderr",
    "spawn",
    "stdin_writer",
]


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


#: Twisted's name for the signal a stuck child gets; SIGKILL also ends a
#: child stopped by SIGSTOP.
KILL = "KILL"


class ChildFraming(Int32StringReceiver):
    """
    The Int32 framing of the child's stdin and stdout.
    """

    MAX_LENGTH = _child.MAX_MESSAGE

    def __init__(self, child: Child) -> None:
        self._child = child

    def stringReceived(self, string: bytes) -> None:
        self._child.owner._replied(self._child, string)

    def lengthLimitExceeded(self, length: int) -> None:
        self._child.owner._broken(self._child, f"a reply of {length} bytes")


_log = Logger(namespace="twisted_demo.live.parser")


def log_stderr(line: str) -> None:
    """
    Log a line a parser process wrote on its stderr.
    """
    _log.warn("Config parser process: {line}", line=line)


class Child(ProcessProtocol):
    """
    One child process: its framing, its stderr lines, and its end.
    """

    def __init__(self, owner: ParserProcess) -> None:
        self.owner = owner
        self.framing = ChildFraming(self)
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
            self.process.signalProcess(KILL)
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
            log_stderr(text)

    def processEnded(self, reason: Failure) -> None:
        self.alive = False
        value = reason.value
        self.signalled = isinstance(value, ProcessTerminated) and bool(value.signal)
        if self._stderr:
            self._log_stderr(b"\n")
        self.owner._ended(self, how_it_ended(reason, self.last_line))
        self.ended.callback(None)


def cpu_seconds(pid: int | None) -> float | None:
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


def killed_by(number: int) -> str:
    """
    How a process killed by signal C{number} ended, in words.
    """
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    return f"killed by {name}"


def how_it_ended(reason: Failure, last_line: str) -> str:
    value = reason.value
    if isinstance(value, ProcessTerminated):
        if value.signal is not None:
            return killed_by(value.signal)
        if value.exitCode:
            how = f"exit status {value.exitCode}"
            return f"{how}: {last_line}" if last_line else how
    return "exit status 0"


#: The child's interpreter flags: C{-S}, no C{site}.  Its C{sys.path} is
#: the server's, given whole as C{PYTHONPATH}, so C{site} would only add
#: the imports of its own start and of the C{.pth} files it runs (about
#: 0.3 MiB and ten modules before the parse module's own).
FLAGS = ("-S",)

#: The child's program: lower its priority first, then import and run
#: L{_child.main}.  Its start-up is mostly imports (the parse module's
#: among them), which then cost a server starting on the same CPU a tenth
#: of it, where at the server's priority they would take half until done.
#: C{-c} rather than C{-m}, which would import C{runpy} and its modules
#: before any of ours.
BOOTSTRAP = (
    "import os, sys; os.nice(int(sys.argv[1]));"
    f" from {_child.__name__} import main; main(sys.argv[2:])"
)


def interpreter() -> str:
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


def environment() -> dict[str, str]:
    """
    The child's environment: the server's, with its C{sys.path} as
    C{PYTHONPATH} (an empty entry, the working directory, made absolute).
    """
    env = dict(os.environ)
    cwd = os.getcwd()
    env["PYTHONPATH"] = os.pathsep.join(
        os.path.abspath(entry) if entry else cwd for entry in sys.path
    )
    # Python 3.11 and later: -c puts no working directory first on sys.path.
    env["PYTHONSAFEPATH"] = "1"
    return env


def command(niceness: int, limits: Limits, preload: Sequence[str]) -> list[str]:
    """
    A parser process's command line, as C{ps} shows it: C{niceness} below
    the server, with C{limits}, importing C{preload} as it starts.
    """
    return [
        sys.executable,
        *FLAGS,
        "-c",
        BOOTSTRAP,
        str(niceness),
        str(limits.address_space),
        str(limits.cpu_seconds),
        *preload,
    ]


def spawn(
    owner: ParserProcess,
    processes: IReactorProcess,
    niceness: int,
    limits: Limits,
    preload: Sequence[str],
) -> Child:
    """
    Start a parser process for C{owner}, C{niceness} below the server, with
    C{limits} and the modules it imports before its first request.

    @raise OSError: If it cannot be started (a pids limit, no memory).
    """
    child = Child(owner)
    processes.spawnProcess(
        child,
        interpreter(),
        command(niceness, limits, preload),
        env=environment(),
        path="/",
        childFDs={0: "w", 1: "r", 2: "r"},
    )
    return child
