"""
The HTTP server under the app: Twisted's own HTTP/1.1 channel and request,
with the limits a public service needs added through the methods Twisted
documents for subclasses, and how it drains its connections when it stops
(L{ConfigSite.drain}).  Where it listens is L{twisted_demo.listening}.

  - L{_Request} refuses a body over L{MAX_BODY_BYTES} with 413 as soon as
    its length is known (C{gotLength}) or, chunked, as it grows
    (C{handleContentChunk}); a request framed by any C{Transfer-Encoding}
    but C{chunked} alone with 400 before its body is read (C{gotLength});
    and an HTTP/1.1 request without C{Host}, any request with two, or with
    a URL or C{Host} that is not UTF-8, with 400 (C{requestReceived}).
  - L{_Channel} refuses a C{Content-Length} too long for C{int()} with 400,
    gives a client L{DEFAULT_HEADER_TIMEOUT} seconds to
    send a request once it has started it, and holds the next pipelined
    request back while the client leaves responses unread: Twisted then
    stops reading past 16 KiB of them, so a client that pipelines and never
    reads costs a fixed amount of memory.
  - Each connection's life is a set of named states, new, idle, reading a
    request, answering it, sending its response, draining, closed: see
    L{twisted_demo.connection}.
  - L{ConfigSite} counts the connections: at its limit it stops accepting
    (the listening port is a producer, paused) and closes the connection
    idle for longest, or else the slowest to send its request.  It also
    counts what the connections hold beyond an idle one's cost (requests
    arriving in pieces, responses left unread): past the connections'
    share of the memory, it closes the one that has held longest.

What Twisted offers no public way to do is in one place, L{_TwistedGaps}.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IPushProducer,
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
from zope.interface import implementer

from twisted_demo import budget
from twisted_demo.connection import HEADER_COST, Connection
from twisted_demo.live import Allowance
from twisted_demo.logs import log_request

_log = Logger(namespace="configmapdemo")

#: The largest request body accepted.  No route reads a body; the limit
#: only has to keep a client from making the server buffer one.
MAX_BODY_BYTES = 16 * 1024

#: Seconds a stopping server waits for responses under way to be sent.
DRAIN_TIMEOUT = 3.0

#: Seconds a connection may stay open with no request under way.
DEFAULT_IDLE_TIMEOUT = 60.0

#: Seconds a client has to send the whole of a request once it has started.
DEFAULT_HEADER_TIMEOUT = 10.0

#: Bytes of a response written at a time, as the client reads them.
_SLICE = 64 * 1024

_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 413: b"Content Too Large"}


def _refusal(status: int, reason: str) -> bytes:
    body = reason.encode("ascii") + b"\n"
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status]),
            b"Content-Type: text/plain; charset=utf-8\r\n",
            b"Content-Length: %d\r\n" % (len(body),),
            b"X-Content-Type-Options: nosniff\r\n",
            b"Connection: close\r\n\r\n",
            body,
        ]
    )


class _TwistedGaps(HTTPChannel):
    """
    What Twisted offers no public way to do, in one place; each is watched
    by a test in C{tests/test_http_guard.py} that fails if Twisted changes.

      - Twisted refuses some requests itself with a bare C{400 Bad Request}
        and no headers (more than 500 headers, a header line it cannot
        read): U{https://github.com/twisted/twisted/issues/8250}.
      - A TCP port accepts up to C{numberAccepts} connections each time it
        is readable, 20 more each time the backlog fills the batch, and
        cannot be paused part way (C{twisted.internet.tcp.Port.doRead});
        no ticket asks for a bound (the nearest is
        U{https://github.com/twisted/twisted/issues/3958}).
      - A L{Site} builds its channel through C{protocol}, typed as Twisted's
        private proxy that can swap HTTP/1.1 for HTTP/2
        (U{https://github.com/twisted/twisted/issues/8193}); serving a
        subclass of L{HTTPChannel} is how the limits apply, but Twisted
        documents no way to (U{https://github.com/twisted/twisted/issues/5727}).
        L{served_by} sets it, here alone.
    """

    @classmethod
    def served_by(cls, site: type[Site]) -> None:
        """
        Have C{site}'s instances build this channel for each connection.
        """
        site.protocol = cls  # type: ignore[assignment]

    life: Connection

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.life.refuse(400, "malformed request")

    def lineLengthExceeded(self, line: bytes) -> None:
        # Public, but Twisted's answers nothing at all.
        self.life.refuse(400, "request head too large")

    @staticmethod
    def accept_at_most(port: Any, count: int) -> None:
        """
        Have C{port} accept at most C{count} connections in its next batch.
        """
        if hasattr(port, "numberAccepts"):
            port.numberAccepts = max(1, min(port.numberAccepts, count))


class _Channel(_TwistedGaps):
    """
    Twisted's HTTP/1.1 channel, with the limits of the module's docstring.
    """

    site: ConfigSite
    life: Connection
    _received = 0
    _output_paused = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self.life = Connection(self, self.site)
        self.site.connection_made(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.life.lost()
        self.site.connection_lost(self)
        super().connectionLost(reason)
        # The channel and its life refer to each other: without this, what
        # the connection held (a request's head, its response) would wait
        # for the cyclic collector, long after the connection was shed to
        # free it.
        del self.life

    def dataReceived(self, data: bytes) -> None:
        received = self._received
        try:
            super().dataReceived(data)
        except ValueError:
            # int() of a Content-Length past Python's digit limit: the one
            # error Twisted's parser raises rather than answers.
            self.life.refuse(400, "invalid Content-Length")
            return
        if self._received == received:
            # Part of a request arrived, not all of it.
            self.life.begun(len(data))
        elif self.requests and self.requests[-1] is not self.life.request:
            # A request was answered, and the next begun behind it: its
            # headers are read, the rest waits in Twisted's buffer.
            self.life.begun(_cost_of(self.requests[-1]))

    def requestDone(self, request: Request) -> None:
        if self._output_paused:
            self.life.blocked(request)
        else:
            self.life.done()
            super().requestDone(request)

    def pauseProducing(self) -> None:
        self._output_paused = True
        self.life.unread(True)
        super().pauseProducing()

    def resumeProducing(self) -> None:
        self._output_paused = False
        self.life.unread(False)
        super().resumeProducing()
        held = self.life.unblocked()
        if held is not None:
            super().requestDone(held)

    def refused(self, status: int, reason: str) -> None:
        """
        Answer with C{status}, discard what the client still sends and
        close; over TCP, only our side at first, so that the client reads
        the answer rather than a reset while it is still sending.
        """
        transport: Any = self.transport
        self.dataReceived = _discard  # type: ignore[method-assign]
        # And the rest of what was read with it: Twisted's parser would go
        # on to the next line of the same read (a refused request line's
        # head, then a blank line) in a request it never began.
        self.clearLineBuffer()
        transport.write(_refusal(status, reason))
        transport.unregisterProducer()
        if ITCPTransport.providedBy(transport) and not ISSLTransport.providedBy(
            transport
        ):
            transport.loseWriteConnection()
            IPushProducer(transport).resumeProducing()
        else:
            transport.loseConnection()

    def shed(self) -> None:
        """Close at once, discarding what is not sent yet."""
        transport: Any = self.transport
        transport.abortConnection()


def _cost_of(request: Request) -> int:
    """
    What the header lines read into C{request} hold.
    """
    return sum(
        len(name) + len(value) + HEADER_COST
        for name, values in request.requestHeaders.getAllRawHeaders()
        for value in values
    )


def _discard(data: bytes) -> None:
    pass


@implementer(IPushProducer)
class _Slices:
    """
    A large response body, written a slice at a time while the client
    reads: a client that does not read holds one slice, not a copy of it.
    """

    def __init__(self, request: _Request, body: bytes) -> None:
        self._request = request
        self._body = memoryview(body)
        self._paused = False
        self.finish_after = False

    @property
    def sending(self) -> bool:
        return bool(self._body)

    def resumeProducing(self) -> None:
        self._paused = False
        while self._body and not self._paused:
            piece, self._body = self._body[:_SLICE], self._body[_SLICE:]
            Request.write(self._request, bytes(piece))
        if not self._body:
            self._request.unregisterProducer()
            if self.finish_after:
                self._request.finish()

    def pauseProducing(self) -> None:
        self._paused = True

    def stopProducing(self) -> None:
        self._body = memoryview(b"")


class _Request(Request):
    """
    A request whose body and framing are checked against the server's
    limits before the app sees it, and whose large responses are written
    as the client reads them.
    """

    channel: _Channel
    _body = 0
    _slices: _Slices | None = None
    #: When the head was read, for the access log's duration; None while
    #: the log is off, and for a request refused before its head was read.
    started: float | None = None

    def write(self, data: bytes) -> None:
        # With no channel (the connection was lost) Twisted drops the write.
        if (
            len(data) <= _SLICE
            or self.method == b"HEAD"
            or self._slices is not None
            or self.channel is None
        ):
            super().write(data)
            return
        self._slices = _Slices(self, data)
        self.registerProducer(self._slices, True)
        self._slices.resumeProducing()

    def finish(self) -> None:
        if self._slices is not None and self._slices.sending:
            self._slices.finish_after = True
        else:
            super().finish()

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        # A body still being written and this request refer to each other,
        # and through the request to the transport and all it buffered:
        # left to the cyclic collector, a burst of clients closed with
        # their responses unread kept 60 MiB of them.
        slices, self._slices = self._slices, None
        if slices is not None:
            slices.stopProducing()
            self.producer = None

    def gotLength(self, length: int | None) -> None:
        codings = self.requestHeaders.getRawHeaders(b"transfer-encoding")
        if codings is not None and (problem := _framing_problem(self, codings)):
            self._refuse_before_body(400, problem)
        elif length is not None and length > self.channel.site.max_body_bytes:
            self._refuse_before_body(413, "request body too large")
        else:
            super().gotLength(length)

    def _refuse_before_body(self, status: int, reason: str) -> None:
        self.channel.life.refuse(status, reason)
        # Or the channel would invite the body next.
        self.requestHeaders.removeHeader(b"expect")

    def handleContentChunk(self, data: bytes) -> None:
        self._body += len(data)
        if self._body > self.channel.site.max_body_bytes:
            self.channel.life.refuse(413, "request body too large")
        elif self.content is not None:
            super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        channel = self.channel
        if channel.site.access_log:
            self.started = time.monotonic()
        # On every answer, those twisted.web gives without the app's
        # resource (OPTIONS *, and its 405 for other methods on *) too.
        self.responseHeaders.setRawHeaders(b"x-content-type-options", [b"nosniff"])
        channel._received += 1
        problem = _problem(self, path, version)
        if problem is not None:
            channel.life.refuse(400, problem)
        elif channel.life.received(self):
            super().requestReceived(command, path, version)


def _problem(request: Request, path: bytes, version: bytes) -> str | None:
    """
    Why the server refuses a request whose head Twisted read, if it does.
    """
    hosts = request.requestHeaders.getRawHeaders(b"host")
    # RFC 9112, section 3.2.
    if hosts is None:
        return None if version != b"HTTP/1.1" else "no Host header"
    if len(hosts) > 1:
        return "more than one Host header"
    if not (path.isascii() and hosts[0].isascii()) or b"%" in path:
        try:
            unquote_to_bytes(path.split(b"?")[0]).decode("utf-8")
        except UnicodeDecodeError:
            # Klein would refuse it too, but log a traceback.
            return "URL is not UTF-8"
        try:
            hosts[0].decode("utf-8")
        except UnicodeDecodeError:
            return "Host is not UTF-8"
    return None


def _framing_problem(request: Request, codings: Sequence[bytes]) -> str | None:
    """
    Why the server refuses a request with C{Transfer-Encoding} lines
    C{codings}, if it does: only C{chunked} alone frames a body it reads.
    """
    # RFC 9112, section 6.1: the lines are one comma-separated list, whose
    # last coding frames the body.  Twisted reads each line alone and skips
    # identity, so "chunked" then "identity" was read as chunked, while a
    # proxy that takes the last coding reads another end of the body.
    listed = b",".join(codings).split(b",")
    if len(listed) != 1 or listed[0].strip(b" \t").lower() != b"chunked":
        return "Transfer-Encoding other than chunked"
    # Twisted refuses this itself, as two body lengths, as long as it reads
    # chunked as a length (RFC 9112, section 6.3).
    if request.requestHeaders.hasHeader(b"content-length"):
        return "Transfer-Encoding with Content-Length"
    return None


def _once_a_minute(clock: IReactorTime) -> Allowance:
    """
    The allowance of a warning the site repeats while a pressure lasts.
    """
    return Allowance(clock.seconds(), burst=1, interval=60.0)


#: Connections past the limit accepted in one batch, before the port pauses.
_SLACK = budget.FD_RESERVE // 2


class ConfigSite(Site):
    """
    The L{Site} serving the app: no tracebacks in responses, an optional
    access log, an idle timeout, and at most C{max_connections} open at
    once (see the module's docstring).
    """

    def __init__(
        self,
        resource: IResource,
        *,
        access_log: bool = False,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_connections: int | None = None,
        connection_cost: int = budget.PLAIN_CONNECTION,
        connection_memory: int | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        super().__init__(
            resource, requestFactory=_Request, timeout=idle_timeout, reactor=clock
        )
        self.displayTracebacks = False
        self.access_log = access_log
        self.header_timeout = header_timeout
        self.max_body_bytes = max_body_bytes
        self.max_connections = budget.connection_limit(max_connections)
        #: What one idle connection costs, and what all the connections may
        #: hold together: the budget's share, and at least the room of a
        #: full set of idle ones.
        self.connection_cost = connection_cost
        self.connection_memory = max(
            connection_memory or 0, self.max_connections * connection_cost
        )
        #: Bytes held beyond an idle connection's cost (L{Connection.held}),
        #: in all, and the connections that hold any, oldest first.
        self.held = 0
        self.holders: dict[_Channel, None] = {}
        self._overspent_lines = _once_a_minute(self.reactor)
        self.draining = False
        #: Every open connection, and those that may be shed, oldest first:
        #: idle ones (0) before those still sending a request (1).
        self.open: set[_Channel] = set()
        self.tiers: tuple[dict[_Channel, None], ...] = ({}, {})
        self._ports: list[Any] = []
        self._paused = False
        self._full_lines = _once_a_minute(self.reactor)
        self._drained: list[Deferred[None]] = []

    def log(self, request: Any) -> None:
        if self.access_log:
            started = request.started
            duration = 0.0 if started is None else time.monotonic() - started
            log_request(request, self.reactor.seconds(), duration)

    def acceptableProtocols(self) -> list[bytes]:
        """HTTP/1.1 only, for ALPN: the channel is Twisted's HTTP/1.1 one."""
        return [b"http/1.1"]

    def buildProtocol(self, addr: IAddress | None) -> Any:
        # Past the limit only within one batch of accepts, before the port
        # is paused: refused outright past half the descriptors in reserve.
        if self.draining or len(self.open) >= self.max_connections + _SLACK:
            return None
        return super().buildProtocol(addr)

    def accept_from(self, port: IListeningPort) -> None:
        """Pause C{port} while the site is full, if it can be paused."""
        if IPushProducer.providedBy(port):
            self._ports.append(port)

    def connection_made(self, channel: _Channel) -> None:
        self.open.add(channel)
        if len(self.open) > self.max_connections:
            self._full()

    def connection_lost(self, channel: _Channel) -> None:
        self.open.discard(channel)
        if self._paused and len(self.open) <= self.max_connections:
            self._paused = False
            for port in self._ports:
                room = self.max_connections + _SLACK - len(self.open)
                _Channel.accept_at_most(port, room)
                port.resumeProducing()
        if not self.open:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)

    def _full(self) -> None:
        if not self._paused:
            self._paused = True
            for port in self._ports:
                port.pauseProducing()
        idle, arriving = self.tiers
        victims = idle or arriving
        if self._full_lines.take(self.reactor.seconds()):
            _log.warn(
                "Connection limit of {limit} reached: {action}",
                limit=self.max_connections,
                action=(
                    "closing the oldest idle or slowest connections to make room"
                    if victims
                    else "accepting no new connection until one closes"
                ),
            )
        if victims:
            next(iter(victims)).life.shed()

    def holding(self, channel: _Channel, change: int) -> None:
        """
        C{channel} holds C{change} bytes more (fewer, if negative) beyond
        an idle connection's cost.  While the connections together hold
        more than L{connection_memory}, the one that has held longest is
        closed: a client that sends its request a byte at a time, or
        leaves a large response unread, cannot take the memory the budget
        gives the parser process.
        """
        self.held += change
        if channel.life.held:
            self.holders[channel] = None
        else:
            self.holders.pop(channel, None)
        if change <= 0:
            return
        while self.holders and self._overspent():
            # The one holding longest: a client's own download holds for
            # as long as it reads, one that holds on purpose for longer.
            victim = next(iter(self.holders))
            self._log_overspent()
            victim.life.overspent()

    def _overspent(self) -> bool:
        # Idle connections past the limit are being closed to make room:
        # what they cost is the connection limit's business, not this.  A
        # full site still has room for one connection to hold what one
        # may, so that a request arriving in pieces can be answered.
        idle = min(len(self.open), self.max_connections) * self.connection_cost
        return self.held > max(self.connection_memory - idle, budget.UNREAD)

    def _log_overspent(self) -> None:
        if self._overspent_lines.take(self.reactor.seconds()):
            _log.warn(
                "Connections hold more than their {memory} of memory: closing "
                "those that have held longest (requests arriving slowly, "
                "responses left unread)",
                memory=f"{self.connection_memory / 2**20:.1f} MiB",
            )

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
        for channel in list(self.open):
            channel.life.drain()
        if not self.open:
            return succeed(None)
        _log.info(
            "Finishing {count} open connection(s) before stopping",
            count=len(self.open),
        )
        d: Deferred[None] = Deferred()
        self._drained.append(d)

        def give_up() -> None:
            if not d.called:
                _log.warn(
                    "Stopping with {count} connection(s) still open",
                    count=len(self.open),
                )
                self._drained.remove(d)
                d.callback(None)

        call = clock.callLater(timeout, give_up)
        return d.addBoth(lambda result: call.cancel() if call.active() else None)


_Channel.served_by(ConfigSite)


def make_site(
    resource: IResource,
    access_log: bool = False,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    clock: IReactorTime | None = None,
    **limits: Any,
) -> ConfigSite:
    """
    The HTTP factory serving C{resource}.  The access log is off unless
    asked for: probes and scrapes would otherwise fill the log with a line
    every few seconds.  Connections with no request under way close after
    C{idle_timeout} seconds of C{clock} (the reactor if not given);
    C{limits} are L{ConfigSite}'s.
    """
    return ConfigSite(
        resource,
        access_log=access_log,
        idle_timeout=idle_timeout,
        clock=clock,
        **limits,
    )
