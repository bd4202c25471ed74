"""
The HTTP server under the app: the site, the connection guard in front of
it, and the listening service that drains open connections when it stops.

The guard (L{_Connection}, one per connection) sits between the socket and
Twisted's HTTP channel, using only Twisted's public protocol-wrapping and
producer APIs.  It:

  - hands the channel one request at a time, and the next only once the
    response to the one before has been handed to the socket and the socket
    is not holding more than Twisted's write buffer (64 KiB); past
    L{MAX_HELD_BYTES} of requests waiting it stops reading: a client that
    pipelines requests and never reads costs a fixed amount of memory;
  - refuses request bodies over L{MAX_BODY_BYTES} with 413 before the
    channel sees them, and malformed framing (such as a C{Content-Length}
    of thousands of digits) with 400;
  - gives a client L{DEFAULT_HEADER_TIMEOUT} seconds to send a request once
    it has started it;
  - lets the factory count, shed and drain connections.

Twisted has no public way to limit a request body
(U{https://github.com/twisted/twisted/issues/4898}) and lets
C{int(Content-Length)} raise past Python's digit limit, so the guard reads
the request framing itself: L{_Framing} is that one place, and
C{tests/test_http_guard.py} checks that it still agrees with Twisted's own
parser and that Twisted still needs it.
"""

from __future__ import annotations

import enum
import itertools
import resource
import time
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IListeningPort,
    INegotiated,
    IProtocolNegotiationFactory,
    IPushProducer,
    IReactorCore,
    IReactorTime,
    ISSLTransport,
    IStreamServerEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.iweb import INonQueuedRequestFactory
from twisted.web.resource import IResource
from twisted.web.server import Request, Site
from zope.interface import implementer

from twisted_demo.logs import log_request

_log = Logger(namespace="configmapdemo")

#: The largest request body accepted.  No route reads a body; the limit
#: only has to keep a client from making the server buffer one.
MAX_BODY_BYTES = 16 * 1024

#: The largest request head (request line and headers) accepted, as
#: Twisted's own limit.
MAX_HEAD_BYTES = 16 * 1024

#: Bytes of pipelined requests a connection holds, beyond the one being
#: answered, before the server stops reading from it.
MAX_HELD_BYTES = MAX_HEAD_BYTES + MAX_BODY_BYTES

#: Seconds a stopping server waits for responses under way to be sent.
DRAIN_TIMEOUT = 3.0

#: Seconds a connection may stay open with no request under way.
DEFAULT_IDLE_TIMEOUT = 60.0

#: Seconds a client has to send the whole of a request once it has started.
DEFAULT_HEADER_TIMEOUT = 10.0

#: File descriptors kept free for everything that is not a connection: the
#: listening socket, the log, inotify, the parser process's pipes, reading
#: the config.
FD_RESERVE = 64

#: Seconds a connection whose request was refused may go on sending it.
_LINGER = 2.0

#: More digits than any length this server could accept.
_MAX_LENGTH_DIGITS = 18


def connection_limit(requested: int | None = None) -> int:
    """
    How many connections to serve at once: C{requested}, but never more
    than the process's file descriptor limit (C{RLIMIT_NOFILE}) minus
    L{FD_RESERVE}, so that the server never runs out of descriptors.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        ceiling = 1 << 20
    else:
        ceiling = max(1, soft - FD_RESERVE)
    return ceiling if requested is None else min(requested, ceiling)


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
    """
    The colon-separated parts of an endpoint description, escapes kept.
    """
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in description:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


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


class _Refusal(Exception):
    """
    A request the server answers itself, with C{status}, and then closes.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _State(enum.Enum):
    HEAD = "head"
    BODY = "body"
    CHUNK_SIZE = "chunk size line"
    CHUNK_DATA = "chunk data"
    CHUNK_END = "CRLF after a chunk"
    TRAILER = "trailer"


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


#: Orders connections by when they opened or last finished a response.
_events = itertools.count()

#: Looked up on every request: a module global costs less than the member.
_HEAD = _State.HEAD

_HEX = frozenset(b"0123456789abcdefABCDEF")

#: The longest chunk size line or trailer line read.
_MAX_LINE = 1024


