"""
HTTPS whose certificate pair can be replaced while the server runs.

A pair is parsed and checked by L{parse_tls_pair}, from
L{twisted_demo.tls_pair}, which the parser process imports alone.
L{RotatingServerTLS} gives every new connection the pair that is current
when it is accepted, so a rotation needs no restart and connections already
open finish on the pair they started with.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

from attrs import frozen
from OpenSSL.SSL import Connection, Context
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    ILoggingContext,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.usage import UsageError
from zope.interface import implementer

from twisted_demo.live import (
    ConfigError,
    Failed,
    Outcome,
    ReloadCounter,
    Unchanged,
    Updated,
)
from twisted_demo.tls_pair import (
    CERT_FILE,
    KEY_FILE,
    NOT_BEFORE_LEEWAY,
    TLSPair,
    parse_tls_files,
    parse_tls_pair,
    serving_context,
)

__all__ = [
    "CERT_FILE",
    "KEY_FILE",
    "NOT_BEFORE_LEEWAY",
    "RotatingServerTLS",
    "TLSFiles",
    "TLSLog",
    "TLSMetrics",
    "TLSPair",
    "TLSServerEndpoint",
    "parse_tls_files",
    "parse_tls_pair",
    "tls_files",
    "tls_server_factory",
    "tls_status",
]

log = Logger()


def _context_for(pair: TLSPair) -> Context:
    """
    An OpenSSL server context serving C{pair}, with Twisted's defaults for
    protocol versions, ciphers and sessions.
    """
    # CertificateOptions takes the pair only as pyOpenSSL's X509 and PKey,
    # which pyOpenSSL deprecates; the context it makes takes cryptography's
    # objects directly.
    return serving_context(pair, CertificateOptions().getContext())


@implementer(IOpenSSLServerConnectionCreator)
class RotatingServerTLS:
    """
    Server-side TLS for each new connection with the pair current at the
    time, from a callable that reads it (such as a live config's current
    value).  One OpenSSL context is kept, for the latest pair; a connection
    keeps the context it was made with until it closes.
    """

    def __init__(self, current: Callable[[], TLSPair | None]) -> None:
        self._current = current
        self._pair: TLSPair | None = None
        self._context: Context | None = None

    def serverConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> Connection:
        """
        A server connection for C{tlsProtocol}, with the current pair.
        """
        context = self.context()
        if context is None:
            raise ConfigError("no TLS certificate pair is loaded")
        return Connection(context, None)

    def context(self) -> Context | None:
        """
        The OpenSSL context for the current pair, made once per pair; the
        last one that could be made if the current pair cannot be served;
        L{None} before any pair is loaded.
        """
        pair = self._current()
        if pair is not None and pair is not self._pair:
            self._pair = pair
            try:
                self._context = _context_for(pair)
            except Exception:
                # parse_tls_pair made a context from this pair already, so
                # this is not expected; keep serving the last good one.
                log.failure(
                    "Cannot serve TLS certificate {sha256}; keeping the previous one",
                    sha256=pair.sha256,
                )
        return self._context


@implementer(IProtocolFactory, ILoggingContext)
class _WhilePairLoaded:
    """
    Accept connections only once there is a pair to serve, so that a
    client that comes before the first pair is loaded is closed at once
    rather than failing inside the TLS layer.
    """

    def __init__(self, creator: RotatingServerTLS, tls: TLSMemoryBIOFactory) -> None:
        self._creator = creator
        self._tls = tls
        self._warned = False

    def buildProtocol(self, addr: IAddress) -> TLSMemoryBIOProtocol | None:
        if self._creator.context() is None:
            if not self._warned:
                log.warn("Closing connections until a TLS certificate pair is loaded")
                self._warned = True
            return None
        self._warned = False
        return self._tls.buildProtocol(addr)

    def doStart(self) -> None:
        self._tls.doStart()

    def doStop(self) -> None:
        self._tls.doStop()

    def logPrefix(self) -> str:
        prefix: str = self._tls.logPrefix()
        return prefix


def tls_server_factory(
    creator: RotatingServerTLS, factory: IProtocolFactory
) -> IProtocolFactory:
    """
    Wrap C{factory} so that its connections speak TLS as server, with the
    pair C{creator} gives for each: pass the result to C{strports.service}
    or to any server endpoint's C{listen}.
    """
    return _WhilePairLoaded(creator, TLSMemoryBIOFactory(creator, False, factory))


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint:
    """
    A server endpoint that serves TLS made by C{creator} over the
    connections of a plain stream endpoint (TCP, UNIX...).
    """

    def __init__(
        self, endpoint: IStreamServerEndpoint, creator: RotatingServerTLS
    ) -> None:
        self._endpoint = endpoint
        self._creator = creator

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        return self._endpoint.listen(tls_server_factory(self._creator, protocolFactory))


@frozen
class TLSFiles:
    """
    Where the certificate pair is read from: two files in one directory,
    as a C{kubernetes.io/tls} Secret volume holds C{tls.crt} and C{tls.key}.
    """

    directory: str
    cert_name: str
    key_name: str

    @property
    def names(self) -> list[str]:
        """
        The two files' names, for reading them from one generation.
        """
        return [self.cert_name, self.key_name]

    @property
    def parse(self) -> Callable[[Mapping[str, bytes]], TLSPair]:
        """
        The parse function for these files, given them in the order of
        L{names}: a function of a module, as the parser process needs, which
        finds it by its import path.
        """
        if (self.cert_name, self.key_name) == (CERT_FILE, KEY_FILE):
            return parse_tls_pair
        return parse_tls_files


def tls_files(cert: str | None, key: str | None) -> TLSFiles | None:
    """
    The pair's files from C{--tls-cert} and C{--tls-key}: L{None} when
    neither is given (plain HTTP), a L{UsageError} when only one is or when
    they are not two files in one directory.
    """
    if cert is None and key is None:
        return None
    if key is None:
        raise UsageError("--tls-cert needs --tls-key too")
    if cert is None:
        raise UsageError("--tls-key needs --tls-cert too")
    cert_dir, cert_name = os.path.split(os.path.abspath(cert))
    key_dir, key_name = os.path.split(os.path.abspath(key))
    if cert_dir != key_dir:
        raise UsageError(
            f"--tls-cert and --tls-key must be in one directory, so that they "
            f"are read from one update: {cert} and {key} are not"
        )
    if cert_name == key_name:
        raise UsageError(f"--tls-cert and --tls-key are the same file: {cert}")
    return TLSFiles(directory=cert_dir, cert_name=cert_name, key_name=key_name)


class TLSMetrics(Collector):
    """
    The certificate being served and its reloads, for Prometheus; the
    expiry gauge is what an alert before expiry reads.  Call it with each
    outcome of the pair's live config (pass it to
    C{LiveConfigService.observe}): the reloads are counted by the library's
    own rule (L{ReloadCounter}), as the config's are.

    A collector of its own, as C{LiveConfigMetrics} is, so that its
    counters have no C{_created} series.
    """

    def __init__(
        self, registry: CollectorRegistry, prefix: str = "configmapdemo"
    ) -> None:
        self.registry = registry
        self._name = f"{prefix}_tls"
        self._counter = ReloadCounter()
        registry.register(self)

    def __call__(self, outcome: Outcome[TLSPair]) -> None:
        """
        Count C{outcome}, a reload of the pair: a refusal is counted once,
        however many times the same files are read again.
        """
        self._counter(outcome)

    def collect(self) -> Iterator[Metric]:
        name, current = self._name, self._counter.current
        pair: TLSPair | None = None if current is None else current.value
        yield GaugeMetricFamily(
            f"{name}_certificate_expiry_timestamp_seconds",
            "POSIX time at which the certificate being served expires.",
            value=0 if pair is None else pair.not_after.timestamp(),
        )
        yield from self._counter.families(
            name,
            "certificate pair",
            "Certificate pairs refused: unreadable, mismatched or expired.",
        )
        info = InfoMetricFamily(f"{name}_certificate", "The certificate being served.")
        if pair is not None:
            info.add_metric(
                [],
                {
                    "sha256": pair.sha256,
                    "subject": pair.subject,
                    "serial": _hex(pair.serial),
                },
            )
        yield info


class TLSLog:
    """
    The certificate pair's reloads, logged as certificate events rather
    than as a config file's: the certificate's fingerprint as C{/config}
    shows it, its subject and its end of validity, or why a pair was
    refused.  Call it with each outcome of the pair's live config (pass it
    to C{LiveConfigService.observe}, with C{log_outcomes=False}).
    """

    def __call__(self, outcome: Outcome[TLSPair]) -> None:
        match outcome:
            case Updated(old, new):
                pair = new.value
                log.info(
                    "TLS certificate {event}: sha256 {sha256}, subject {subject}, "
                    "not_after {not_after} ({path}"
                    # A directory that is not a Secret volume has none.
                    + ("" if new.generation is None else ", generation {generation}")
                    + ")",
                    event="loaded" if old is None else "updated",
                    sha256=pair.sha256,
                    subject=pair.subject,
                    not_after=_timestamp(pair.not_after),
                    path=new.path,
                    generation=new.generation,
                )
            case Failed(error, current, repeated=False, retry_in=retry_in):
                serving = None if current is None else current.value.sha256
                log.error(
                    (
                        "TLS certificate refused: {error}"
                        if retry_in is None
                        else "TLS certificate reload failed (trying again in "
                        "{retry_in:g}s): {error}"
                    )
                    + (
                        "; none loaded yet"
                        if serving is None
                        else "; still serving sha256 {serving}"
                    ),
                    error=error,
                    retry_in=retry_in,
                    serving=serving,
                )
            case Unchanged(current, recovered=True):
                log.info(
                    "TLS certificate files are back to the pair being served "
                    "(sha256 {sha256}); last error cleared",
                    sha256=current.value.sha256,
                    path=current.path,
                )


def _hex(serial: int) -> str:
    """
    C{serial} as C{openssl x509 -serial} shows it: upper-case hex, whole
    bytes.
    """
    digits = f"{serial:X}"
    return digits.zfill(len(digits) + len(digits) % 2)


def _timestamp(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat()


def tls_status(pair: TLSPair | None, last_error: str | None) -> dict[str, Any]:
    """
    The C{tls} object of C{/config}: the certificate being served and why
    the last pair read was refused, if it was.  The serial number is in hex,
    as C{openssl x509 -serial} shows it, since it may not fit a JSON number.
    """
    if pair is None:
        described: dict[str, Any] = dict.fromkeys(
            ("sha256", "subject", "serial", "not_before", "not_after")
        )
    else:
        described = {
            "sha256": pair.sha256,
            "subject": pair.subject,
            "serial": _hex(pair.serial),
            "not_before": _timestamp(pair.not_before),
            "not_after": _timestamp(pair.not_after),
        }
    return {**described, "last_error": last_error}
