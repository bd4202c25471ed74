"""
C{configmapdemo check}: validate config files, or the ConfigMaps in
Kubernetes manifests, with the parser the service uses, before they are
applied.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

from twisted_demo.config import DEFAULT_MAX_BYTES, parse_message
from twisted_demo.live._check import check_main

#: The ConfigMap key that deploy/ mounts as the service's config file.
CONFIG_KEY = "configmap-microservice-demo.yaml"

_USAGE = (
    "usage: configmapdemo check [--manifest] [--key KEY] [--format text|json] "
    "[--max-bytes N] FILE...\n"
)


def parse(data: bytes) -> object:
    """
    The service's parser on C{data}, refusing it with a reason that names
    no file: the check names it.  The size limit is applied before, by the
    reader, as in the service.
    """
    return parse_message(data)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """
    The C{configmapdemo} console script; C{check} is its one command.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    match args[:1]:
        case ["check"]:
            raise SystemExit(
                check_main(
                    parse,
                    args[1:],
                    prog="configmapdemo check",
                    key=CONFIG_KEY,
                    max_bytes=DEFAULT_MAX_BYTES,
                )
            )
        case ["-h"] | ["--help"]:
            sys.stdout.write(_USAGE)
            raise SystemExit(0)
        case []:
            message = "no command given; the one command is check"
        case [command]:
            message = f"unknown command {command!r}; the one command is check"
    sys.stderr.write(f"configmapdemo: error: {message} (see --help)\n")
    raise SystemExit(2)
