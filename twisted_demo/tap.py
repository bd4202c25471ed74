"""
The C{twistd configmapdemo} command: the one place where the demo's parts
are wired into a service.
"""

from __future__ import annotations

import signal
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString
from twisted.web.resource import IResource

from twisted_demo.config import parse_message
from twisted_demo.live import ConfigError, LiveConfigMetrics, LiveConfigService
from twisted_demo.options import Options, exit_with
from twisted_demo.server import WebService, make_site
from twisted_demo.signals import ReloadOnSignal, StopInOrder
from twisted_demo.web import ConfigApp

__all__ = ["Options", "demo_resource", "makeService"]


def demo_resource(live: LiveConfigService[str]) -> IResource:
    """
    The demo's HTTP interface to C{live}, with its metrics (named
    C{configmapdemo_config_...}) counting from now on.
    """
    registry = CollectorRegistry()
    live.observe(LiveConfigMetrics(registry, "configmapdemo", drift=lambda: live.drift))
    return ConfigApp(live, registry).resource()


def makeService(options: Options) -> MultiService:
    """
    Load the config, refusing to start without a valid one, and build the
    live config, the web server and the SIGHUP handler as one service.
    """
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    live = LiveConfigService(
        options["config"],
        parse_message,
        reactor=reactor,
        tick=options["tick"],
        max_bytes=options["max-bytes"],
    )
    resource = demo_resource(live)
    try:
        live.load_blocking()
    except ConfigError as e:
        exit_with(str(e))
    try:
        endpoint = serverFromString(reactor, options["listen"])
    except (ValueError, KeyError, TypeError) as e:
        exit_with(f"--listen {options['listen']!r} is not a server endpoint: {e}")

    # Stopped last added first: the web server finishes the responses under
    # way, which may still reload, before the live config stops.
    service = StopInOrder(reactor.callFromThread)
    live.setServiceParent(service)
    site = make_site(resource, options["access-log"])
    WebService(options["listen"], endpoint, site, reactor).setServiceParent(service)
    ReloadOnSignal(signal.SIGHUP, live.reload, reactor.callFromThread).setServiceParent(
        service
    )
    return service
