"""
Helpers shared by the tests: waiting with a deadline, and running the real
C{twistd configmapdemo} as a subprocess.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, LogLevel, eventAsText, globalLogPublisher
from zope.interface import implementer

_T = TypeVar("_T")

#: How long any one wait may take before the test fails.
DEADLINE = 10.0

CONFIG_NAME = "configmap-microservice-demo.yaml"


def free_port() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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


def twistd_command() -> list[str]:
    """
    How to run the twistd that belongs to the running interpreter.
    """
    return [str(Path(sys.executable).parent / "twistd")]


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


class TwistdServer:
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
        self._output: IO[bytes] = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [
                *wrapper,
                *twistd_command(),
                "-n",
                "--pidfile=",
                "configmapdemo",
                "--config",
                str(config),
                "--listen",
                f"tcp:{self.port}:interface=127.0.0.1",
                *extra,
            ],
            stdout=self._output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    @property
    def output(self) -> str:
        """
        Everything the process has written so far.
        """
        self._output.seek(0)
        return self._output.read().decode("utf-8", "replace")

    def get(self, path: str = "/") -> Response:
        return http(self.url + path)

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

    def wait_message(self, message: str) -> None:
        """
        Wait until C{GET /} serves C{message}.
        """
        wait_for(lambda: self.get("/").text == message, f"GET / to serve {message!r}")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        """
        Send C{signum} and return the exit status; fail if it takes longer
        than C{timeout} seconds.
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


@implementer(ILogObserver)
class LogCapture:
    """
    The events logged through L{twisted.logger} while capturing.
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def messages(self, level: LogLevel | None = None) -> list[str]:
        """
        The text of each event, with any traceback, optionally only at
        C{level}.
        """
        return [
            eventAsText(e, includeTimestamp=False, includeSystem=False)
            for e in self.events
            if level is None or e.get("log_level") == level
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
