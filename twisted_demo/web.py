"""
The HTTP interface: the message, health and readiness probes, the config's
identity, metrics, and a forced reload.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime, timezone
from typing import Any

from klein import Klein
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from twisted_demo.live import (
    Failed,
    LiveConfigService,
    Loaded,
    Outcome,
    Unchanged,
    Updated,
)
from twisted_demo.tls import TLSPair, tls_status

_TEXT = b"text/plain; charset=utf-8"
_JSON = b"application/json"

#: Reason phrases twisted.web does not know (it would send "Unknown Status").
_REASONS = {422: b"Unprocessable Content"}


def reload_all(
    live: LiveConfigService[str], tls: LiveConfigService[TLSPair] | None = None
) -> Deferred[Outcome[str]]:
    """
    Re-read the config and, when serving HTTPS, the certificate pair: what
    C{SIGHUP} and C{POST /-/reload} do.

    @return: Fires with the config's outcome once both reloads are done.
    """
    config = live.reload()
    if tls is None:
        return config
    pair = tls.reload()

    def after_pair(outcome: Outcome[str]) -> Deferred[Outcome[str]]:
        return pair.addCallback(lambda _: outcome)

    return config.addCallback(after_pair)


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat()


def _respond(request: IRequest, body: bytes, content_type: bytes, code: int) -> bytes:
    request.setResponseCode(code, _REASONS.get(code))
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"content-length", b"%d" % (len(body),))
    return body


def _json(request: IRequest, body: dict[str, Any], code: int = 200) -> bytes:
    data = json.dumps(body, sort_keys=True).encode("utf-8") + b"\n"
    return _respond(request, data, _JSON, code)


def _text(request: IRequest, body: str, code: int = 200) -> bytes:
    return _respond(request, _utf8(body), _TEXT, code)


@functools.lru_cache(maxsize=4)
def _utf8(text: str) -> bytes:
    """
    C{text} encoded, once: every response carrying the message shares one
    copy of it, which the server sends a slice at a time.
    """
    return text.encode("utf-8")


class ConfigApp:
    """
    The Klein application, holding everything it serves, so tests can build
    as many independent apps as they like.

    @param live: The config whose C{message} is served.
    @param registry: The metrics to expose at C{/metrics}.
    @param tls: The certificate pair served, when serving HTTPS.
    """

    app = Klein()

    def __init__(
        self,
        live: LiveConfigService[str],
        registry: CollectorRegistry,
        tls: LiveConfigService[TLSPair] | None = None,
    ) -> None:
        self._live = live
        self._registry = registry
        self._tls = tls

    def resource(self) -> IResource:
        """
        The resource to serve: C{GET /} and headers every response carries,
        in front of the Klein routes.
        """
        return _Front(self.app.resource(), self._live)

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request: IRequest) -> bytes:
        """
        Liveness: answering at all means the reactor is running.
        """
        return _text(request, "ok\n")

    @app.route("/readyz", methods=["GET"])
    def readyz(self, request: IRequest) -> bytes:
        """
        Readiness: a valid config is loaded.
        """
        if self._live.current is None:
            return _text(request, "no config loaded\n", 503)
        return _text(request, "ready\n")

    @app.route("/config", methods=["GET"])
    def config(self, request: IRequest) -> bytes:
        """
        Which version is served and whether the last reload failed; never
        the config's values, which may be secret.
        """
        live = self._live
        current = live.current
        body: dict[str, Any] = {"last_error": live.last_error}
        if current is None:
            body.update(sha256=None, generation=None, loaded_at=None, source=None)
        else:
            body.update(
                sha256=current.sha256,
                generation=current.generation,
                loaded_at=_timestamp(current.loaded_at),
                source=current.path,
            )
        if self._tls is not None:
            pair = self._tls.current
            body["tls"] = tls_status(
                None if pair is None else pair.value, self._tls.last_error
            )
        return _json(request, body)

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: IRequest) -> bytes:
        """
        Prometheus text exposition of this app's registry.
        """
        return _respond(
            request,
            generate_latest(self._registry),
            CONTENT_TYPE_LATEST.encode("ascii"),
            200,
        )

    @app.route("/-/reload", methods=["POST"])
    def reload(self, request: IRequest) -> Deferred[bytes]:
        """
        Re-read the configured files now (the certificate pair too, when
        serving HTTPS) and answer with the config's outcome: 200 when the
        config is (still) valid, 422 when the file was refused.
        """

        def answer(outcome: Outcome[str]) -> bytes:
            code, error = 200, None
            current: Loaded[str] | None
            match outcome:
                case Updated(new=current):
                    name = "updated"
                case Unchanged(current=current):
                    name = "unchanged"
                case Failed(current=current):
                    name, code, error = "failed", 422, outcome.error
            return _json(
                request,
                {
                    "outcome": name,
                    "error": error,
                    "sha256": None if current is None else current.sha256,
                    "generation": None if current is None else current.generation,
                },
                code,
            )

        return reload_all(self._live, self._tls).addCallback(answer)


class _Front(Resource):
    """
    Answers C{/} itself, and sets the headers every response carries
    (Klein's own 404 and 405 pages included) in front of the Klein routes.
    """

    isLeaf = True

    def __init__(self, routes: IResource, live: LiveConfigService[str]) -> None:
        super().__init__()
        self._routes = routes
        self._live = live

    def render(self, request: IRequest) -> Any:
        request.setHeader(b"x-content-type-options", b"nosniff")
        if request.path != b"/":
            return self._routes.render(request)
        # The one route under load skips Klein's routing, half its cost (B3).
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return _text(request, "method not allowed\n", 405)
        current = self._live.current
        if current is None:
            return _text(request, "No config loaded yet\n", 503)
        # As the original service answers: plain text, no trailing newline.
        return _text(request, current.value)
