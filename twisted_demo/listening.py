"""
Where the server listens: endpoint descriptions (C{tcp:}, C{ssl:},
C{unix:}...) made to listen with the kernel's largest backlog, and the
service that listens on one, stops C{twistd} with one line when it cannot,
and drains the open connections when it stops.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorCore,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_demo.server import DRAIN_TIMEOUT, ConfigSite

__all__ = [
    "StartFailed",
    "WebService",
    "endpoint_for",
    "endpoint_kind",
    "listen_backlog",
    "with_backlog",
]

_log = Logger(namespace="configmapdemo")


def listen_backlog(somaxconn: str = "/proc/sys/net/core/somaxconn") -> int:
    """
    The kernel's largest listen backlog, or Twisted's default (50) where it
    cannot be read.
    """
    try:
        with open(somaxconn, "rb") as f:
            value = int(f.read().strip())
    except (OSError, ValueError):
        return 50
    return value if value > 0 else 50


def _parameters(description: str) -> list[str]:
    """The colon-separated parts of an endpoint description, escapes kept."""
    parts = [""]
    escaped = False
    for char in description:
        if char == ":" and not escaped:
            parts.append("")
            continue
        parts[-1] += char
        escaped = char == "\\" and not escaped
    return parts


def endpoint_kind(description: str) -> str:
    """The kind of endpoint C{description} names: C{tcp}, C{ssl}, C{unix}..."""
    return _parameters(description)[0]


def with_backlog(description: str, backlog: int) -> str:
    """
    C{description} listening with C{backlog}, unless it is not a socket
    endpoint or already sets C{backlog=}.
    """
    kind, *parameters = _parameters(description)
    if kind not in ("tcp", "tcp6", "unix", "ssl") or not parameters:
        return description
    if any(p.startswith("backlog=") for p in parameters):
        return description
    return f"{description}:backlog={backlog}"


def endpoint_for(reactor: Any, description: str) -> IStreamServerEndpoint:
    """
    The server endpoint C{description} names, listening with the kernel's
    largest backlog (C{somaxconn}) unless it sets C{backlog=} itself.

    @raise ValueError: with a readable reason, if C{description} is not a
        server endpoint.
    """
    try:
        endpoint: IStreamServerEndpoint = serverFromString(
            reactor, with_backlog(description, listen_backlog())
        )
    except (ValueError, KeyError, TypeError) as e:
        reason = str(e) or type(e).__name__
        raise ValueError(reason) from None
    return endpoint


class StartFailed(SystemExit, Exception):
    """
    Ends C{twistd} with exit status C{code} and no traceback, like
    L{SystemExit}, while C{twistd} also sees the L{Exception} it cleans up
    after: it removes the pid file only when starting fails with one
    (C{UnixApplicationRunner.postApplication}); a plain L{SystemExit} would
    leave a stale C{twistd.pid} behind.
    """


class WebService(StreamServerEndpointService):
    """
    Serves the site on one endpoint, and stops C{twistd} with one clear
    log line, rather than a traceback, when the endpoint cannot listen
    (port in use, no permission).

    On stopping it refuses new connections at once and lets the responses
    under way finish, for at most L{DRAIN_TIMEOUT} seconds.
    """

    def __init__(
        self,
        description: str,
        endpoint: IStreamServerEndpoint,
        site: ConfigSite,
        reactor: Any,
    ) -> None:
        super().__init__(endpoint, site)
        self.site = site
        self._description = description
        self._reactor = reactor
        self._listening: Deferred[IListeningPort] | None = None
        self._port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        # twistd binds here, before dropping privileges.  The base class's
        # own listening only raises a failure at once through a private
        # switch: listen here, and learn of a failure from the Deferred.
        if self._listening is not None:
            return
        starting = True
        failed: list[Failure] = []

        def listening(port: IListeningPort) -> None:
            self._port = port
            self.site.accept_from(port)

        def not_listening(failure: Failure) -> None:
            if starting:
                failed.append(failure)
            else:
                self._cannot_listen(failure)
                reactor: IReactorCore = self._reactor
                reactor.stop()

        self._listening = self.endpoint.listen(self.factory)
        self._listening.addCallbacks(listening, not_listening)
        starting = False
        if failed:
            self._cannot_listen(failed[0])
            raise StartFailed(1)

    def _cannot_listen(self, failure: Failure) -> None:
        _log.critical(
            "configmapdemo: error: cannot listen on {listen}: {error}",
            listen=self._description,
            error=failure.value,
        )

    def startService(self) -> None:
        Service.startService(self)
        self.privilegedStartService()

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        stopping: Deferred[object]
        if self._port is not None:
            stopping = maybeDeferred(self._port.stopListening)
        elif self._listening is not None:
            self._listening.cancel()
            stopping = succeed(None)
        else:
            stopping = succeed(None)
        return stopping.addCallback(
            lambda _: self.site.drain(self._reactor, DRAIN_TIMEOUT)
        )