class _Framing:
    """
    Where each HTTP/1.1 request in a byte stream begins and ends, read the
    way Twisted's C{HTTPChannel} reads it, so that the guard can hand the
    channel one request at a time and refuse what Twisted would buffer or
    choke on.  It only ever refuses more than Twisted, never less.
    """

    def __init__(self, max_body: int) -> None:
        self._max_body = max_body
        self.buffer = bytearray()
        self.state = _State.HEAD
        self._remaining = 0
        self._body = 0

    @property
    def held(self) -> int:
        """
        Bytes received and not yet handed on.
        """
        return len(self.buffer)

    @property
    def in_body(self) -> bool:
        """
        Whether the current request's head has been handed on and its body
        has not ended yet.
        """
        return self.state is not _State.HEAD

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def take_head(self) -> bytes | None:
        """
        The next request's head, if it has all arrived.

        @raise _Refusal: if the head is too large or its framing is invalid.
        """
        start = 2 if self.buffer.startswith(b"\r\n") else 0
        end = self.buffer.find(b"\r\n\r\n", start)
        if end < 0:
            if len(self.buffer) > MAX_HEAD_BYTES + start:
                raise _Refusal(400, "request head too large")
            return None
        if end > MAX_HEAD_BYTES + start:
            raise _Refusal(400, "request head too large")
        head = bytes(self.buffer[: end + 4])
        self._frame(head[start : end + 2])
        del self.buffer[: end + 4]
        return head

    def _frame(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        target = lines[0].split(b" ")
        if len(target) == 3 and not _utf8(unquote_to_bytes(target[1].split(b"?")[0])):
            # Klein would refuse it too, but log a traceback.
            raise _Refusal(400, "URL is not UTF-8")
        headers: list[bytes] = []
        for line in lines[1:-1]:
            if line[:1] in (b" ", b"\t") and headers:
                headers[-1] += b" " + line.lstrip(b" \t")
            else:
                headers.append(line)
        lengths: list[bytes] = []
        chunked = False
        for header in headers:
            name, _, value = header.partition(b":")
            name = name.lower()
            if name == b"content-length":
                lengths.append(value.strip(b" \t"))
            elif name == b"host" and not _utf8(value):
                raise _Refusal(400, "Host is not UTF-8")
            elif name == b"transfer-encoding":
                coding = value.strip(b" \t").lower()
                if coding == b"chunked":
                    lengths.append(b"chunked")
                    chunked = True
                elif coding != b"identity":
                    raise _Refusal(400, "unsupported transfer-coding")
        if len(lengths) > 1:
            raise _Refusal(400, "more than one body length")
        self._body = 0
        if chunked:
            self.state = _State.CHUNK_SIZE
            return
        if not lengths:
            return
        length = lengths[0]
        if not length.isdigit() or len(length.lstrip(b"0")) > _MAX_LENGTH_DIGITS:
            raise _Refusal(400, "invalid Content-Length")
        self._remaining = int(length)
        if self._remaining > self._max_body:
            raise _Refusal(413, "request body too large")
        if self._remaining:
            self.state = _State.BODY

    def take_body(self) -> bytes:
        """
        The bytes of the current request's body that have arrived, up to
        its end.

        @raise _Refusal: if the body grows past the limit or its chunked
            framing is invalid.
        """
        if self.state is _State.BODY:
            taken = min(self._remaining, len(self.buffer))
            self._remaining -= taken
            if not self._remaining:
                self.state = _State.HEAD
        else:
            taken = self._chunks()
        data = bytes(self.buffer[:taken])
        del self.buffer[:taken]
        return data

    def _chunks(self) -> int:
        buffer = self.buffer
        position = 0
        while True:
            if self.state is _State.CHUNK_SIZE or self.state is _State.TRAILER:
                end = buffer.find(b"\r\n", position)
                if end < 0:
                    if len(buffer) - position > _MAX_LINE:
                        raise _Refusal(400, f"{self.state.value} too long")
                    return position
                if end - position > _MAX_LINE:
                    raise _Refusal(400, f"{self.state.value} too long")
                line = bytes(buffer[position:end])
                position = end + 2
                if self.state is _State.TRAILER:
                    if not line:
                        self.state = _State.HEAD
                        return position
                    continue
                size = line.partition(b";")[0]
                if not size or not _HEX.issuperset(size):
                    raise _Refusal(400, "invalid chunk size")
                if len(size.lstrip(b"0")) > _MAX_LENGTH_DIGITS:
                    raise _Refusal(413, "request body too large")
                self._remaining = int(size, 16)
                self._body += self._remaining
                if self._body > self._max_body:
                    raise _Refusal(413, "request body too large")
                self.state = _State.CHUNK_DATA if self._remaining else _State.TRAILER
            elif self.state is _State.CHUNK_DATA:
                taken = min(self._remaining, len(buffer) - position)
                position += taken
                self._remaining -= taken
                if self._remaining:
                    return position
                self.state = _State.CHUNK_END
            else:
                if len(buffer) - position < 2:
                    return position
                if buffer[position : position + 2] != b"\r\n":
                    raise _Refusal(400, "chunk not followed by CRLF")
                position += 2
                self.state = _State.CHUNK_SIZE


_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 413: b"Content Too Large"}


