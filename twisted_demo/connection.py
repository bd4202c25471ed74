"""
A connection's life, for the server's channel: the states it goes
through (new, idle, reading a request, answering it, sending its response,
draining, closed), as events that move it from one to the next, with the
timers and the site's books that go with each.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.web.server import Request

from twisted_demo import budget

if TYPE_CHECKING:
    from twisted_demo.server import ConfigSite, _Channel

__all__ = ["HEADER_COST", "LINGER", "Connection", "State"]

#: What a header line read into a request costs beyond its bytes: its
#: name and value as objects of their own in the request's headers
#: (measured about 100 bytes with 495 headers of a few bytes); counted
#: for a request begun behind one answered in the same read.
HEADER_COST = 128

#: Seconds a connection whose request was refused may go on sending it.
LINGER = 2.0


class State(enum.Enum):
    """
    Where a connection is in its life.
    """

    NEW = "no request yet"
    IDLE = "between requests"
    READING = "a request arriving"
    ANSWERING = "the app answering"
    SENDING = "the client not reading the response"
    DRAINING = "the server stopping"
    CLOSED = "closed or closing"

    # Members are looked up in TIERS on every request; Enum's own hash is
    # a Python call on the name, identity's is not, and members are unique.
    __hash__ = object.__hash__


NEW, IDLE, READING = State.NEW, State.IDLE, State.READING
ANSWERING, SENDING = State.ANSWERING, State.SENDING
DRAINING, CLOSED = State.DRAINING, State.CLOSED

#: Which connections are closed first to make room: idle (0), then those
#: still sending a request (1); the others never.
TIERS = {NEW: 1, IDLE: 0, READING: 1}


class Connection:
    """
    One connection's life: each method is an event, which moves it from one
    L{State} to another.  (Modelled on an automat machine, as
    C{ClientService}'s; automat's typed machine looks a transition up by
    scanning all of them, which cost more per request than the rest of the
    HTTP layer together.)
    """

    #: What arrived of a request not yet whole; whether the client leaves
    #: the response unread.
    _arriving = 0
    _unread = False

    def __init__(self, channel: _Channel, site: ConfigSite) -> None:
        self.channel = channel
        self.site = site
        self.state = NEW
        self.request: Request | None = None
        self.timer: IDelayedCall | None = None
        site.tiers[1][channel] = None

    @property
    def held(self) -> int:
        """
        Bytes held beyond an idle connection's cost: what arrived of a
        request not yet whole, and L{budget.UNREAD} while the client leaves
        the response unread.
        """
        return self._arriving + (budget.UNREAD if self._unread else 0)

    def _hold(self, arriving: int, unread: bool) -> None:
        before = self.held
        self._arriving, self._unread = arriving, unread
        change = self.held - before
        if change:
            self.site.holding(self.channel, change)

    def _to(self, state: State) -> None:
        tiers = self.site.tiers
        old, new = TIERS.get(self.state), TIERS.get(state)
        if old is not None:
            tiers[old].pop(self.channel, None)
        if new is not None:
            tiers[new][self.channel] = None
        self.state = state

    def _stop_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def begun(self, size: int) -> None:
        """
        C{size} bytes of a request arrived, not all of it: it has the header
        timeout to arrive whole.
        """
        state = self.state
        # What arrives while a request is answered, Twisted holds and reads
        # again once it is: counted then.
        if state is NEW or state is IDLE or state is READING:
            self._hold(self._arriving + size, self._unread)
        # Not state: holding more may have had this connection shed.
        if self.state is NEW or self.state is IDLE:
            # A new connection keeps its place among those to shed.
            if self.state is IDLE:
                self._to(READING)
            self.state = READING
            site = self.site
            self.timer = site.reactor.callLater(site.header_timeout, self._timed_out)

    def received(self, request: Request) -> bool:
        """A whole request arrived: whether to answer it."""
        state = self.state
        if state is CLOSED or state is ANSWERING or state is SENDING:
            return False
        if self.timer is not None:
            self._stop_timer()
        if self._arriving:
            self._hold(0, self._unread)
        self.request = request
        if state is DRAINING:
            self._close_after(request)
        else:
            self._to(ANSWERING)
        return True

    def done(self) -> None:
        """The response was written, and the socket takes more."""
        if self.state is ANSWERING:
            # _to(IDLE), on every request: no tier to leave.
            self.request = None
            self.state = IDLE
            self.site.tiers[0][self.channel] = None
        elif self.state is DRAINING:
            self._to(CLOSED)

    def blocked(self, request: Request) -> None:
        """
        The response was written; the client leaves it unread.  Hold the
        next request back, read nothing more until the client reads
        (Twisted would go on reading while it answers), and time the
        connection out as idle.
        """
        if self.state is ANSWERING:
            self.request = request
            self._to(SENDING)
            IPushProducer(self.channel.transport).pauseProducing()
            self.channel.setTimeout(self.site.timeOut)
        elif self.state is DRAINING:
            self.close()

    def unblocked(self) -> Request | None:
        """The client read: the request held back, to finish now, if any."""
        if self.state is not SENDING:
            return None
        self.channel.setTimeout(None)
        self._to(IDLE)
        held, self.request = self.request, None
        return held

    def drain(self) -> None:
        """
        The server stops: close once the response under way, or the request
        arriving, is answered.
        """
        state = self.state
        if state is ANSWERING:
            assert self.request is not None
            self._close_after(self.request)
        elif state is READING:
            self._to(DRAINING)
        elif state is not DRAINING and state is not CLOSED:
            self.close()

    def _close_after(self, request: Request) -> None:
        request.setHeader(b"connection", b"close")
        self.channel.persistent = False
        self._to(DRAINING)

    def refuse(self, status: int, reason: str) -> None:
        """Answer the request under way with C{status}, and close."""
        if self.state is not CLOSED:
            self.lost()
            self.channel.refused(status, reason)
            self.timer = self.site.reactor.callLater(LINGER, self.channel.shed)

    def _timed_out(self) -> None:
        self.timer = None
        self.refuse(408, "request not received in time")

    def unread(self, unread: bool) -> None:
        """The client stopped reading what is sent (or read it again)."""
        if self.state is not CLOSED:
            self._hold(self._arriving, unread)

    def overspent(self) -> None:
        """Close at once: it has held longest when all hold too much."""
        self.lost()
        self.channel.shed()

    def shed(self) -> None:
        """Close at once, to make room for another connection."""
        if self.state in TIERS:
            self.lost()
            self.channel.shed()

    def close(self) -> None:
        self.lost()
        self.channel.loseConnection()

    def lost(self) -> None:
        """The connection closed, or is closing."""
        self._to(CLOSED)
        self._stop_timer()
        if self.held:
            self._hold(0, False)
