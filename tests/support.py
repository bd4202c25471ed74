"""
Helpers shared by the tests: waiting with a deadline, capturing the log,
the service's parts wired in-process behind an in-memory HTTP client, and
the real C{twistd configmapdemo} run as a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

from attrs import frozen
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock, deferLater
from twisted.logger import ILogObserver, LogLevel, eventAsText, globalLogPublisher
from zope.interface import implementer

from bench.client import metric
from bench.proc import process_tree, stat_fields
from twisted_demo.config import parse_message
from twisted_demo.live import DEFAULT_MAX_BYTES, LiveConfigService, inline
from twisted_demo.live._watcher import Notifier
from twisted_demo.options import DEFAULT_TICK
from twisted_demo.reloads import ForcedReloads
from twisted_demo.tap import demo_resource
from twisted_demo.testing import configmapdemo_argv, free_port

_T = TypeVar("_T")

#: How long any one wait may take before the test fails.
DEADLINE = 10.0

CONFIG_NAME = "configmap-microservice-demo.yaml"


def wait_for(
    probe: Callable[[], _T | None], what: str, timeout: float = DEADLINE
) -> _T:
    """
    Call C{probe} until it returns something other than L{None} or False,
    and return that; fail naming C{what} after C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


async def until(
    reactor: IReactorTime,
    probe: Callable[[], bool],
    what: str,
    timeout: float = DEADLINE,
) -> None:
    """
    Let the reactor run until C{probe()} is true; fail naming C{what} after
    C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        d: Deferred[None] = deferLater(reactor, 0.005, lambda: None)
        await d


def niceness_of(pid: int) -> int:
    """
    The nice value of process C{pid}, from C{/proc/PID/stat}.
    """
    return int(stat_fields(pid)[16])


def metric_value(exposition: str, name: str) -> float:
    """
    The value of the unlabelled sample C{name} in Prometheus text, read as
    the benchmarks read it; a test fails showing the exposition without it.
    """
    try:
        return metric(exposition, name)
    except LookupError:
        raise AssertionError(f"{name} not in /metrics:\n{exposition}") from None


class Response:
    """
    A finished HTTP response.
    """

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def http(
    url: str,
    method: str = "GET",
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5,
) -> Response:
    """
    Make one HTTP request with the standard library's client and return
    the response, whatever its status.
    """
    request = urllib.request.Request(
        url, data=data, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return Response(r.status, dict(r.headers.items()), r.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, dict(e.headers.items()), e.read())


def read_output(output: IO[bytes]) -> str:
    """
    All a child process has written so far to C{output}, a file it shares
    with this one.  Parent and child share the file's offset, so seeking
    it to read would move where the child's next line lands, over the
    start of the file: C{pread} reads without moving it.
    """
    fd = output.fileno()
    return os.pread(fd, os.fstat(fd).st_size, 0).decode("utf-8", "replace")


class ServerProcess:
    """
    A server run with C{argv} in a subprocess (in C{cwd}, with C{env} added
    to the environment), with its output kept in a file for inspection.  A
    subclass says how to C{get} a path from it.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self._output: IO[bytes] = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )

    @property
    def output(self) -> str:
        """
        Everything the process has written so far.
        """
        return read_output(self._output)

    def get(self, path: str = "/") -> Response:
        raise NotImplementedError

    def wait_ready(self) -> None:
        """
        Wait until C{/readyz} answers 200; fail with the log if it exits.
        """

        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"twistd exited early:\n{self.output}")
            try:
                return self.get("/readyz").status == 200
            except OSError:
                return False

        wait_for(ready, "the server to become ready")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """
        Send C{signum} and return the exit status; fail if it has not
        exited after C{timeout} seconds, far past any stop timeout of its
        own, so that a server that never exits fails the test without the
        machine's speed deciding it.  (That the stop takes at most 5 s is
        shown on a L{Clock}: C{test_demo_stop_with_both_parsers_stuck_...}.)
        """
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"twistd did not exit within {timeout}s of signal {signum}:\n"
                f"{self.output}"
            ) from None

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._output.close()


class TwistdServer(ServerProcess):
    """
    C{twistd -n configmapdemo} running in a subprocess on a free loopback
    port, with its output kept in a file for inspection.  C{extra} are
    options of C{configmapdemo}; C{wrapper} is a command that runs twistd
    (such as C{setpriv} to run it as another user).
    """

    def __init__(
        self,
        config: Path,
        extra: Sequence[str] = (),
        wrapper: Sequence[str] = (),
    ) -> None:
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__([*wrapper, *configmapdemo_argv(config, self.port, *extra)])

    def get(self, path: str = "/") -> Response:
        return http(self.url + path)

    def metric(self, name: str) -> float:
        return metric_value(self.get("/metrics").text, name)

    def children(self) -> list[int]:
        """
        The process ids of twistd's descendants (its parser process).
        """
        return sorted(process_tree(self.process.pid)[1:])

    def wait_message(self, message: str) -> None:
        """
        Wait until C{GET /} serves C{message}.
        """
        wait_for(lambda: self.get("/").text == message, f"GET / to serve {message!r}")


