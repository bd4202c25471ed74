"""
The options of C{twistd configmapdemo}, and refusing to start with one line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, TypeVar

from twisted.python import usage

from twisted_demo import server
from twisted_demo.config import CONFIG_KEY
from twisted_demo.listening import endpoint_kind
from twisted_demo.live import DEFAULT_MAX_BYTES, positive_integer
from twisted_demo.logs import LOG_FORMATS, logs_to_stdout
from twisted_demo.reloads import RELOAD_FROM

DEFAULT_LISTEN = "tcp:8080"
DEFAULT_WEBHOOK_LISTEN = "tcp:8443"
DEFAULT_TICK = 0.1

_T = TypeVar("_T")


def _positive_number(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(
            f"must be a number of seconds above 0, got {value!r}"
        ) from None
    if not number > 0 or number == float("inf"):
        raise ValueError(f"must be a number of seconds above 0, got {value!r}")
    return number


def _positive_integer(unit: str) -> Callable[[str], int]:
    """
    The library's coercion of a whole number of C{unit} above 0, with the
    words C{--help} shows for it.
    """
    coerce = positive_integer(unit)
    coerce.coerceDoc = "Must be a whole number above 0."  # type: ignore[attr-defined]
    return coerce


_positive_number.coerceDoc = "Must be a number above 0."  # type: ignore[attr-defined]


def _log_format(value: str) -> str:
    if value not in LOG_FORMATS:
        raise ValueError(f"must be {' or '.join(LOG_FORMATS)}, got {value!r}")
    return value


_log_format.coerceDoc = "One of: " + ", ".join(LOG_FORMATS) + "."  # type: ignore[attr-defined]


def _reload_from(value: str) -> str:
    if value not in RELOAD_FROM:
        choices = f"{', '.join(RELOAD_FROM[:-1])} or {RELOAD_FROM[-1]}"
        raise ValueError(f"must be {choices}, got {value!r}")
    return value


_reload_from.coerceDoc = "One of: " + ", ".join(RELOAD_FROM) + "."  # type: ignore[attr-defined]


def _named(option: str, coerce: Callable[[str], _T]) -> Callable[[str], _T]:
    """
    C{coerce}, refusing a value with a L{usage.UsageError} that names
    C{--option}.  Twisted would report a C{ValueError} without the option's
    name, after its own words.
    """

    def named(value: str) -> _T:
        try:
            return coerce(value)
        except ValueError as e:
            raise usage.UsageError(f"--{option} {e}") from None

    named.coerceDoc = getattr(coerce, "coerceDoc", "")  # type: ignore[attr-defined]
    return named


#: C{--max-bytes}, for the service and the webhook alike.
MAX_BYTES_OPTION = [
    "max-bytes",
    None,
    DEFAULT_MAX_BYTES,
    # Twisted adds the default, 1 MiB: the ConfigMap size limit.
    "Largest config file accepted, in bytes.",
    _named("max-bytes", _positive_integer("bytes")),
]

#: C{--log-format}, for the service and the webhook alike.
LOG_FORMAT_OPTION = [
    "log-format",
    None,
    "text",
    "How each log line is written on standard output: text, or json for log "
    "shippers (one object per line).",
    _named("log-format", _log_format),
]


class _RefusedInOneLine(usage.Options):
    """
    Options that refuse a command line with one line naming the problem.
    """

    #: The plugin's name, which starts each refusal.
    prog = "configmapdemo"

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse the command line, or refuse it with one line naming the
        problem and one naming where the options are explained, instead of
        C{twistd}'s whole usage text with the error at the end.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            refuse_usage(str(e), prog=self.prog)

    def _refuse_json_logs_elsewhere(self) -> None:
        if self["log-format"] == "json" and not logs_to_stdout(self.parent):
            raise usage.UsageError(
                "--log-format json writes to standard output: run 'twistd -n' "
                "without --logfile, --syslog or --logger"
            )


class Options(_RefusedInOneLine):
    """
    Options of C{twistd configmapdemo}.
    """

    synopsis = (
        "--config PATH [--listen ENDPOINT] [--tick SECONDS] [--max-bytes N] "
        "[--access-log] [--log-format text|json] [--tls-cert PATH --tls-key PATH] "
        "[--max-connections N] [--idle-timeout SECONDS] [--header-timeout SECONDS] "
        "[--reload-from loopback|any|off]"
    )
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
            "tls-cert",
            None,
            None,
            "PEM certificate, then the chain that completes it, to serve "
            "every --listen over TLS; needs --tls-key in the same directory (e.g. "
            "/etc/tls/tls.crt in a kubernetes.io/tls Secret volume). Replaced "
            "live when the files change.",
        ],
        [
            "tls-key",
            None,
            None,
            "Unencrypted PEM private key of --tls-cert, in the same directory "
            "(e.g. /etc/tls/tls.key).",
        ],
        [
            "tick",
            "t",
            DEFAULT_TICK,
            "Seconds between checks; a burst of file events within one tick "
            "becomes one reload.",
            _named("tick", _positive_number),
        ],
        MAX_BYTES_OPTION,
        LOG_FORMAT_OPTION,
        [
            "max-connections",
            None,
            None,
            "Most HTTP connections open at once (default: what the memory "
            "limit allows, see README; ceiling: the file descriptor limit, "
            "RLIMIT_NOFILE, minus 64). When full, the server accepts no new "
            "connection and closes the one idle for longest, or else the "
            # Twisted adds ". " and the coerceDoc.
            "slowest to send its request, to make room",
            _named("max-connections", _positive_integer("connections")),
        ],
        [
            "idle-timeout",
            None,
            server.DEFAULT_IDLE_TIMEOUT,
            "Seconds an HTTP connection may stay open with no request under way.",
            _named("idle-timeout", _positive_number),
        ],
        [
            "reload-from",
            None,
            "loopback",
            "Who may force a reload with POST /-/reload: loopback (clients on "
            "this machine, as kubectl port-forward and kubectl exec are), any, "
            "or off. SIGHUP always may.",
            _named("reload-from", _reload_from),
        ],
        [
            "header-timeout",
            None,
            server.DEFAULT_HEADER_TIMEOUT,
            "Seconds a client has to send the whole of a request (head and "
            "body) once it has started it; then it gets 408 and is closed.",
            _named("header-timeout", _positive_number),
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        self["listen"].append(endpoint)

    # Twisted shows the docstring of an opt_ method as its help, keeping the
    # indentation of its lines.
    opt_listen.__doc__ = (
        "Twisted server endpoint to listen on, e.g. tcp:8080, "
        "tcp6:8080:interface=\\:\\:, unix:/run/demo.sock or "
        "ssl:8443:privateKey=key.pem:certKey=cert.pem; give it again to "
        "listen on several (default: tcp:8080)."
    )

    opt_l = opt_listen

    compData = usage.Completions(optActions={"config": usage.CompleteFiles()})

    def postOptions(self) -> None:
        # The pair's files, or None for plain HTTP; a UsageError unless
        # both are given, in one directory.  The TLS modules are imported
        # only for HTTPS: plain HTTP does without them.
        self["tls"] = None
        if (self["tls-cert"], self["tls-key"]) != (None, None):
            from twisted_demo.tls import tls_files

            self["tls"] = tls_files(self["tls-cert"], self["tls-key"])
        if self["config"] is None:
            raise usage.UsageError("--config PATH is required: the YAML file to serve")
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        if self["tls"] is not None:
            _refuse_tls_twice(self["listen"])
        self._refuse_json_logs_elsewhere()


class WebhookOptions(_RefusedInOneLine):
    """
    Options of C{twistd configmapdemo-webhook}: the admission webhook that
    makes the API server refuse a ConfigMap the service would refuse.
    """

    prog = "configmapdemo-webhook"
    synopsis = (
        "--tls-cert PATH --tls-key PATH [--listen ENDPOINT] [--key KEY] "
        "[--max-bytes N] [--log-format text|json]"
    )
    longdesc = (
        "Answer the Kubernetes API server's AdmissionReviews of ConfigMaps at "
        "POST /validate, over HTTPS: a ConfigMap whose --key the service "
        "would refuse is denied, with the line, column and kind of problem."
    )
    optParameters = [
        [
            "listen",
            "l",
            DEFAULT_WEBHOOK_LISTEN,
            "Twisted server endpoint to serve HTTPS on, e.g. tcp:8443.",
        ],
        [
            "tls-cert",
            None,
            None,
            "PEM certificate, then the chain that completes it (required); "
            "needs --tls-key in the same directory. Replaced live when the "
            "files change.",
        ],
        [
            "tls-key",
            None,
            None,
            "Unencrypted PEM private key of --tls-cert, in the same directory.",
        ],
        [
            "key",
            None,
            CONFIG_KEY,
            "The ConfigMap key that holds the service's config file.",
        ],
        MAX_BYTES_OPTION,
        LOG_FORMAT_OPTION,
    ]
    compData = usage.Completions()

    def postOptions(self) -> None:
        from twisted_demo.tls import tls_files

        self["tls"] = tls_files(self["tls-cert"], self["tls-key"])
        if self["tls"] is None:
            raise usage.UsageError(
                "--tls-cert PATH and --tls-key PATH are required: the API "
                "server calls webhooks over HTTPS only"
            )
        _refuse_tls_twice([self["listen"]])
        self._refuse_json_logs_elsewhere()


def _refuse_tls_twice(listens: list[str]) -> None:
    """
    Refuse an C{ssl:} endpoint beside C{--tls-cert}, which serves the
    endpoints over TLS itself: TLS over TLS fails every handshake.
    """
    for listen in listens:
        if endpoint_kind(listen) == "ssl":
            raise usage.UsageError(
                f"--listen {listen!r} is TLS already: with --tls-cert, "
                "give a tcp: endpoint, which --tls-cert serves over TLS"
            )


def exit_with(
    message: str, hint: str | None = None, *, prog: str = "configmapdemo"
) -> NoReturn:
    """
    Refuse to start with one readable line (and a C{hint} on a second line)
    and a non-zero exit status.
    """
    print(f"{prog}: error: {message}", file=sys.stderr)
    if hint is not None:
        print(hint, file=sys.stderr)
    raise SystemExit(1)


def refuse_usage(message: str, *, prog: str = "configmapdemo") -> NoReturn:
    """
    Refuse a command line: one line saying why, one saying where the options
    are described, and a non-zero exit status.
    """
    exit_with(message, f"Try 'twistd {prog} --help'", prog=prog)
