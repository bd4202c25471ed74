"""
The C{twistd configmapdemo} command: the one place where the demo's parts
are wired into a service.
"""

from __future__ import annotations

import gc
import signal
from typing import TYPE_CHECKING, Any

from twisted.application.service import MultiService
from twisted.logger import Logger
from twisted.web.resource import IResource

from twisted_demo import budget
from twisted_demo.config import PARSE_IMPORTS, parse_message
from twisted_demo.listening import WebService, endpoint_for, endpoint_kind
from twisted_demo.live import ConfigError, LiveConfigMetrics, LiveConfigService
from twisted_demo.logs import LogOutput
from twisted_demo.metrics import LaterRegistry
from twisted_demo.options import DEFAULT_TICK, Options, exit_with, refuse_usage
from twisted_demo.reloads import ForcedReloads
from twisted_demo.server import make_site
from twisted_demo.signals import IgnoreSignals, ReloadOnSignal, StopInOrder
from twisted_demo.web import Front

if TYPE_CHECKING:
    # HTTPS only: plain HTTP never imports the TLS modules (see
    # tests/test_footprint.py).
    from twisted_demo.tls import RotatingServerTLS, TLSFiles, TLSPair

__all__ = ["Options", "demo_resource", "live_pair", "makeService", "served_pair"]

_log = Logger(namespace="configmapdemo")


def demo_resource(
    live: LiveConfigService[str],
    tls: LiveConfigService[TLSPair] | None = None,
    *,
    forced: ForcedReloads | None = None,
    reload_from: str = "loopback",
) -> IResource:
    """
    The demo's HTTP interface to C{live}, and to the certificate pair
    C{tls} when serving HTTPS, with their metrics (named
    C{configmapdemo_config_...} and C{configmapdemo_tls_...}) counting from
    now on, and the process's own (C{process_...}, C{python_info}) that
    dashboards and alerts expect of any Prometheus client.  C{POST
    /-/reload} goes through C{forced} (by default, one on the global reactor
    with the default tick), from the clients C{reload_from} allows.
    """
    registry = LaterRegistry()
    live.observe(LiveConfigMetrics(registry, "configmapdemo", drift=lambda: live.drift))
    if tls is not None:
        from twisted_demo.tls import TLSMetrics

        tls.observe(TLSMetrics(registry.registry(), "configmapdemo"))
    if forced is None:
        from twisted.internet import reactor

        forced = ForcedReloads(live, tls, reactor, DEFAULT_TICK)

    def routes() -> IResource:
        # Klein's, imported at the first request past the front.
        from twisted_demo.routes import ConfigApp

        return ConfigApp(live, registry.registry(), tls, forced, reload_from).resource()

    return Front(live, routes)


def live_pair(
    files: TLSFiles, reactor: Any, tick: float, memory: int | None = None
) -> LiveConfigService[TLSPair]:
    """
    The certificate pair in C{files}, followed live: both files are read
    from one generation of their directory, in a parser process bounded to
    C{memory} bytes (L{None}: the library's default).  Its reloads are
    logged as certificate events.
    """
    from twisted_demo.tls import TLSLog

    pair = LiveConfigService(
        files.directory,
        files.parse,
        files=files.names,
        reactor=reactor,
        tick=tick,
        parser_memory=memory,
        log_outcomes=False,
    )
    pair.observe(TLSLog())
    return pair


def served_pair(pair: LiveConfigService[TLSPair]) -> RotatingServerTLS:
    """
    Server-side TLS with the pair C{pair} serves when each connection comes.
    """
    from twisted_demo.tls import RotatingServerTLS

    return RotatingServerTLS(
        lambda: None if pair.current is None else pair.current.value
    )


def makeService(options: Options) -> MultiService:
    """
    Load the config, refusing to start without a valid one, and build the
    live config, the web server and the SIGHUP handler as one service.
    SIGHUP, like C{POST /-/reload}, re-reads the certificate pair too.
    """
    from twisted.internet import reactor as _reactor

    # What start-up has loaded by now (modules, classes, functions) lives
    # as long as the process: frozen, it is no longer walked by the
    # collector's full passes.  Without this, the first full pass comes
    # while the service is built, and takes 20 to 30 ms to free next to
    # nothing (bench B8 measures the start).  The freeze is process-wide:
    # a test process that builds the service freezes its own objects too.
    gc.freeze()
    reactor: Any = _reactor
    too_few = budget.too_few_descriptors()
    if too_few is not None:
        exit_with(too_few)
    tls = options["tls"]
    # Connections over TLS cost more, whether --tls-cert or an ssl:
    # endpoint serves them.
    over_tls = tls is not None or any(
        endpoint_kind(listen) == "ssl" for listen in options["listen"]
    )
    shares = budget.default_plan(tls=over_tls)
    cost = budget.connection_cost(tls=over_tls)
    live = LiveConfigService(
        options["config"],
        parse_message,
        reactor=reactor,
        tick=options["tick"],
        max_bytes=options["max-bytes"],
        parser_memory=shares.parser_memory,
        preload=PARSE_IMPORTS,
    )
    pair = (
        None
        if tls is None
        else live_pair(tls, reactor, options["tick"], shares.pair_parser_memory)
    )
    forced = ForcedReloads(live, pair, reactor, options["tick"])
    resource = demo_resource(
        live, pair, forced=forced, reload_from=options["reload-from"]
    )
    endpoints = []
    for listen in options["listen"]:
        try:
            endpoints.append((listen, endpoint_for(reactor, listen)))
        except ValueError as e:
            refuse_usage(f"--listen {listen!r} is not a server endpoint: {e}")
    try:
        live.load_blocking()
        if pair is not None:
            pair.load_blocking()
    except ConfigError as e:
        exit_with(str(e))

    # Stopped last added first: the web server finishes the responses under
    # way, which may still reload, before the live configs stop.  These stop
    # together, so that the stop timeouts of their parser processes overlap
    # and the whole stop takes at most DRAIN_TIMEOUT + STOP_TIMEOUT (4.5 s).
    log_output = LogOutput.for_options(options["log-format"], options.parent, reactor)
    service = StopInOrder(reactor.callFromThread, log_output)
    configs = MultiService()
    configs.setServiceParent(service)
    live.setServiceParent(configs)
    site = make_site(
        resource,
        options["access-log"],
        idle_timeout=options["idle-timeout"],
        clock=reactor,
        header_timeout=options["header-timeout"],
        max_connections=options["max-connections"] or shares.connections,
        # The budget's share, whatever --max-connections says.
        connection_cost=cost,
        connection_memory=shares.connections * cost,
    )
    _log.info("Serving at most {limit} connections at once", limit=site.max_connections)
    if pair is not None:
        pair.setServiceParent(configs)
    for listen, endpoint in endpoints:
        if pair is not None:
            from twisted_demo.tls import TLSServerEndpoint

            endpoint = TLSServerEndpoint(endpoint, served_pair(pair))
        WebService(listen, endpoint, site, reactor).setServiceParent(service)
    ReloadOnSignal(
        signal.SIGHUP, lambda: forced.request("SIGHUP"), reactor.callFromThread
    ).setServiceParent(service)
    IgnoreSignals(
        [signal.SIGUSR1, signal.SIGUSR2], reactor.callFromThread
    ).setServiceParent(service)
    return service
