"""
The HTTP interface: the message and the health and readiness probes,
answered in front of the other routes (the config's identity, metrics, a
forced reload: L{twisted_demo.routes}), which are loaded at the first
request for one of them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

if TYPE_CHECKING:
    from twisted_demo.live import LiveConfigService

_TEXT = b"text/plain; charset=utf-8"
_JSON = b"application/json"

#: Reason phrases twisted.web does not know (it would send "Unknown Status").
_REASONS = {422: b"Unprocessable Content"}


def respond(request: IRequest, body: bytes, content_type: bytes, code: int) -> bytes:
    """
    Answer C{request} with C{body}, its type and length, and C{code} (a
    request starts as 200); a C{HEAD} with the length alone (twisted.web
    would drop the body itself, but log a line for each).
    """
    if code != 200:
        # A request starts as 200 OK.
        request.setResponseCode(code, _REASONS.get(code))
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"content-length", b"%d" % (len(body),))
    return b"" if request.method == b"HEAD" else body


def json_response(request: IRequest, body: dict[str, Any], code: int = 200) -> bytes:
    """
    Answer C{request} with C{body} as JSON.
    """
    data = json.dumps(body, sort_keys=True).encode("utf-8") + b"\n"
    return respond(request, data, _JSON, code)


def text_response(request: IRequest, body: str, code: int = 200) -> bytes:
    """
    Answer C{request} with C{body} as UTF-8 plain text.
    """
    return respond(request, _utf8(body), _TEXT, code)


@functools.lru_cache(maxsize=4)
def _utf8(text: str) -> bytes:
    """
    C{text} encoded, once: every response carrying the message shares one
    copy of it, which the server sends a slice at a time.
    """
    return text.encode("utf-8")


#: The probes, answered in front of the routes: Kubernetes asks for them
#: every few seconds from the start.
_PROBES = (b"/healthz", b"/readyz")


class Front(Resource):
    """
    Answers C{/} and the probes itself; the routes are made by C{routes} at
    the first request for anything else.  (The server sets the headers
    every response carries: L{twisted_demo.server}.)
    """

    isLeaf = True

    def __init__(
        self, live: LiveConfigService[str], routes: Callable[[], IResource]
    ) -> None:
        super().__init__()
        self._live = live
        self._make_routes = routes
        self._routes: IResource | None = None

    def render(self, request: IRequest) -> Any:
        path = request.path
        if path != b"/" and path not in _PROBES:
            if self._routes is None:
                self._routes = self._make_routes()
            return self._routes.render(request)
        # The one route under load skips the routing, half its cost (B3).
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return text_response(request, "method not allowed\n", 405)
        current = self._live.current
        if path == b"/healthz":
            # Liveness: answering at all means the reactor is running.
            return text_response(request, "ok\n")
        if path == b"/readyz":
            # Readiness: a valid config is loaded.
            if current is None:
                return text_response(request, "no config loaded\n", 503)
            return text_response(request, "ready\n")
        if current is None:
            return text_response(request, "No config loaded yet\n", 503)
        # As the original service answers: plain text, no trailing newline.
        return text_response(request, current.value)
