"""
The C{twistd configmapdemo-webhook} command: the validating admission
webhook that makes the API server refuse a ConfigMap the service would
refuse, wired from the library's webhook, the service's parser and HTTPS.
"""

from __future__ import annotations

import signal
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.application.service import MultiService
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from twisted_demo.config import PARSE_IMPORTS, parse_message
from twisted_demo.listening import WebService, endpoint_for
from twisted_demo.live import (
    AdmissionWebhook,
    ConfigError,
    LiveConfigService,
    WebhookMetrics,
)
from twisted_demo.logs import LogOutput
from twisted_demo.options import (
    DEFAULT_TICK,
    WebhookOptions,
    exit_with,
    refuse_usage,
)
from twisted_demo.server import make_site
from twisted_demo.signals import ReloadOnSignal, StopInOrder
from twisted_demo.tap import live_pair, served_pair
from twisted_demo.tls import TLSMetrics, TLSPair, TLSServerEndpoint

__all__ = ["Options", "makeService", "webhook_resource"]

#: What twistd looks up in the plugin's module.
Options = WebhookOptions

#: The path the ValidatingWebhookConfiguration calls.
VALIDATE_PATH = b"validate"


class _Page(Resource):
    """
    A C{GET} answered with what C{page()} gives: a content type and a body.
    """

    isLeaf = True

    def __init__(self, page: Any) -> None:
        super().__init__()
        self._page = page

    def render_GET(self, request: IRequest) -> bytes:
        content_type, body = self._page()
        # X-Content-Type-Options comes from the server, as on every answer.
        request.setHeader(b"content-type", content_type)
        return bytes(body)


def webhook_resource(
    webhook: AdmissionWebhook, pair: LiveConfigService[TLSPair]
) -> IResource:
    """
    C{POST /validate}, the probes and C{/metrics} (the webhook's reviews
    and the certificate pair, named C{configmapdemo_webhook_...} and
    C{configmapdemo_tls_...}), counting from now on.
    """
    registry = CollectorRegistry()
    webhook.observe(WebhookMetrics(registry, "configmapdemo"))
    pair.observe(TLSMetrics(registry, "configmapdemo"))
    text = b"text/plain; charset=utf-8"
    root = Resource()
    root.putChild(VALIDATE_PATH, webhook.resource())
    root.putChild(b"healthz", _Page(lambda: (text, b"ok\n")))
    # Serving at all means a certificate pair is loaded: the process does
    # not start without one.
    root.putChild(b"readyz", _Page(lambda: (text, b"ready\n")))
    root.putChild(
        b"metrics",
        _Page(lambda: (CONTENT_TYPE_LATEST.encode("ascii"), generate_latest(registry))),
    )
    return root


def makeService(options: WebhookOptions) -> MultiService:
    """
    Load the certificate pair, refusing to start without a valid one, and
    build the webhook, its HTTPS server and the SIGHUP handler (which
    re-reads the pair) as one service.
    """
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    prog = options.prog
    webhook = AdmissionWebhook(
        parse_message,
        key=options["key"],
        reactor=reactor,
        max_bytes=options["max-bytes"],
        preload=PARSE_IMPORTS,
    )
    pair = live_pair(options["tls"], reactor, DEFAULT_TICK)
    resource = webhook_resource(webhook, pair)
    try:
        endpoint = endpoint_for(reactor, options["listen"])
    except ValueError as e:
        refuse_usage(
            f"--listen {options['listen']!r} is not a server endpoint: {e}", prog=prog
        )
    try:
        pair.load_blocking()
    except ConfigError as e:
        exit_with(str(e), prog=prog)

    log_output = LogOutput.for_options(options["log-format"], options.parent, reactor)
    service = StopInOrder(reactor.callFromThread, log_output)
    # Stopped last added first: the server finishes the reviews under way
    # before the parser process and the pair stop.
    parts = MultiService()
    parts.setServiceParent(service)
    pair.setServiceParent(parts)
    webhook.setServiceParent(parts)
    WebService(
        options["listen"],
        TLSServerEndpoint(endpoint, served_pair(pair)),
        make_site(resource, clock=reactor, max_body_bytes=webhook.request_limit),
        reactor,
    ).setServiceParent(service)
    ReloadOnSignal(signal.SIGHUP, pair.reload, reactor.callFromThread).setServiceParent(
        service
    )
    return service
