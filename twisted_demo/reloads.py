"""
Forced reloads: what C{SIGHUP} and C{POST /-/reload} ask for.  A flood of
them is folded into at most one reload of the config (and, with HTTPS, of
the certificate pair) per tick, each asker gets that reload's outcome, and
each reload logs its outcome in one line.  Who may ask over HTTP is decided
here too.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from attrs import frozen
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.logger import Logger

from twisted_demo.live import (
    Failed,
    LiveConfigService,
    Loaded,
    Outcome,
    Unchanged,
    Updated,
)

if TYPE_CHECKING:
    # Only named: a server without HTTPS need not import the pair's parser.
    from twisted_demo.tls_pair import TLSPair

__all__ = [
    "RELOAD_FROM",
    "Forced",
    "ForcedReloads",
    "described",
    "may_force_reload",
    "not_allowed",
]

_log = Logger(namespace="configmapdemo")

#: The values of C{--reload-from}: who may C{POST /-/reload}.
RELOAD_FROM = ("loopback", "any", "off")


@frozen
class Forced:
    """
    The outcome of one forced reload, shared by everyone who asked for it.

    @ivar config: The config's outcome.
    @ivar tls: The certificate pair's, when serving HTTPS.
    """

    config: Outcome[str]
    tls: Outcome[TLSPair] | None

    @property
    def refused(self) -> bool:
        """
        Whether the config or the pair was refused (or failed to load).
        """
        return isinstance(self.config, Failed) or isinstance(self.tls, Failed)


class ForcedReloads:
    """
    Reloads asked for from outside, at most one per C{tick} seconds: one
    starts at once when none has for a tick; one asked for meanwhile (or
    while one is under way, which may have read the files already) waits
    for the next, which starts a tick after the last and answers everyone
    who asked for it.  A flood of requests thus costs the server at most one
    reload per tick.
    """

    def __init__(
        self,
        live: LiveConfigService[str],
        tls: LiveConfigService[TLSPair] | None,
        clock: IReactorTime,
        tick: float,
    ) -> None:
        self._live = live
        self._tls = tls
        self._clock = clock
        self._tick = tick
        self._started_at: float | None = None
        self._running = False
        self._next: IDelayedCall | None = None
        self._waiting: list[Deferred[Forced]] = []
        self._by: list[str] = []

    def request(self, by: str) -> Deferred[Forced]:
        """
        Reload now or with the next forced reload; C{by} names the asker in
        the log line (C{SIGHUP}, C{POST /-/reload}).

        @return: Fires with the outcome of the reload that served this
            request; never fails.
        """
        d: Deferred[Forced] = Deferred()
        self._waiting.append(d)
        if by not in self._by:
            self._by.append(by)
        if not self._running and self._next is None:
            self._schedule()
        return d

    def _schedule(self) -> None:
        now = self._clock.seconds()
        wait = 0.0 if self._started_at is None else self._started_at + self._tick - now
        if wait <= 0:
            self._run()
        else:
            self._next = self._clock.callLater(wait, self._run)

    def _run(self) -> None:
        self._next = None
        waiting, self._waiting = self._waiting, []
        by, self._by = self._by, []
        self._running = True
        self._started_at = self._clock.seconds()

        def done(forced: Forced) -> None:
            self._running = False
            _log_outcome(forced, " and ".join(by), len(waiting))
            for d in waiting:
                d.callback(forced)
            # A request made by an answer (a pipelining client asks again
            # as each is written) has already scheduled the next reload.
            if self._waiting and not self._running and self._next is None:
                self._schedule()

        self._reload().addCallback(done)

    def _reload(self) -> Deferred[Forced]:
        config = self._live.reload()
        if self._tls is None:
            return config.addCallback(lambda outcome: Forced(outcome, None))
        pair = self._tls.reload()

        def after_pair(outcome: Outcome[str]) -> Deferred[Forced]:
            return pair.addCallback(lambda tls: Forced(outcome, tls))

        return config.addCallback(after_pair)


def _said(outcome: Outcome[Any], fingerprint: str | None) -> str:
    """
    C{outcome} in a few words, naming what is served by C{fingerprint}.
    """
    serving = "none" if fingerprint is None else f"sha256 {fingerprint}"
    match outcome:
        case Updated():
            return f"updated to {serving}"
        case Unchanged():
            return f"unchanged ({serving})"
        case Failed(error, retry_in=None):
            return f"refused, still serving {serving}: {error}"
        case Failed(error, retry_in=retry_in):
            return (
                f"failed (trying again in {retry_in:g}s), still serving "
                f"{serving}: {error}"
            )


def described(outcome: Outcome[Any]) -> tuple[str, str | None, Loaded[Any] | None]:
    """
    C{outcome}'s name (C{updated}, C{unchanged} or C{failed}), its error,
    and the version served after it, as C{POST /-/reload} answers and the
    log line's fields give them.
    """
    match outcome:
        case Updated(new=new):
            return "updated", None, new
        case Unchanged(current=current):
            return "unchanged", None, current
        case Failed(error=error, current=current):
            return "failed", error, current


def _log_outcome(forced: Forced, by: str, requests: int) -> None:
    """
    One line for one forced reload.  Its text leaves out what varies from
    one request to the next (how many shared it, who sent them), so that a
    flood of them is rationed as one repeated line; those are fields.
    """
    name, _, current = described(forced.config)
    sha256 = None if current is None else current.sha256
    text = "config " + _said(forced.config, None if sha256 is None else sha256[:12])
    fields: dict[str, Any] = {"config_outcome": name, "sha256": sha256}
    if forced.tls is not None:
        name, _, pair = described(forced.tls)
        # The certificate's fingerprint, as /config shows it.
        tls_sha256 = None if pair is None else pair.value.sha256
        text += ", TLS certificate " + _said(forced.tls, tls_sha256)
        fields.update(tls_outcome=name, tls_sha256=tls_sha256)
    # At info, whatever the outcome: a refusal is logged as an error once,
    # by the live config's own log, however often it is asked for again.
    _log.info(
        "Forced reload ({by}): {outcome}",
        by=by,
        outcome=text,
        requests=requests,
        **fields,
    )


def may_force_reload(reload_from: str, client: IAddress | None) -> bool:
    """
    Whether C{client} may C{POST /-/reload} under C{--reload-from
    reload_from}: anyone, no one, or only a client on this machine (a
    loopback address, which C{kubectl port-forward} and C{kubectl exec}
    connect from, or a UNIX socket).
    """
    if reload_from == "any":
        return True
    if reload_from == "off":
        return False
    if isinstance(client, UNIXAddress):
        return True
    if not isinstance(client, IPv4Address | IPv6Address):
        return False
    try:
        address = ipaddress.ip_address(client.host.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def not_allowed(reload_from: str) -> str:
    """
    Why a client was refused C{POST /-/reload}, and what to do instead.
    """
    if reload_from == "off":
        return (
            "POST /-/reload is turned off (--reload-from off); send the process "
            "SIGHUP to force a reload"
        )
    return (
        "POST /-/reload is accepted only from this machine (--reload-from "
        "loopback): use kubectl port-forward or kubectl exec, or start the "
        "service with --reload-from any"
    )