def _refusal_response(status: int, reason: str) -> bytes:
    body = reason.encode("ascii") + b"\n"
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status]),
            b"Content-Type: text/plain; charset=utf-8\r\n",
            b"Content-Length: %d\r\n" % (len(body),),
            b"X-Content-Type-Options: nosniff\r\n",
            b"Connection: close\r\n",
            b"\r\n",
            body,
        ]
    )


@implementer(IPushProducer)
class _SendBuffer:
    """
    Registered with the socket, which pauses it while more than its buffer
    size (64 KiB) waits to be sent and resumes it once that is sent.
    """

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection

    def pauseProducing(self) -> None:
        self._connection.output_paused(True)

    def resumeProducing(self) -> None:
        self._connection.output_paused(False)

    def stopProducing(self) -> None:
        self._connection.output_stopped()


class _Connection(ProtocolWrapper):
    """
    One HTTP connection, guarded: see the module's docstring.

    The channel it wraps takes it for its transport; the socket it wraps
    pauses and resumes it through L{_SendBuffer}.
    """

    factory: ConnectionGuard

    def __init__(self, factory: ConnectionGuard, wrapped: Any) -> None:
        super().__init__(factory, wrapped)
        self._framing = _Framing(factory.max_body_bytes)
        self._registered = False
        self._lone = b""
        self._clock = factory.clock
        #: The request being answered, from its head to its response's end.
        self._answering = False
        self._request: Request | None = None
        self._socket: Any = None
        self._started = 0
        self._output_paused = False
        self._reading = True
        self._pumping = False
        self._again = False
        self._refused = False
        self._passthrough: bool | None = None
        self._close_when_idle = False
        self._lost = False
        self._producer: IPushProducer | None = None
        self._timer: IDelayedCall | None = None
        self._linger: IDelayedCall | None = None
        #: When, in order of events, the connection opened or its last
        #: response ended.
        self.since = next(_events)
        self.shed = False

    # The transport side, as the channel sees it.

    def makeConnection(self, transport: Any) -> None:
        self._socket = transport
        # Straight to the socket: these are called for every response.
        self.write = transport.write  # type: ignore[method-assign]
        self.writeSequence = transport.writeSequence  # type: ignore[method-assign]
        self.getPeer = transport.getPeer  # type: ignore[method-assign]
        self.getHost = transport.getHost  # type: ignore[method-assign]
        super().makeConnection(transport)
        transport.registerProducer(_SendBuffer(self), True)
        self._registered = True

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        # The channel registers itself: it is paused and resumed with the
        # send buffer, through _SendBuffer.
        self._producer = producer

    def unregisterProducer(self) -> None:
        self._producer = None

    def pauseProducing(self) -> None:
        """
        Ignored: the guard decides when to read from the socket.
        """

    def resumeProducing(self) -> None:
        """
        Ignored: the guard decides when to read from the socket.
        """

    def loseConnection(self) -> None:
        self._stop_timer()
        self._unregister()
        super().loseConnection()

    def abort(self) -> None:
        """
        Close at once, discarding what is not sent yet.
        """
        self._unregister()
        self._socket.abortConnection()

    def _unregister(self) -> None:
        if self._registered:
            self._registered = False
            self._socket.unregisterProducer()

    # The socket side.

    def output_paused(self, paused: bool) -> None:
        """
        The socket's send buffer filled up (C{paused}) or was sent.
        """
        self._output_paused = paused
        if self._producer is not None:
            if paused:
                self._producer.pauseProducing()
            else:
                self._producer.resumeProducing()
        if not paused:
            self._pump()

    def output_stopped(self) -> None:
        if self._producer is not None:
            self._producer.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        framing = self._framing
        if (
            self._passthrough is False
            and not framing.buffer
            and framing.state is _HEAD
            and not (
                self._answering
                or self._output_paused
                or self._pumping
                or self._close_when_idle
                or self._refused
            )
            # Clients on a kept-alive connection mostly send the same head
            # again: checked once.
            and (data == self._lone or _lone_head(data))
        ):
            # The usual case, one whole request without a body, in ASCII
            # with no escapes, goes straight to the channel, as _start and
            # _deliver would hand it, one call fewer each.
            self._lone = data
            self._answering = True
            started = self._started
            try:
                self.wrappedProtocol.dataReceived(data)
            except Exception as e:
                self._parser_failed(e)
            if self._started == started and not self.disconnecting:
                self._answering = False
            return
        if self._refused or self.wrappedProtocol is None:
            return
        if self._passthrough is None:
            negotiated = INegotiated(self._socket, None)
            protocol = None if negotiated is None else negotiated.negotiatedProtocol
            self._passthrough = protocol not in (None, b"http/1.1")
        if self._passthrough:
            self.wrappedProtocol.dataReceived(data)
            return
        self._framing.feed(data)
        self._pump()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        self._registered = False
        self._stop_timer()
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        super().connectionLost(reason)

    # Requests.

    def request_finished(self) -> None:
        """
        The response to the request being answered has ended.
        """
        self._answering = False
        self._request = None
        self.since = next(_events)
        if self._lost:
            return
        if self._close_when_idle:
            self.loseConnection()
        elif self._framing.buffer or not self._reading:
            self._pump()

    @property
    def answering(self) -> bool:
        """
        Whether a request has been handed to the channel and its response
        has not ended yet.
        """
        return self._answering

    @property
    def idle(self) -> bool:
        """
        Whether the connection is between requests: it has been answered at
        least once, and no request is being answered nor has begun to arrive.
        """
        return self._started > 0 and not self._answering and not self._framing.held

    def close_when_idle(self) -> None:
        """
        Close now if no request is under way, else once its response is
        sent, without starting the requests after it.
        """
        self._close_when_idle = True
        if self._answering and self._request is not None:
            self._request.setHeader(b"connection", b"close")
        elif not self._answering and not self._lost:
            self.loseConnection()

    # Handing requests to the channel.

    def _pump(self) -> None:
        if self._pumping:
            self._again = True
            return
        self._pumping = True
        try:
            self._again = True
            while self._again:
                self._again = False
                self._hand_on()
        except _Refusal as refusal:
            self._refuse(refusal.status, refusal.reason)
        finally:
            self._pumping = False
        self._update()

    def _hand_on(self) -> None:
        while not (self.disconnecting or self._refused or self._lost):
            channel = self.wrappedProtocol
            if channel is None:
                return
            if self._framing.in_body:
                data = self._framing.take_body()
                if data:
                    self._deliver(data)
                if self._framing.in_body:
                    return
            elif not self._ready:
                return
            else:
                head = self._framing.take_head()
                if head is None:
                    return
                self._start(head)

    @property
    def _ready(self) -> bool:
        """
        Whether the next request may be handed to the channel.
        """
        return not (
            self._answering
            or self._output_paused
            or self._close_when_idle
            or self._framing.in_body
        )

    def _start(self, head: bytes) -> None:
        self._answering = True
        started = self._started
        self._deliver(head)
        if self._started == started and not self.disconnecting:
            # The channel made no request of it: nothing to wait for.
            self._answering = False

    def _deliver(self, data: bytes) -> None:
        try:
            self.wrappedProtocol.dataReceived(data)
        except Exception as e:
            self._parser_failed(e)

    def _parser_failed(self, error: Exception) -> None:
        # Only the channel's parser can raise here (the site turns a
        # resource's exception into a 500): a request it cannot read.
        _log.warn(
            "Refused a request Twisted's HTTP parser raised on: {error}",
            error=repr(error)[:200],
        )
        self._refuse(400, "malformed request")

    def _refuse(self, status: int, reason: str) -> None:
        self._refused = True
        self._stop_timer()
        transport = self._socket
        transport.write(_refusal_response(status, reason))
        self._unregister()
        if ITCPTransport.providedBy(transport) and not ISSLTransport.providedBy(
            transport
        ):
            # Closing outright while the request is still arriving would make
            # the kernel reset the connection, and the client could lose the
            # answer: close only our side, discard what still comes, and cut
            # the connection after a while if the client does not.
            transport.loseWriteConnection()
            self._linger = self._clock.callLater(_LINGER, transport.abortConnection)
            self._set_reading(True)
        else:
            self.disconnecting = 1
            transport.loseConnection()

    def _update(self) -> None:
        """
        Read only while little is held, and time a request still arriving.
        """
        if self._refused or self.disconnecting or self._lost:
            return
        self._set_reading(self._framing.held <= MAX_HELD_BYTES)
        # A request held back while the client leaves responses unread is
        # the idle timeout's business, not this one's.
        arriving = self._framing.in_body or (
            self._framing.held > 0 and not self._answering and not self._output_paused
        )
        if arriving and self._timer is None:
            self._timer = self._clock.callLater(
                self.factory.header_timeout, self._timed_out
            )
        elif not arriving:
            self._stop_timer()

    def _set_reading(self, reading: bool) -> None:
        if reading != self._reading:
            self._reading = reading
            if reading:
                self._socket.resumeProducing()
            else:
                self._socket.pauseProducing()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        self._refuse(408, "request not received in time")


