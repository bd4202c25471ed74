"""
The limits on Twisted's HTTP channel: backpressure on a client that
pipelines and never reads, refusals with 400, 408 and 413, timeouts, the
connection cap, and the listen backlog.

Some tests here watch Twisted itself: they fail, loudly, the day Twisted
limits request bodies, parses a huge C{Content-Length} without raising, or
changes how it refuses a request itself, and the server's workaround for
each can go or must follow.
"""

from __future__ import annotations

import gc
import socket
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer

from tests.support import DEADLINE, captured_log, until
from tests.test_docs import ROOT
from twisted_demo.budget import FD_RESERVE, UNREAD, connection_limit
from twisted_demo.connection import HEADER_COST, LINGER
from twisted_demo.listening import endpoint_for, with_backlog
from twisted_demo.options import Options
from twisted_demo.server import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    MAX_BODY_BYTES,
    ConfigSite,
    make_site,
)

reactor: Any = _reactor


class Recording(Resource):
    """
    Answers every request with C{size} bytes and records what it was asked.
    """

    isLeaf = True

    def __init__(self, size: int = 2) -> None:
        super().__init__()
        self.size = size
        self.seen: list[tuple[bytes, bytes, bytes]] = []

    def render(self, request: IRequest) -> bytes:
        body = request.content.read() if request.content is not None else b""
        self.seen.append((request.method, request.uri, body))
        return b"x" * self.size


class Connected:
    """
    One connection to a site, over an in-memory transport.
    """

    def __init__(
        self, site: ConfigSite, transport: StringTransport | None = None
    ) -> None:
        self.transport = StringTransport() if transport is None else transport
        self.protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
        assert self.protocol is not None
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    @property
    def sent(self) -> bytes:
        sent: bytes = self.transport.value()
        return sent

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)


def _guard(
    resource: Resource, clock: Clock | None = None, **options: Any
) -> ConfigSite:
    clock = Clock() if clock is None else clock
    return make_site(resource, clock=clock, **options)


def _chunked(*chunks: bytes, trailer: bytes = b"") -> bytes:
    return (
        b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks)
        + b"0\r\n"
        + trailer
        + b"\r\n"
    )


