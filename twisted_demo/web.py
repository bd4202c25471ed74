"""
The HTTP interface: the message, health and readiness probes, the config's
identity, metrics, and a forced reload.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from klein import Klein
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from twisted_demo.metrics import ReloadMetrics
from twisted_demo.reload import Outcome, Reloader, ReloadResult
from twisted_demo.store import ConfigStore

_TEXT = b"text/plain; charset=utf-8"
_JSON = b"application/json"


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat()


def _respond(request: IRequest, body: bytes, content_type: bytes, code: int) -> bytes:
    request.setResponseCode(code)
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
    """

    app = Klein()

    def __init__(
        self, store: ConfigStore, reloader: Reloader, metrics: ReloadMetrics
    ) -> None:
        self._store = store
        self._reloader = reloader
        self._metrics = metrics

    def resource(self) -> IResource:
        """
        The resource to serve, with headers every response carries.
        """
        return _CommonHeaders(self.app.resource(), self.message)

    @app.route("/", methods=["GET"])
    def message(self, request: IRequest) -> bytes:
        """
        The C{message} of the config being served, as the original service
        answered it: plain text, no trailing newline.
        """
        config = self._store.current
        if config is None:
            return _text(request, "No config loaded yet\n", 503)
        return _text(request, config.message)

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
        if self._store.current is None:
            return _text(request, "no config loaded\n", 503)
        return _text(request, "ready\n")

    @app.route("/config", methods=["GET"])
    def config(self, request: IRequest) -> bytes:
        """
        Which version is served and whether the last reload failed; never
        the config's values, which may be secret.
        """
        config = self._store.current
        body: dict[str, Any] = {"last_error": self._reloader.last_error}
        if config is None:
            body.update(sha256=None, generation=None, loaded_at=None, source=None)
        else:
            body.update(
                sha256=config.sha256,
                generation=config.generation,
                loaded_at=_timestamp(config.loaded_at),
                source=config.source,
            )
        return _json(request, body)

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: IRequest) -> bytes:
        """
        Prometheus text exposition of this app's registry.
        """
        return _respond(
            request,
            generate_latest(self._metrics.registry),
            CONTENT_TYPE_LATEST.encode("ascii"),
            200,
        )

    @app.route("/-/reload", methods=["POST"])
    def reload(self, request: IRequest) -> Deferred[bytes]:
        """
        Re-read the configured file now and answer with the outcome: 200
        when the config is (still) valid, 422 when the file was refused.
        """

        def answer(result: ReloadResult) -> bytes:
            config = result.config
            code = 422 if result.outcome is Outcome.FAILED else 200
            return _json(
                request,
                {
                    "outcome": result.outcome.value,
                    "error": result.error,
                    "sha256": None if config is None else config.sha256,
                    "generation": None if config is None else config.generation,
                },
                code,
            )

        return self._reloader.reload().addCallback(answer)


class _CommonHeaders(Resource):
    """
    Wraps the Klein resource to set headers on every response, including
    Klein's own 404 and 405 pages.

    C{GET /}, the one route under load, is answered here by the same
    handler the Klein route calls, without Klein's routing and Deferred
    machinery: that halves the cost of a request (B3 in BENCHMARKS.md).
    """

    isLeaf = True

    def __init__(
        self, wrapped: IResource, message: Callable[[IRequest], bytes]
    ) -> None:
        super().__init__()
        self._wrapped = wrapped
        self._message = message

    def render(self, request: IRequest) -> Any:
        request.setHeader(b"x-content-type-options", b"nosniff")
        if request.path == b"/" and request.method == b"GET":
            return self._message(request)
        return self._wrapped.render(request)
