"""
The HTTP server under the app: the site, its limit on request bodies, and
the listening service that drains open connections when it stops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorTime,
    ISSLTransport,
    ITCPTransport,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

_log = Logger(namespace="configmapdemo")

_TEXT = b"text/plain; charset=utf-8"

#: The largest request body accepted.  No route reads a body; the limit
#: only has to keep a client from making the server buffer one.
MAX_BODY_BYTES = 16 * 1024

#: Seconds a connection whose body was refused may go on sending it.
_LINGER = 2.0

#: Seconds a stopping server waits for responses under way to be sent.
DRAIN_TIMEOUT = 3.0

_TOO_LARGE_BODY = b"request body too large\n"
_TOO_LARGE = b"".join(
    [
        b"HTTP/1.1 413 Request Entity Too Large\r\n",
        b"Content-Type: %s\r\n" % (_TEXT,),
        b"Content-Length: %d\r\n" % (len(_TOO_LARGE_BODY),),
        b"X-Content-Type-Options: nosniff\r\n",
        b"Connection: close\r\n",
        b"\r\n",
        _TOO_LARGE_BODY,
    ]
)


class _LimitedRequest(Request):
    """
    A request that refuses a body over its site's C{max_body_bytes} with
    413 and ends the connection: at once when C{Content-Length} announces
    it, before any of it is read, or as soon as a chunked body grows past
    it.  The resource is never rendered for a refused request.
    """

    # Class defaults rather than an __init__: every request is built, few
    # have a body, and an __init__ of its own cost 3% of GET / throughput.
    _body_bytes = 0
    _refused = False
    _linger: IDelayedCall | None = None

    def _limit(self) -> int:
        return cast("_Channel", self.channel).site.max_body_bytes

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._limit():
            super().gotLength(0)
            # The channel would otherwise answer "100 Continue" next.
            self.requestHeaders.removeHeader(b"expect")
            self._refuse()
        else:
            super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._body_bytes += len(data)
        if self._body_bytes > self._limit():
            self._refuse()
        else:
            super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if not self._refused:
            super().requestReceived(command, path, version)

    def _refuse(self) -> None:
        self._refused = True
        channel = self.channel
        transport = None if channel is None else channel.transport
        if channel is None or transport is None:
            return
        transport.write(_TOO_LARGE)
        if ITCPTransport.providedBy(transport) and not ISSLTransport.providedBy(
            transport
        ):
            # Closing outright while the body is still arriving would make
            # the kernel reset the connection, and the client could lose
            # the answer: close only our side, discard what still comes,
            # and cut the connection after a while if the client does not.
            transport.loseWriteConnection()
            self._linger = channel.callLater(_LINGER, transport.abortConnection)
        else:
            channel.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        super().connectionLost(reason)


class _Channel(HTTPChannel):
    """
    An HTTP connection that its L{ConfigSite} can close gracefully.
    """

    site: ConfigSite

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site._connections.add(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.site._connection_closed(self)

    def checkPersistence(self, request: Any, version: bytes) -> bool:
        if self.site.draining:
            request.responseHeaders.setRawHeaders(b"connection", [b"close"])
            return False
        return bool(super().checkPersistence(request, version))

    def close_when_idle(self) -> None:
        """
        Close now if no request is under way, else right after its response.
        """
        if self.requests:
            self.persistent = False
        else:
            self.loseConnection()


class ConfigSite(Site):
    """
    The L{Site} serving the app: request bodies are limited to
    C{max_body_bytes}, and L{drain} lets a stopping server finish the
    responses under way instead of cutting them off.

    @ivar draining: Whether L{drain} was called: every connection closes
        after its current response.
    """

    # A plain HTTP/1.1 channel rather than Twisted's wrapper that can switch
    # to HTTP/2 (which needs the h2 package and TLS, neither used here), so
    # that the site sees each connection open and close.
    protocol = _Channel  # type: ignore[assignment]
    _log = Logger()

    def __init__(
        self,
        resource: IResource,
        *,
        access_log: bool = True,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        super().__init__(resource, requestFactory=_LimitedRequest)
        self.max_body_bytes = max_body_bytes
        self.displayTracebacks = False
        self._access_log = access_log
        self._connections: set[_Channel] = set()
        self._drained: list[Deferred[None]] = []
        self.draining = False

    def log(self, request: Any) -> None:
        if self._access_log:
            super().log(request)

    def drain(
        self, clock: IReactorTime, timeout: float = DRAIN_TIMEOUT
    ) -> Deferred[None]:
        """
        Close every connection once its current response is sent (idle ones
        at once), and fire when all are closed or C{timeout} seconds have
        passed, whichever is first.  Call it after the port has stopped
        listening.
        """
        self.draining = True
        for channel in list(self._connections):
            channel.close_when_idle()
        if not self._connections:
            return succeed(None)
        self._log.info(
            "Finishing {count} open connection(s) before stopping",
            count=len(self._connections),
        )
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        call: IDelayedCall = clock.callLater(timeout, self._give_up, d)
        return d.addBoth(lambda result: call.cancel() if call.active() else None)

    def _give_up(self, d: Deferred[None]) -> None:
        if not d.called:
            self._log.warn(
                "Stopping with {count} connection(s) still open",
                count=len(self._connections),
            )
            self._drained.remove(d)
            d.callback(None)

    def _connection_closed(self, channel: _Channel) -> None:
        self._connections.discard(channel)
        if not self._connections:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)


def make_site(
    resource: IResource,
    access_log: bool = False,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> ConfigSite:
    """
    The HTTP factory serving C{resource}.  The access log is off unless
    asked for: probes and scrapes would otherwise fill the log with a line
    every few seconds.
    """
    return ConfigSite(resource, access_log=access_log, max_body_bytes=max_body_bytes)


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
    Serves the site, and stops C{twistd} with one clear line, rather than a
    traceback, when the endpoint cannot listen (port in use, no permission).

    On stopping it refuses new connections at once and lets the responses
    under way finish, for at most L{DRAIN_TIMEOUT} seconds.
    """

    def __init__(
        self,
        description: str,
        endpoint: object,
        site: ConfigSite,
        clock: IReactorTime,
    ) -> None:
        super().__init__(endpoint, site)
        self._description = description
        self._site = site
        self._clock = clock
        # Raise from startService, at start-up, instead of logging later.
        self._raiseSynchronously = True

    def _listen(self, start: Callable[[], object]) -> None:
        try:
            start()
        except Exception as e:
            _log.critical(
                "configmapdemo: error: cannot listen on {listen}: {error}",
                listen=self._description,
                error=e,
            )
            raise StartFailed(1) from None

    def privilegedStartService(self) -> None:
        # twistd binds here, before dropping privileges.
        self._listen(super().privilegedStartService)

    def startService(self) -> None:
        self._listen(super().startService)

    def stopService(self) -> Deferred[None]:
        stopped: Deferred[object] = maybeDeferred(super().stopService)
        return stopped.addCallback(
            lambda _: self._site.drain(self._clock, DRAIN_TIMEOUT)
        )
