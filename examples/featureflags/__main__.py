"""
C{python -m featureflags FILE [ENDPOINT]}: C{GET /NAME} answers C{on} or
C{off} for flag C{NAME} of the YAML file C{FILE}, as it is now.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.task import react
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.web.resource import Resource
from twisted.web.server import Site

from featureflags.schema import parse_flags
from twisted_demo.live import LiveConfigService

USAGE = "usage: python -m featureflags FILE [ENDPOINT]"


class Flags(Resource):
    isLeaf = True

    def __init__(self, flags: LiveConfigService[dict[str, bool]]) -> None:
        super().__init__()
        self._flags = flags

    def render_GET(self, request: Any) -> bytes:
        current = self._flags.current
        name = request.path.decode("utf-8", "replace").lstrip("/")
        if current is None or name not in current.value:
            request.setResponseCode(404)
            return b"no such flag\n"
        return b"on\n" if current.value[name] else b"off\n"


def refuse_usage() -> NoReturn:
    print(USAGE, file=sys.stderr)
    raise SystemExit(2)


async def main(reactor: Any, path: str, listen: str = "tcp:8081") -> None:
    try:
        endpoint = serverFromString(reactor, listen)
    except ValueError:
        refuse_usage()
    # stderr stays the terminal's, for the one line of a start that fails.
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(sys.stdout)], redirectStandardIO=False
    )
    flags = LiveConfigService(path, parse_flags, reactor=reactor)
    flags.startService()
    reactor.addSystemEventTrigger("before", "shutdown", flags.stopService)
    await flags.when_loaded()
    try:
        await endpoint.listen(Site(Flags(flags)))
    except CannotListenError as e:
        # react prints the message on stderr and exits with status 1.
        raise SystemExit(
            f"featureflags: error: cannot listen on {listen}: {e}"
        ) from None
    print(f"Serving the flags of {path} on {listen}", flush=True)
    await Deferred()  # until the process is stopped


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or sys.argv[1].startswith("-"):
        refuse_usage()
    react(main, sys.argv[1:])