#: Pipelined requests whose framing the guard must read as Twisted does.
PIPELINED = b"".join(
    [
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
        # A body that looks like a request head.
        b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 28\r\n\r\n"
        b"GET /fake HTTP/1.1\r\nX: y\r\n\r\n",
        # The extra empty line some clients send after a body.
        b"\r\n",
        b"POST /c HTTP/1.1\r\nHost: x\r\ntransfer-encoding: chunked\r\n\r\n"
        + _chunked(b"he\r\n\r\nllo", b" world", trailer=b"X-Trailer: 1\r\n"),
        # A Content-Length folded onto a continuation line.
        b"POST /d HTTP/1.1\r\nHost: x\r\ncontent-length:\r\n 3\r\n\r\nabc",
        b"GET /e HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    ]
)
EXPECTED = [
    (b"GET", b"/a", b""),
    (b"POST", b"/b", b"GET /fake HTTP/1.1\r\nX: y\r\n\r\n"),
    (b"POST", b"/c", b"he\r\n\r\nllo world"),
    (b"POST", b"/d", b"abc"),
    (b"GET", b"/e", b""),
]


def test_guard_reads_pipelined_framing_as_twisted_does() -> None:
    # Twisted alone, the whole stream at once.
    plain = Recording()
    transport = StringTransport()
    channel = Site(plain, reactor=Clock()).buildProtocol(None)
    assert channel is not None
    channel.makeConnection(transport)
    channel.dataReceived(PIPELINED)
    assert plain.seen == EXPECTED

    # Through the guard, at once and a byte at a time.
    for pieces in ([PIPELINED], [PIPELINED[i : i + 1] for i in range(len(PIPELINED))]):
        guarded = Recording()
        connection = Connected(_guard(guarded))
        for piece in pieces:
            connection.send(piece)
        assert guarded.seen == EXPECTED
        assert connection.sent.count(b"HTTP/1.1 200 OK") == len(EXPECTED)
        assert not connection.closed


def test_twisted_still_has_no_request_body_limit() -> None:
    """
    When this fails, Twisted limits request bodies itself
    (https://github.com/twisted/twisted/issues/4898): use its limit and
    drop the guard's body counting.
    """
    resource = Recording()
    channel = Site(resource, reactor=Clock()).buildProtocol(None)
    assert channel is not None
    channel.makeConnection(StringTransport())
    body = b"b" * (4 * 1024 * 1024)
    channel.dataReceived(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    assert resource.seen == [(b"POST", b"/", body)]


def test_twisted_still_raises_on_a_content_length_past_the_digit_limit() -> None:
    """
    When this fails, Twisted answers a C{Content-Length} too long for
    C{int()} itself: the guard's digit check can go.
    """
    channel = Site(Recording(), reactor=Clock()).buildProtocol(None)
    assert channel is not None
    channel.makeConnection(StringTransport())
    with pytest.raises(ValueError):
        channel.dataReceived(
            b"POST / HTTP/1.1\r\nContent-Length: %s\r\n\r\n" % (b"9" * 5000,)
        )


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n", 400),
        (b"Content-Length: 1" + b"0" * 30 + b"\r\n\r\n", 413),
        (b"Content-Length: 12abc\r\n\r\n", 400),
        (b"Content-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400),
        (b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"Transfer-Encoding: gzip\r\n\r\n", 400),
        (b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (
            b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % (MAX_BODY_BYTES + 1)
            + b"x" * (MAX_BODY_BYTES + 1),
            413,
        ),
        (b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 5000, 400),
        (b"Transfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", 400),
        (b"Content-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1), 413),
    ],
)
def test_malformed_or_oversized_request_is_answered_by_the_guard_alone(
    request_bytes: bytes, status: int
) -> None:
    resource = Recording()
    connection = Connected(_guard(resource))
    connection.send(b"POST / HTTP/1.1\r\nHost: x\r\n" + request_bytes)
    assert connection.sent.startswith(b"HTTP/1.1 %d " % status)
    assert b"X-Content-Type-Options: nosniff\r\n" in connection.sent
    assert b"Connection: close\r\n" in connection.sent
    assert connection.closed
    assert resource.seen == []


@pytest.mark.parametrize(
    "head",
    [
        # Read as chunked by Twisted, as identity by a proxy that takes the
        # last coding (RFC 9112, section 6.1: the two lines are one list).
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        b"Transfer-Encoding: chunked, identity\r\n",
        b"Transfer-Encoding: identity\r\nContent-Length: 3\r\n",
        b"Content-Length: 3\r\nTransfer-Encoding: identity\r\n",
        b"Transfer-Encoding: identity\r\n",
        # No route reads a body, so none is decoded.
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
    ],
    ids=["chunked_then_identity", "chunked_identity_one_line",
         "identity_then_length", "length_then_identity", "identity_alone",
         "gzip_chunked", "gzip_then_chunked", "chunked_then_length"],
)  # fmt: skip
def test_transfer_encoding_other_than_chunked_alone_is_refused_before_the_body(
    head: bytes,
) -> None:
    resource = Recording()
    connection = Connected(_guard(resource))
    connection.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n" + head + b"\r\n"
    )
    assert connection.sent.startswith(b"HTTP/1.1 400 ")
    assert b"100 Continue" not in connection.sent
    assert b"X-Content-Type-Options: nosniff\r\n" in connection.sent
    assert connection.closed
    connection.send(b"0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert connection.sent.count(b"HTTP/1.1 ") == 1
    assert resource.seen == []


def test_chunked_alone_frames_the_body_and_the_connection_goes_on() -> None:
    resource = Recording()
    connection = Connected(_guard(resource))
    connection.send(
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:  Chunked \r\n\r\n"
        + _chunked(b"abc")
        + b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert resource.seen == [(b"POST", b"/a", b"abc"), (b"GET", b"/b", b"")]
    assert connection.sent.count(b"HTTP/1.1 200 OK") == 2
    assert not connection.closed


def test_request_started_but_not_finished_in_time_gets_408() -> None:
    clock = Clock()
    resource = Recording()
    connection = Connected(_guard(resource, clock, header_timeout=5))
    connection.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
    clock.advance(4.9)
    connection.send(b"X-Slow: 1\r\n")
    assert connection.sent == b""
    clock.advance(0.1)
    assert connection.sent.startswith(b"HTTP/1.1 408 ")
    assert connection.closed
    assert resource.seen == []


def test_body_still_arriving_counts_against_the_header_timeout() -> None:
    clock = Clock()
    connection = Connected(_guard(Recording(), clock, header_timeout=5))
    connection.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
    clock.advance(5)
    assert connection.sent.startswith(b"HTTP/1.1 408 ")


def test_requests_wait_and_reading_stops_while_the_client_reads_nothing() -> None:
    clock = Clock()
    resource = Recording()
    connection = Connected(_guard(resource, clock, header_timeout=5))
    # What the socket does when the client leaves 64 KiB of responses unread.
    send_buffer = connection.transport.producer
    assert send_buffer is not None
    send_buffer.pauseProducing()
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    connection.send(request * 3)
    # One response is written; the requests after it wait, and the server
    # reads nothing more from the client.
    assert len(resource.seen) == 1
    assert connection.transport.producerState == "paused"
    # Not a slow request: the client is the one not reading.
    clock.advance(5)
    assert connection.sent.count(b"HTTP/1.1 ") == 1

    send_buffer.resumeProducing()
    assert len(resource.seen) == 3
    assert connection.transport.producerState == "producing"
    assert not connection.closed


class Holding(Resource):
    """
    Answers nothing until told: a request the app is still working on.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.held: list[Any] = []

    def render(self, request: Any) -> Any:
        self.held.append(request)
        return NOT_DONE_YET


def test_reading_stops_while_more_than_16_kib_of_requests_wait() -> None:
    """
    README: pipelined requests wait, unread by the app, and the server
    stops reading the connection while more than 16 KiB of them wait (the
    buffer of Twisted's channel, which this server keeps).
    """
    resource = Holding()
    connection = Connected(_guard(resource, Clock()))
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    connection.send(request)
    assert len(resource.held) == 1
    waiting = 0
    while waiting + len(request) <= 16 * 1024:
        connection.send(request)
        waiting += len(request)
        assert connection.transport.producerState == "producing", waiting
    connection.send(request)
    assert connection.transport.producerState == "paused"
    assert len(resource.held) == 1


def test_client_that_reads_nothing_is_closed_after_the_idle_timeout() -> None:
    clock = Clock()
    site = make_site(Recording(), idle_timeout=30, clock=clock)
    connection = Connected(site)
    send_buffer = connection.transport.producer
    assert send_buffer is not None
    send_buffer.pauseProducing()
    connection.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
    clock.advance(29)
    assert not connection.closed
    clock.advance(1)
    assert connection.closed


def test_connection_with_no_request_under_way_closes_after_the_idle_timeout() -> None:
    clock = Clock()
    site = make_site(Recording(), idle_timeout=30, clock=clock)
    connection = Connected(site)
    connection.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert connection.sent.startswith(b"HTTP/1.1 200 ")
    clock.advance(29)
    assert not connection.closed
    clock.advance(1)
    assert connection.closed


def test_timeouts_have_sane_defaults() -> None:
    assert (DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT) == (10.0, 60.0)


def test_full_server_sheds_the_longest_idle_connection_first() -> None:
    clock = Clock()
    guard = _guard(Recording(), clock, max_connections=3)
    slow = Connected(guard)
    slow.send(b"GET / HTTP/1.1\r\n")
    clock.advance(1)
    first = Connected(guard)
    first.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    clock.advance(1)
    second = Connected(guard)
    second.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    clock.advance(1)

    fourth = Connected(guard)
    assert (first.closed, slow.closed, second.closed) == (True, False, False)
    fourth.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert fourth.sent.startswith(b"HTTP/1.1 200 ")


def test_full_server_with_no_idle_connection_sheds_the_slowest_request() -> None:
    clock = Clock()
    guard = _guard(Recording(), clock, max_connections=3)
    slowest = Connected(guard)
    slowest.send(b"GET / HTTP/1.1\r\n")
    clock.advance(1)
    slow = Connected(guard)
    slow.send(b"GET / HTTP/1.1\r\n")
    clock.advance(1)
    # Connected, and not a byte sent yet.
    silent = Connected(guard)

    fourth = Connected(guard)
    assert (slowest.closed, slow.closed, silent.closed) == (True, False, False)
    fourth.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert fourth.sent.startswith(b"HTTP/1.1 200 ")


def test_connection_cap_stays_below_the_file_descriptor_limit() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert connection_limit() == soft - FD_RESERVE
    assert connection_limit(10) == 10
    assert connection_limit(soft * 2) == soft - FD_RESERVE


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("tcp:8080", "tcp:8080:backlog=4096"),
        ("tcp6:8080:interface=\\:\\:", "tcp6:8080:interface=\\:\\::backlog=4096"),
        ("unix:/run/demo.sock", "unix:/run/demo.sock:backlog=4096"),
        ("tcp:8080:backlog=10", "tcp:8080:backlog=10"),
        ("ssl:8443:backlog=7:privateKey=k.pem", "ssl:8443:backlog=7:privateKey=k.pem"),
        ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),
    ],
)
def test_socket_endpoints_listen_with_the_given_backlog_unless_they_set_one(
    description: str, expected: str
) -> None:
    assert with_backlog(description, 4096) == expected


@pytest.mark.parametrize("description", ["carrier-pigeon:1", "tcp:port", "tcp"])
def test_bad_endpoint_description_is_a_value_error_with_a_reason(
    description: str,
) -> None:
    with pytest.raises(ValueError) as e:
        endpoint_for(reactor, description)
    assert str(e.value).strip()
    assert "\n" not in str(e.value)


def _nonblocking_client(port: int) -> socket.socket:
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A small receive buffer, fixed: the kernel then holds little of what
    # the server sends, and the server's own buffer fills.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", port))
    client.setblocking(False)
    return client


async def _turn() -> None:
    d: Deferred[None] = deferLater(reactor, 0.005, lambda: None)
    await d


@pytest.fixture
def listening() -> Iterator[list[Any]]:
    ports: list[Any] = []
    yield ports
    for port in ports:
        port.stopListening()


@pytest_twisted.ensureDeferred
async def test_client_that_pipelines_and_never_reads_gets_few_responses_produced(
    listening: list[Any],
) -> None:
    """
    Issue 12, item 1: the server stops reading a connection while its
    unsent responses fill the socket's buffer, instead of producing a
    response for every request it has read.
    """
    size = 2 * 1024 * 1024
    resource = Recording(size)
    port = reactor.listenTCP(
        0, _guard(resource, reactor), interface="127.0.0.1", backlog=8
    )
    listening.append(port)
    client = _nonblocking_client(port.getHost().port)
    try:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 100)
        await until(reactor, lambda: len(resource.seen) >= 1, "the first response")
        # A whole request on another connection: by its answer, the server
        # has read what the first connection sent.
        other = _nonblocking_client(port.getHost().port)
        other.sendall(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
        await until(
            reactor, lambda: (b"GET", b"/other", b"") in resource.seen, "the other"
        )
        other.close()
        assert len([s for s in resource.seen if s[1] == b"/"]) <= 2

        # Reading resumes as the client reads.
        received = 0
        deadline = time.monotonic() + DEADLINE
        # More than three whole responses (body and head): a fourth began.
        enough = 3 * (size + 1024)
        while received <= enough and time.monotonic() < deadline:
            try:
                received += len(client.recv(1 << 20))
            except BlockingIOError:
                await _turn()
        assert received > enough
        assert len([s for s in resource.seen if s[1] == b"/"]) >= 4
    finally:
        client.close()


def test_connection_and_timeout_options_are_parsed_and_checked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    options = Options()
    options.parseOptions(["--config", "c.yaml"])
    assert options["max-connections"] is None
    assert (options["idle-timeout"], options["header-timeout"]) == (60.0, 10.0)
    given = Options()
    given.parseOptions(
        ["--config", "c.yaml", "--max-connections", "500", "--idle-timeout", "5",
         "--header-timeout", "2.5"]
    )  # fmt: skip
    assert (given["max-connections"], given["idle-timeout"]) == (500, 5.0)
    assert given["header-timeout"] == 2.5
    for option, value in [
        ("--max-connections", "0"),
        ("--max-connections", "many"),
        ("--idle-timeout", "0"),
        ("--header-timeout", "-1"),
    ]:
        with pytest.raises(SystemExit) as exited:
            Options().parseOptions(["--config", "c.yaml", option, value])
        assert exited.value.code == 1
        error, _ = capsys.readouterr().err.splitlines()
        assert error.startswith(f"configmapdemo: error: {option} ")
        assert repr(value) in error


def test_twisted_still_refuses_many_headers_itself_without_nosniff() -> None:
    """
    When this fails, Twisted's channel refuses a request it cannot read in
    another way: follow it in L{twisted_demo.server._Channel}'s overrides
    (https://github.com/twisted/twisted/issues/8250).
    """
    from twisted.web.http import HTTPChannel

    transport = StringTransport()
    channel = Site(Recording(), reactor=Clock()).buildProtocol(None)
    assert channel is not None
    channel.makeConnection(transport)
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(501))
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert transport.value() == b"HTTP/1.1 400 Bad Request\r\n\r\n"
    assert callable(HTTPChannel._respondToBadRequestAndDisconnect)


def test_twisted_tcp_port_still_accepts_in_batches_of_number_accepts() -> None:
    """
    When this fails, Twisted's TCP port no longer sizes its batches of
    accepts by C{numberAccepts}: the site's bound on them must follow.
    """
    port = reactor.listenTCP(0, Site(Recording()), interface="127.0.0.1")
    try:
        assert port.numberAccepts == 100
    finally:
        port.stopListening()


def test_twisted_site_still_builds_its_channel_through_protocol() -> None:
    """
    When this fails, Twisted's L{Site} no longer builds each connection's
    channel with C{protocol} and hands it the site and the request class,
    or no longer builds its private HTTP/1.1-or-HTTP/2 proxy by default:
    how the site serves its own channel (C{_TwistedGaps.served_by}) must
    follow.
    """
    address = IPv4Address("TCP", "127.0.0.1", 40000)
    default = Site(Recording()).buildProtocol(address)
    assert type(default).__name__ == "_GenericHTTPChannelProtocol"
    site = make_site(Recording())
    channel = site.buildProtocol(address)
    assert type(channel).__name__ == "_Channel"
    assert channel.site is site
    assert channel.requestFactory is site.requestFactory


def test_refusals_of_twisted_and_of_the_limits_carry_nosniff() -> None:
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(501))
    for request in [
        b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"G" * (20 * 1024),
        b"NOT A REQUEST LINE\r\n\r\n",
    ]:
        connection = Connected(_guard(Recording()))
        connection.send(request)
        assert connection.sent.startswith(b"HTTP/1.1 400 "), request[:40]
        assert b"X-Content-Type-Options: nosniff\r\n" in connection.sent
        assert connection.closed


def test_full_site_pauses_its_port_until_a_connection_closes() -> None:
    clock = Clock()
    site = _guard(Recording(), clock, max_connections=2)

    @implementer(IPushProducer)
    class Port:
        state = "producing"
        numberAccepts = 100

        def pauseProducing(self) -> None:
            self.state = "paused"

        def resumeProducing(self) -> None:
            self.state = "producing"

        def stopProducing(self) -> None:
            pass

    port = Port()
    site.accept_from(port)  # type: ignore[arg-type]
    connections = [Connected(site) for _ in range(3)]
    assert port.state == "paused"
    assert connections[0].closed
    connections[0].protocol.connectionLost(Failure(ConnectionDone()))
    assert port.state == "producing"
    assert port.numberAccepts == 2 + FD_RESERVE // 2 - 2


class SlowReader(StringTransport):
    """
    A socket whose client reads only when told: it pauses the server once
    64 KiB wait, as a real socket's send buffer does.
    """

    waiting = False

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.value()) > 64 * 1024 and not self.waiting:
            self.waiting = True
            assert self.producer is not None
            self.producer.pauseProducing()

    def read(self) -> bytes:
        sent: bytes = self.value()
        self.clear()
        if self.waiting:
            self.waiting = False
            assert self.producer is not None
            self.producer.resumeProducing()
        return sent


def test_large_response_is_written_as_the_client_reads_it() -> None:
    """
    A client that does not read holds the server to a slice or two of a
    large response, not a copy of the whole (issue 17: 80 such clients of
    a 1 MB message took the process past its memory limit).
    """
    size = 1024 * 1024
    resource = Recording(size)
    transport = SlowReader()
    connection = Connected(_guard(resource), transport)
    connection.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
    received = b""
    while len(resource.seen) < 2 or transport.value():
        waiting = len(transport.value())
        assert waiting <= 3 * 64 * 1024
        received += transport.read()
    assert received.count(b"HTTP/1.1 200 OK") == 2
    assert len(received) > 2 * size


def test_requests_in_pieces_past_the_memory_share_shed_the_longest_held() -> None:
    clock = Clock()
    # Room for 10 idle connections of 100,000 bytes: 1,000,000 in all.
    guard = _guard(
        Recording(),
        clock,
        max_connections=10,
        connection_cost=100_000,
        max_body_bytes=2**20,
    )
    first, later = Connected(guard), Connected(guard)
    idle = [Connected(guard) for _ in range(4)]
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 500000\r\n\r\n"
    first.send(head + b"a" * 150_000)
    later.send(head + b"b" * 200_000)
    assert not any(c.closed for c in [first, later, *idle])

    # 600,000 for the six, and now 150,000 and 260,000 bytes and their
    # heads arriving: past 1,000,000.
    with captured_log() as log:
        later.send(b"b" * 60_000)

    assert (first.closed, later.closed) == (True, False)
    assert not any(c.closed for c in idle)
    assert log.messages(LogLevel.warn) == [
        "Connections hold more than their 1.0 MiB of memory: closing those "
        "that have held longest (requests arriving slowly, responses left unread)"
    ]
    later.send(b"b" * 240_000)
    assert later.sent.startswith(b"HTTP/1.1 200 ")


def test_responses_left_unread_past_the_memory_share_shed_the_longest_held() -> None:
    clock = Clock()
    # Room for two connections with a response unread, not three.
    guard = _guard(
        Recording(), clock, max_connections=3, connection_memory=2 * UNREAD + 3 * 4608
    )
    readers = [Connected(guard) for _ in range(3)]
    for reader in readers:
        reader.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    first, second, third = readers
    # What the transport does when its buffer is full: the client is not
    # reading.
    first.protocol.pauseProducing()
    second.protocol.pauseProducing()
    assert not any(reader.closed for reader in readers)
    # The second one's client reads again: room for the third.
    second.protocol.resumeProducing()
    third.protocol.pauseProducing()
    assert not any(reader.closed for reader in readers)

    second.protocol.pauseProducing()

    assert [reader.closed for reader in readers] == [True, False, False]
    assert guard.held == 2 * UNREAD


class FullAfter64KiB(StringTransport):
    """
    A transport whose client stops reading after 64 KiB: it pauses its
    producer, as a TCP transport does when its buffer is full.
    """

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.producer is not None and len(self.value()) > 2**16:
            self.producer.pauseProducing()


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: aaaa", 2),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 2),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 2**20),
    ],
    ids=["arriving", "answered", "unread"],
)
def test_a_closed_connection_is_freed_without_the_cyclic_collector(
    data: bytes, size: int
) -> None:
    clock = Clock()
    guard = _guard(Recording(size), clock)
    connected = Connected(guard, FullAfter64KiB())
    connected.send(data)
    channel = weakref.ref(connected.protocol)
    requests = [weakref.ref(request) for request in connected.protocol.requests]
    if size > 2:
        # The body is still being written when the client goes.
        assert len(connected.sent) < size
    gc.disable()
    try:
        connected.protocol.connectionLost(Failure(ConnectionDone()))
        # As a TCP transport does once it has told the protocol.
        connected.transport.producer = None
        del connected
        clock.advance(LINGER + 60)
        assert channel() is None
        assert [request() for request in requests] == [None] * len(requests)
    finally:
        gc.enable()


def test_a_full_site_closes_no_holder_for_its_idle_connections_alone() -> None:
    clock = Clock()
    guard = _guard(Recording(), clock, max_connections=4, connection_cost=1000)
    idle = [Connected(guard) for _ in range(4)]
    # The fifth makes the site shed an idle one, which closes a turn later:
    # five are open, and their idle cost alone is past the share.
    arriving = Connected(guard)
    arriving.send(b"GET / HTTP/1.1\r\n")

    assert not arriving.closed
    assert [c.closed for c in idle] == [True, False, False, False]
    arriving.send(b"Host: x\r\n\r\n")
    assert arriving.sent.startswith(b"HTTP/1.1 200 ")


def test_a_write_after_the_connection_is_lost_is_dropped() -> None:
    clock = Clock()
    holding = Holding()
    guard = _guard(holding, clock)
    connected = Connected(guard, FullAfter64KiB())
    connected.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    [request] = holding.held
    connected.protocol.connectionLost(Failure(ConnectionDone()))
    sent = connected.sent

    # As an app answering late would, with a body larger than a slice.
    request.write(b"x" * 2**20)

    assert connected.sent == sent


def test_a_request_begun_behind_an_answered_one_is_counted_and_timed() -> None:
    clock = Clock()
    guard = _guard(Recording(), clock)
    connected = Connected(guard)
    # One read: a whole request, then the start of the next, which never
    # ends.
    connected.send(
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET / HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"h%d: v\r\n" % i for i in range(50))
    )
    assert connected.sent.startswith(b"HTTP/1.1 200 ")
    assert guard.held >= 50 * HEADER_COST

    clock.advance(DEFAULT_HEADER_TIMEOUT)

    assert b"HTTP/1.1 408 " in connected.sent
    assert connected.closed


def test_the_memory_warning_is_logged_at_most_once_a_minute() -> None:
    clock = Clock()
    guard = _guard(
        Recording(), clock, max_connections=3, connection_memory=UNREAD + 3 * 4608
    )
    with captured_log() as log:
        for _ in range(3):
            readers = [Connected(guard), Connected(guard)]
            for reader in readers:
                reader.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                reader.protocol.pauseProducing()
            # One of the two is shed each time.
            assert [reader.closed for reader in readers] == [True, False]
            readers[1].protocol.connectionLost(Failure(ConnectionDone()))
            readers[0].protocol.connectionLost(Failure(ConnectionDone()))
            clock.advance(30)
    # Shed at 0, 30 and 60 s: logged at 0 and 60.
    assert len(log.messages(LogLevel.warn)) == 2


def test_reliability_md_states_the_memory_the_code_counts() -> None:
    from twisted_demo import budget

    reliability = (ROOT / "docs" / "reliability.md").read_text()
    words = " ".join(reliability.split())
    share = budget.plan(budget.DEFAULT_MEMORY, tls=False).connections
    assert f"and {UNREAD // 1024} KiB for each connection whose client" in words
    assert f"and {HEADER_COST} bytes more for each header line" in words
    mib = share * budget.PLAIN_CONNECTION / 2**20
    assert f"`Connections hold more than their {mib:.1f} MiB of memory: …`" in words
