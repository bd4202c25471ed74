"""
What a C{twistd} start imports: run as C{python -m tests.start_imports
[--get PATH]... -- COMMAND ARGS...}, it builds the service of the twistd
plugin C{COMMAND} from C{ARGS} as C{twistd} does, without running it, and
prints the names in C{sys.modules} as JSON.  With C{--get}, it then
answers each C{PATH} with the demo's resource (for C{configmapdemo})
before printing them.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _answer(config: str, paths: list[str]) -> None:
    from treq.testing import StubTreq

    from twisted_demo.config import parse_message
    from twisted_demo.live import LiveConfigService, inline
    from twisted_demo.tap import demo_resource

    live = LiveConfigService(config, parse_message, runner=inline)
    live.load_blocking()
    client: Any = StubTreq(demo_resource(live))
    for path in paths:
        d = client.get("http://config.example" + path)
        client.flush()
        d.addCallback(client.content)
        client.flush()
        failures: list[object] = []
        d.addErrback(failures.append)
        if failures:
            raise SystemExit(f"GET {path} failed: {failures[0]}")


def main(argv: list[str]) -> None:
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins

    split = argv.index("--")
    ours, (command, *args) = argv[:split], argv[split + 1 :]
    paths = [ours[i + 1] for i, arg in enumerate(ours) if arg == "--get"]
    # twistd's own steps: the plugin named by the command, its options,
    # then its service.
    [maker] = [m for m in getPlugins(IServiceMaker) if m.tapname == command]
    options = maker.options()
    options.parseOptions(args)
    maker.makeService(options)
    if paths:
        _answer(options["config"], paths)
    json.dump(sorted(sys.modules), sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
