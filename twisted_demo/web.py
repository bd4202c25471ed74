"""
The HTTP interface: the message, health and readiness probes, the config's
identity, metrics, and a forced reload.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from klein import Klein
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from twisted_demo.live import Failed, LiveConfigService
from twisted_demo.reloads import (
    Forced,
    ForcedReloads,
    described,
    may_force_reload,
    not_allowed,
)
from twisted_demo.tls import TLSPair, tls_status

_TEXT = b"text/plain; charset=utf-8"
_JSON = b"application/json"

#: Reason phrases twisted.web does not know (it would send "Unknown Status").
_REASONS = {422: b"Unprocessable Content"}


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
    return _respond(request, body.encode("utf-8"), _TEXT, code)


class ConfigApp:
    """
    The Klein application, holding everything it serves, so tests can build
    as many independent apps as they like.

    @param live: The config whose C{message} is served.
    @param registry: The metrics to expose at C{/metrics}.
    @param tls: The certificate pair served, when serving HTTPS.
    @param forced: What C{POST /-/reload} asks for a reload through.
    @param reload_from: Who may C{POST /-/reload}: C{loopback}, C{any} or
        C{off} (see L{may_force_reload}).
    """

    app = Klein()

    def __init__(
        self,
        live: LiveConfigService[str],
        registry: CollectorRegistry,
        tls: LiveConfigService[TLSPair] | None,
        forced: ForcedReloads,
        reload_from: str,
    ) -> None:
        self._live = live
        self._registry = registry
        self._tls = tls
        self._forced = forced
        self._reload_from = reload_from

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
        detail = live.last_error_detail
        body: dict[str, Any] = {
            "last_error": live.last_error,
            "last_error_detail": None if detail is None else detail.as_dict(),
        }
        if current is None:
            body.update(sha256=None, generation=None, loaded_at=None, source=None)
        else:
            body.update(
                sha256=current.sha256,
                generation=current.generation,
                loaded_at=_timestamp(current.loaded_at),
                source=current.path,
            )
        body["never_updated"] = live.never_updated
        if self._tls is not None:
            pair = self._tls.current
            body["tls"] = tls_status(
                None if pair is None else pair.value, self._tls.last_error
            )
            body["tls"]["never_updated"] = self._tls.never_updated
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
    def reload(self, request: IRequest) -> bytes | Deferred[bytes]:
        """
        Re-read the configured files (the certificate pair too, when serving
        HTTPS) with the next forced reload, and answer with the outcome of
        each: 200 when both are (still) valid, 422 when either was refused;
        403 for a client C{--reload-from} does not allow.
        """
        if not may_force_reload(self._reload_from, request.getClientAddress()):
            return _json(request, {"error": not_allowed(self._reload_from)}, 403)

        def answer(forced: Forced) -> bytes:
            name, error, current = described(forced.config)
            detail = forced.config.detail if isinstance(forced.config, Failed) else None
            body: dict[str, Any] = {
                "outcome": name,
                "error": error,
                "error_detail": None if detail is None else detail.as_dict(),
                "sha256": None if current is None else current.sha256,
                "generation": None if current is None else current.generation,
            }
            if forced.tls is not None:
                name, error, pair = described(forced.tls)
                body["tls"] = {
                    "outcome": name,
                    "error": error,
                    "sha256": None if pair is None else pair.value.sha256,
                }
            return _json(request, body, 422 if forced.refused else 200)

        return self._forced.request("POST /-/reload").addCallback(answer)


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