def _lone_head(data: bytes) -> bool:
    """
    Whether C{data} is exactly one request head, announcing no body, in
    ASCII with no escapes (so with no URL or Host to check for UTF-8).
    """
    end = data.find(b"\r\n\r\n")
    if not 0 < end == len(data) - 4 or end > MAX_HEAD_BYTES:
        return False
    if not data.isascii() or b"%" in data:
        return False
    lowered = data.lower()
    return b"content-length" not in lowered and b"transfer-encoding" not in lowered


@implementer(INonQueuedRequestFactory)
class _GuardedRequests:
    """
    The channel's C{requestFactory} on a guarded connection: requests from
    the heads the guard hands it, each of which tells the guard when its
    response has ended.  (An object that says it makes non-queued requests:
    the channel asks that of its factory on every request, and a bound
    method would answer through a raised AttributeError.)
    """

    def __init__(self, guard: _Connection) -> None:
        self._guard = guard

    def __call__(self, channel: Any) -> Request:
        guard = self._guard
        request = _Request(channel)
        request.guard = guard
        guard._started += 1
        guard._request = request
        if guard._close_when_idle:
            request.setHeader(b"connection", b"close")
        return request


class _Request(Request):
    """
    A request that tells the guard of its connection, if any, when its
    response has ended.  (A connection lost first tells the guard itself.)
    Overriding C{finish} costs less than the Deferred of C{notifyFinish}, on
    every request.
    """

    guard: _Connection | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # For the access log's duration.
        self.started = time.monotonic()

    def finish(self) -> None:
        Request.finish(self)
        guard = self.guard
        if guard is not None:
            # What request_finished does when nothing else is to be done:
            # this runs for every request.
            guard._answering = False
            guard._request = None
            guard.since = next(_events)
            if (
                guard._framing.buffer
                or guard._close_when_idle
                or guard._lost
                or not guard._reading
            ):
                guard.request_finished()


