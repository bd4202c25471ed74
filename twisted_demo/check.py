"""
C{configmapdemo check}: validate config files, or the ConfigMaps in
Kubernetes manifests, with the parser the service uses, before they are
applied.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

from twisted_demo.config import CONFIG_KEY, parse_message
from twisted_demo.live import DEFAULT_MAX_BYTES, FileSet, FileSetOptions, check_main

_USAGE = (
    "usage: configmapdemo check [--manifest] [--key KEY] [--format text|json] "
    "[--max-bytes N] [--tls-cert PATH --tls-key PATH] [FILE...]\n"
)


def tls_pair(paths: Sequence[str | None]) -> FileSet | None:
    """
    The certificate pair named by C{--tls-cert} and C{--tls-key}, to be
    read and checked as the server does; L{None} when neither is given.

    @raise ValueError: When they do not name one pair, as for the server.
    """
    # Imported only when asked: it imports Twisted, which checking a config
    # file does not need.
    from twisted.python.usage import UsageError

    from twisted_demo.tls import tls_files

    cert, key = paths
    try:
        files = tls_files(cert, key)
    except UsageError as e:
        raise ValueError(str(e)) from None
    if files is None:
        return None
    return FileSet(files.directory, tuple(files.names), files.parse)


#: C{--tls-cert} and C{--tls-key}, as the server takes them.
TLS_OPTIONS = FileSetOptions(
    options=("--tls-cert", "--tls-key"),
    help=(
        "check the PEM certificate (then its chain) the server would serve "
        "with --tls-key, in the same directory",
        "the unencrypted PEM private key of --tls-cert",
    ),
    resolve=tls_pair,
)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """
    The C{configmapdemo} console script; C{check} is its one command.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    match args[:1]:
        case ["check"]:
            raise SystemExit(
                check_main(
                    parse_message,
                    args[1:],
                    prog="configmapdemo check",
                    key=CONFIG_KEY,
                    max_bytes=DEFAULT_MAX_BYTES,
                    file_sets=[TLS_OPTIONS],
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
