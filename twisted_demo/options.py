"""
The options of C{twistd configmapdemo}, and refusing to start with one line.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from twisted.python import usage

from twisted_demo import server
from twisted_demo.config import DEFAULT_MAX_BYTES

DEFAULT_LISTEN = "tcp:8080"
DEFAULT_TICK = 0.1


def _positive_number(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise ValueError(f"expected a number of seconds above 0, got {value!r}")
    return number


def _positive_integer(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"expected a whole number of bytes, got {value!r}") from None
    if number <= 0:
        raise ValueError(f"expected a number of bytes above 0, got {value!r}")
    return number


_positive_number.coerceDoc = "Must be a number above 0."  # type: ignore[attr-defined]
_positive_integer.coerceDoc = "Must be a whole number above 0."  # type: ignore[attr-defined]


class Options(usage.Options):
    """
    Options of C{twistd configmapdemo}.
    """

    synopsis = "--config PATH [--listen ENDPOINT] [--tick SECONDS] [--max-bytes N]"
    longdesc = (
        "Serve the 'message' of a YAML config file at http://HOST:PORT/ and "
        "reload the file live whenever it changes: in a Kubernetes ConfigMap "
        "volume, on a plain file, or through SIGHUP and POST /-/reload.  A "
        "file that cannot be read or is invalid is refused and the last good "
        "config keeps being served."
    )
    optFlags = [
        ["access-log", None, "Log every HTTP request (off by default)."],
    ]
    optParameters = [
        [
            "config",
            "c",
            None,
            "Path of the YAML config file to serve (required). In a ConfigMap "
            "volume, the file inside the mounted directory.",
        ],
        [
            "listen",
            "l",
            DEFAULT_LISTEN,
            "Twisted server endpoint to listen on, e.g. tcp:8080, "
            "tcp6:8080:interface=\\:\\:, unix:/run/demo.sock or "
            "ssl:8443:privateKey=key.pem:certKey=cert.pem.",
        ],
        [
            "tick",
            "t",
            DEFAULT_TICK,
            "Seconds between checks; a burst of file events within one tick "
            "becomes one reload.",
            _positive_number,
        ],
        [
            "max-bytes",
            None,
            DEFAULT_MAX_BYTES,
            "Largest config file accepted, in bytes (default: the 1 MiB "
            "ConfigMap limit).",
            _positive_integer,
        ],
        [
            "max-connections",
            None,
            None,
            "Most HTTP connections open at once (default and ceiling: the "
            "file descriptor limit, RLIMIT_NOFILE, minus 64). When full, the "
            "connection idle for longest, or else the slowest to send its "
            "request, is closed to make room.",
            server.connection_count,
        ],
        [
            "idle-timeout",
            None,
            server.DEFAULT_IDLE_TIMEOUT,
            "Seconds an HTTP connection may stay open with no request under way.",
            _positive_number,
        ],
        [
            "header-timeout",
            None,
            server.DEFAULT_HEADER_TIMEOUT,
            "Seconds a client has to send the whole of a request (head and "
            "body) once it has started it; then it gets 408 and is closed.",
            _positive_number,
        ],
    ]
    compData = usage.Completions(optActions={"config": usage.CompleteFiles()})

    def postOptions(self) -> None:
        if self["config"] is None:
            raise usage.UsageError("--config PATH is required")


def exit_with(message: str) -> NoReturn:
    """
    Refuse to start with one readable line and a non-zero exit status.
    """
    print(f"configmapdemo: error: {message}", file=sys.stderr)
    raise SystemExit(1)