@implementer(IProtocolNegotiationFactory)
class ConnectionGuard(WrappingFactory[_Connection]):
    """
    The factory to listen with: wraps each of the site's connections in the
    guard described in this module's docstring, keeps at most
    C{max_connections} of them open, and drains them when the server stops.
    C{clock} times the guard's timeouts.

    Over TLS, the protocols offered by ALPN are the site's: Twisted's TLS
    asks the factory it wraps, which is this one, and a server that names
    none fails every handshake with a client that offers ALPN.
    """

    protocol = _Connection

    def __init__(
        self,
        site: Site,
        clock: IReactorTime,
        max_connections: int | None = None,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        super().__init__(site)
        self.clock = clock
        self.max_connections = connection_limit(max_connections)
        self.header_timeout = header_timeout
        self.max_body_bytes = max_body_bytes
        self.draining = False
        self._shed_count = 0
        self._full_logged_at: float | None = None
        self._drained: list[Deferred[None]] = []

    def acceptableProtocols(self) -> list[bytes]:
        """
        The site's protocols for ALPN (C{http/1.1}, and C{h2} where Twisted
        can speak it).
        """
        site = IProtocolNegotiationFactory(self.wrappedFactory, None)
        return [] if site is None else list(site.acceptableProtocols())

    @property
    def open(self) -> list[_Connection]:
        """
        The connections open now, other than those being shed.
        """
        return [c for c in self.protocols if not c.shed]

    def buildProtocol(self, addr: IAddress | None) -> Any:
        if self.draining:
            return None
        if len(self.protocols) - self._shed_count >= self.max_connections:
            if not self._shed_one():
                return None
        connection = super().buildProtocol(addr)
        # HTTPChannel's per-connection request factory: the guard's.
        channel: Any = connection.wrappedProtocol
        channel.requestFactory = _GuardedRequests(connection)
        return connection

    def _shed_one(self) -> bool:
        """
        Close the connection idle for longest, or else the one whose request
        has been arriving for longest, to make room for a new one.
        """
        candidates = self.open
        idle = [c for c in candidates if c.idle]
        # Those that have not sent a whole request yet, new ones included.
        arriving = [c for c in candidates if not c.idle and not c.answering]
        victims = idle or arriving
        now = self.clock.seconds()
        if self._full_logged_at is None or now - self._full_logged_at >= 60:
            self._full_logged_at = now
            _log.warn(
                "Connection limit of {limit} reached: {action}",
                limit=self.max_connections,
                action=(
                    "closing the oldest idle or slowest connections to make room"
                    if victims
                    else "refusing new connections until one closes"
                ),
            )
        if not victims:
            return False
        victim = min(victims, key=lambda c: c.since)
        victim.shed = True
        self._shed_count += 1
        victim.abort()
        return True

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        if p.shed:
            self._shed_count -= 1
        if not self.protocols:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)

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
        for connection in list(self.protocols):
            connection.close_when_idle()
        if not self.protocols:
            return succeed(None)
        _log.info(
            "Finishing {count} open connection(s) before stopping",
            count=len(self.protocols),
        )
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        call = clock.callLater(timeout, self._give_up, d)
        return d.addBoth(lambda result: call.cancel() if call.active() else None)

    def _give_up(self, d: Deferred[None]) -> None:
        if not d.called:
            _log.warn(
                "Stopping with {count} connection(s) still open",
                count=len(self.protocols),
            )
            self._drained.remove(d)
            d.callback(None)


