"""
The routes behind the front (L{twisted_demo.web}): the config's identity,
metrics and a forced reload, routed by Klein.  Imported at the first
request for one of them, so that Klein and werkzeug cost a server that is
only probed and asked for its message nothing.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from klein import Klein
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from twisted_demo.live import Failed, LiveConfigService, shown_path
from twisted_demo.reloads import (
    Forced,
    ForcedReloads,
    described,
    may_force_reload,
    not_allowed,
)
from twisted_demo.web import json_response, respond

if TYPE_CHECKING:
    from twisted_demo.tls import TLSPair


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat()


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
        The Klein routes, to serve behind the front.
        """
        return self.app.resource()

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
                generation=None
                if current.generation is None
                else shown_path(current.generation),
                loaded_at=_timestamp(current.loaded_at),
                source=shown_path(current.path),
            )
        body["never_updated"] = live.never_updated
        if self._tls is not None:
            from twisted_demo.tls import tls_status

            pair = self._tls.current
            body["tls"] = tls_status(
                None if pair is None else pair.value, self._tls.last_error
            )
            body["tls"]["never_updated"] = self._tls.never_updated
        return json_response(request, body)

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: IRequest) -> bytes:
        """
        Prometheus text exposition of this app's registry.
        """
        return respond(
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
            return json_response(
                request, {"error": not_allowed(self._reload_from)}, 403
            )

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
            return json_response(request, body, 422 if forced.refused else 200)

        return self._forced.request("POST /-/reload").addCallback(answer)
