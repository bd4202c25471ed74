"""
The floor of this stack: a bare C{twisted.web} L{Resource} that returns a
constant body, on the same reactor and with the same L{Site} settings (no
access log) as the service.  Run as C{python -m bench.bare --port N
--body-file PATH}.
"""

from __future__ import annotations

import argparse
import sys

from twisted.web.iweb import IRequest
from twisted.web.resource import Resource


class Constant(Resource):
    """Answer every request with the same C{text/plain} body."""

    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._body = body

    def render_GET(self, request: IRequest) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")  # type: ignore[no-untyped-call]
        return self._body


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body-file", required=True)
    args = parser.parse_args(argv)
    with open(args.body_file, "rb") as f:
        body = f.read()

    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString
    from twisted.web.server import Site

    description = f"tcp:{args.port}:interface=127.0.0.1"
    endpoint = serverFromString(reactor, description)  # type: ignore[no-untyped-call]
    endpoint.listen(Site(Constant(body)))  # type: ignore[no-untyped-call]
    print(f"reactor class: {type(reactor).__module__}.{type(reactor).__name__}")
    sys.stdout.flush()
    reactor.run()


if __name__ == "__main__":
    main()
