"""
The floor of this stack: a bare C{twisted.web} L{Resource} that returns a
constant body, on the same reactor and with the same L{Site} settings (no
access log) as the service.  Run as C{python -m bench.bare --port N
--body-file PATH}.
"""

from __future__ import annotations

import argparse
import sys

from twisted.web.http import Request
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import Site


class Constant(Resource):
    """Answer every request with the same C{text/plain} body."""

    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self._body = body

    def render_GET(self, request: IRequest) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return self._body


def quiet_site(resource: Resource) -> Site:
    """
    A L{Site} without an access log, as the service runs: a plain C{Site}
    with no C{logPath} still formats a line per request for the global log.
    """

    class QuietSite(Site):
        def log(self, request: Request) -> None:
            pass

    return QuietSite(resource)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body-file", required=True)
    args = parser.parse_args(argv)
    with open(args.body_file, "rb") as f:
        body = f.read()

    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    description = f"tcp:{args.port}:interface=127.0.0.1"
    endpoint = serverFromString(reactor, description)
    endpoint.listen(quiet_site(Constant(body)))
    print(f"reactor class: {type(reactor).__module__}.{type(reactor).__name__}")
    sys.stdout.flush()
    reactor.run()


if __name__ == "__main__":
    main()