def signal_until_summed_up(server: TwistdServer, line: str) -> int:
    """
    Send C{server} SIGHUP after SIGHUP until its log sums up repeats of
    C{line}; return how many were sent.
    """
    sent = 0

    def summed_up() -> bool:
        nonlocal sent
        if f"{line} (repeated " in server.output:
            return True
        server.process.send_signal(signal.SIGHUP)
        sent += 1
        return False

    wait_for(summed_up, f"a line summing up repeats of {line!r}", timeout=30)
    return sent


def logged_times(output: str, line: str) -> tuple[int, list[int]]:
    """
    How often C{output} has C{line} on its own, and the counts of the lines
    that sum up its repeats.
    """
    plain = re.findall(rf"\] {re.escape(line)}$", output, re.MULTILINE)
    counts = re.findall(rf"{re.escape(line)} \(repeated (\d+) times in ", output)
    return len(plain), [int(count) for count in counts]


@implementer(ILogObserver)
class LogCapture:
    """
    The events logged through L{twisted.logger} while capturing.
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def messages(
        self, level: LogLevel | None = None, *, at_least: LogLevel | None = None
    ) -> list[str]:
        """
        The text of each event, with any traceback: all of them, only those
        at C{level}, or only those at C{at_least} or above.
        """
        return [
            eventAsText(e, includeTimestamp=False, includeSystem=False)
            for e in self.events
            if (level is None or e.get("log_level") == level)
            and (at_least is None or e.get("log_level", LogLevel.info) >= at_least)
        ]


@contextmanager
def captured_log() -> Iterator[LogCapture]:
    """
    Capture the events logged inside the block.
    """
    capture = LogCapture()
    globalLogPublisher.addObserver(capture)
    try:
        yield capture
    finally:
        globalLogPublisher.removeObserver(capture)


#: Names of the reload metrics, as C{/metrics} exposes them.
FAILURES = "configmapdemo_config_reload_failures_total"
LAST_SUCCESSFUL = "configmapdemo_config_last_reload_successful"
RELOADS = "configmapdemo_config_reloads_total"


def result_of(d: Deferred[Any]) -> Any:
    """
    The result a Deferred has already fired with; fail if it has not.
    """
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, f"{d!r} has not fired"
    return results[0]


@frozen
class Reply:
    """
    A finished HTTP response from the in-memory client.
    """

    status: int
    headers: dict[bytes, list[bytes]]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def header(self, name: bytes) -> bytes | None:
        values = self.headers.get(name.lower())
        return None if not values else values[0]


class InProcessService:
    """
    The demo as C{makeService} builds it, parsing C{inline} and answering
    over an in-memory HTTP connection, so every step is synchronous and
    deterministic.  It is not started: reloads happen when a test asks, or
    through the watcher of the started L{live} service, with the notifiers
    C{notifier_factory} makes (by default inotify on C{clock}, where it is
    a reactor that has one, as in production).
    """

    def __init__(
        self,
        path: Path,
        clock: IReactorTime | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        tick: float = 0.1,
        notifier_factory: Callable[[], Notifier] | None = None,
    ) -> None:
        self.clock = Clock() if clock is None else clock
        self.path = path
        self.live = LiveConfigService(
            path,
            parse_message,
            reactor=self.clock,
            max_bytes=max_bytes,
            runner=inline,
            tick=tick,
            notifier_factory=notifier_factory,
        )
        self.forced = ForcedReloads(self.live, None, self.clock, DEFAULT_TICK)
        # StubTreq makes its methods at run time, so mypy cannot see them.
        self._client: Any = StubTreq(demo_resource(self.live, forced=self.forced))

    def request(
        self,
        method: str,
        path: str,
        data: bytes | None = None,
        headers: dict[bytes, list[bytes]] | None = None,
    ) -> Reply:
        d = self._client.request(
            method, "http://config.example" + path, data=data, headers=headers
        )
        self._client.flush()
        response = result_of(d)
        if isinstance(response, BaseException) or hasattr(response, "raiseException"):
            response.raiseException()
        body = self._client.content(response)
        self._client.flush()
        return Reply(
            response.code,
            {k.lower(): v for k, v in response.headers.getAllRawHeaders()},
            result_of(body),
        )

    def get(self, path: str = "/") -> Reply:
        return self.request("GET", path)

    def post_reload(self) -> Reply:
        """
        C{POST /-/reload}, a tick after the last (on a L{Clock}), so that
        it is answered at once rather than folded into the next forced
        reload.
        """
        if isinstance(self.clock, Clock):
            self.clock.advance(DEFAULT_TICK)
        return self.request("POST", "/-/reload")

    def metric(self, name: str) -> float:
        return metric_value(self.get("/metrics").text, name)

    def config(self) -> dict[str, Any]:
        """
        What C{GET /config} says.
        """
        body: dict[str, Any] = json.loads(self.get("/config").body)
        return body


def git(checkout: Path, *args: str) -> str:
    """
    Run C{git args} in C{checkout}, as a committer of its own, and return
    what it printed; fail if git does.
    """
    return subprocess.run(
        ["git", "-c", "user.name=tests", "-c", "user.email=tests@localhost", *args],
        cwd=checkout,
        check=True,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    ).stdout
