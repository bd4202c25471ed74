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

from twisted_demo.live import (
    Failed,
    LiveConfigService,
    Loaded,
    Outcome,
    Unchanged,
    Updated,
)
from twisted_demo.web import json_response, reload_all, respond

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
            from twisted_demo.tls import tls_status

            body["tls"] = tls_status(
                None if pair is None else pair.value, self._tls.last_error
            )
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
            return json_response(
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