class ConfigSite(Site):
    """
    The L{Site} serving the app: no tracebacks in responses, an optional
    access log, and an idle timeout.
    """

    def __init__(
        self,
        resource: IResource,
        *,
        access_log: bool = True,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        clock: IReactorTime | None = None,
    ) -> None:
        super().__init__(
            resource,
            requestFactory=_Request,
            timeout=idle_timeout,
            reactor=clock,
        )
        self.displayTracebacks = False
        self._access_log = access_log

    def log(self, request: Any) -> None:
        if self._access_log:
            log_request(
                request,
                self.reactor.seconds(),
                time.monotonic() - request.started,
            )


def make_site(
    resource: IResource,
    access_log: bool = False,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    clock: IReactorTime | None = None,
) -> ConfigSite:
    """
    The HTTP factory serving C{resource}.  The access log is off unless
    asked for: probes and scrapes would otherwise fill the log with a line
    every few seconds.  Connections with no request under way close after
    C{idle_timeout} seconds of C{clock} (the reactor if not given).
    """
    return ConfigSite(
        resource, access_log=access_log, idle_timeout=idle_timeout, clock=clock
    )


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
    Serves the site through the connection guard, and stops C{twistd} with
    one clear line, rather than a traceback, when the endpoint cannot listen
    (port in use, no permission).

    On stopping it refuses new connections at once and lets the responses
    under way finish, for at most L{DRAIN_TIMEOUT} seconds.
    """

    def __init__(
        self,
        description: str,
        endpoint: IStreamServerEndpoint,
        site: Site,
        reactor: Any,
        *,
        max_connections: int | None = None,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.connections = ConnectionGuard(
            site,
            reactor,
            max_connections,
            header_timeout=header_timeout,
            max_body_bytes=max_body_bytes,
        )
        super().__init__(endpoint, self.connections)
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
        _log.info(
            "Serving at most {limit} connections at once",
            limit=self.connections.max_connections,
        )

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
            lambda _: self.connections.drain(self._reactor, DRAIN_TIMEOUT)
        )
