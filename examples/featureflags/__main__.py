"""
C{python -m featureflags FILE [ENDPOINT]}: C{GET /NAME} answers C{on} or
C{off} for flag C{NAME} of the YAML file C{FILE}, as it is now.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import react
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.web.resource import Resource
from twisted.web.server import Site

from featureflags.schema import parse_flags
from twisted_demo.live import LiveConfigService


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


async def main(reactor: Any, path: str, listen: str = "tcp:8081") -> None:
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    flags = LiveConfigService(path, parse_flags, reactor=reactor)
    flags.startService()
    reactor.addSystemEventTrigger("before", "shutdown", flags.stopService)
    await flags.when_loaded()
    await serverFromString(reactor, listen).listen(Site(Flags(flags)))
    print(f"Serving the flags of {path} on {listen}", flush=True)
    await Deferred()  # until the process is stopped


if __name__ == "__main__":
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, *sys.argv[1:])))
