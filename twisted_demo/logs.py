"""
The service's log output: text or one JSON object per line on standard
output, with repeated identical lines summed up rather than written one by
one, the access log's lines, and the hook that makes C{twistd} log through
it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from string import Formatter
from typing import IO, Any

from attrs import define
from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    Logger,
    formatEvent,
    textFileLogObserver,
)
from twisted.python.components import Componentized
from twisted.python.failure import Failure
from twisted.web.http import combinedLogFormatter, datetimeToLogString
from zope.interface import implementer

from twisted_demo.live import Allowance

#: The values of C{--log-format}.
LOG_FORMATS = ("text", "json")

#: Identical lines written one each as they come, before they are rationed.
REPEAT_BURST = 10

#: Seconds per line once the burst is spent: each line then sums up the
#: identical lines since the one before.
REPEAT_INTERVAL = 1.0

#: Distinct lines whose recent count is remembered; past it, the longest
#: unused are forgotten, so that varied lines cannot grow the memory.
REPEAT_KEYS = 1024

#: The logger of the access log's lines (C{--access-log}).
ACCESS_NAMESPACE = "configmapdemo.access"

_access = Logger(namespace=ACCESS_NAMESPACE)

_REPEATED = (
    " (repeated {repeated} times in {repeated_seconds:.1f}s, logged as one line)"
)

# Keys that twisted.python.log adds to an event for its own formatting; the
# message they make is already in the event's rendered text.
_LEGACY_KEYS = frozenset(
    """
    message time system isError format why failure printed logLevel
    """.split()
)


def _rfc3339(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def event_as_json(event: LogEvent) -> str:
    """
    C{event} as one line of JSON: C{time} (RFC 3339, UTC), C{level},
    C{logger} (the namespace), C{message} (rendered), C{traceback} when it
    carries a failure, and its own fields, without Twisted's C{log_} keys.
    Values that JSON cannot hold are written as their C{str}.
    """
    fields = {
        key: value
        for key, value in event.items()
        if not key.startswith("log_") and key not in _LEGACY_KEYS
    }
    level = event.get("log_level")
    record: dict[str, Any] = {
        "time": _rfc3339(event.get("log_time", 0.0)),
        "level": "-" if level is None else level.name,
        "logger": event.get("log_namespace", "-"),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        record["traceback"] = failure.getTraceback()
    # The record's own keys first, and they win over a field of that name.
    fields = {key: value for key, value in fields.items() if key not in record}
    return json.dumps({**record, **fields}, default=str) + "\n"


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "backslashreplace")


def log_request(request: Any, seconds: float, duration: float) -> None:
    """
    The access-log line of C{request}, answered at POSIX time C{seconds}
    in C{duration} seconds: its text in the combined log format, as
    Twisted's own access log writes it, and the request as fields for JSON
    lines: C{method}, C{path}, C{protocol}, C{status}, C{bytes} (of the
    response body), C{duration}, C{client} (the peer's address, or the
    socket's path), C{referrer} and C{user_agent}.
    """
    line = combinedLogFormatter(datetimeToLogString(seconds), request)
    address = request.getClientAddress()
    client: str | None = None
    if isinstance(address, IPv4Address | IPv6Address):
        client = address.host
    elif isinstance(address, UNIXAddress) and address.name is not None:
        client = (
            _text(address.name) if isinstance(address.name, bytes) else address.name
        )
    _access.info(
        line.replace("{", "{{").replace("}", "}}"),
        method=_text(request.method),
        path=_text(request.path),
        protocol=_text(request.clientproto),
        status=request.code,
        bytes=request.sentLength,
        duration=round(duration, 6),
        client=client,
        referrer=_text(request.getHeader(b"referer")),
        user_agent=_text(request.getHeader(b"user-agent")),
    )


def json_file_log_observer(out: IO[str]) -> FileLogObserver:
    """
    An observer writing each event to C{out} as L{event_as_json} does.
    """
    return FileLogObserver(out, event_as_json)


@define
class _Repeats:
    """
    One distinct line: its allowance, and the copies held back to be summed
    up.
    """

    allowance: Allowance
    held: int = 0
    held_since: float = 0.0
    last: LogEvent | None = None
    pending: IDelayedCall | None = None


def _elided(log_format: str) -> str:
    """
    C{log_format}'s text with each of its fields as C{…}.
    """
    return "".join(
        literal + ("" if field is None else "…")
        for literal, field, _, _ in Formatter().parse(log_format)
    )


def _line_of(event: LogEvent) -> tuple[object, object, str]:
    """
    What makes two events the same line: logger, level and text.  Twisted's
    own lines are the same when their template is, the fields elided: they
    differ only by a client's address or an object's id (C{EMFILE recovery:
    Closed socket from …}, once per refused connection at the descriptor
    limit).  The service's lines are the same only word for word, since
    their fields are what a reader needs (which error, which config).
    """
    namespace, level = event.get("log_namespace"), event.get("log_level")
    log_format = event.get("log_format")
    if (
        isinstance(namespace, str)
        and namespace.startswith("twisted.")
        and isinstance(log_format, str)
    ):
        try:
            return (namespace, level, _elided(log_format))
        except ValueError:
            pass  # Not a valid template: formatEvent says so in its text.
    return (namespace, level, formatEvent(event))


@implementer(ILogObserver)
class RepeatLimiter:
    """
    Passes events on to C{observer}, but of the same line (see L{_line_of})
    at most L{REPEAT_BURST} at once and then one every L{REPEAT_INTERVAL}
    seconds, which sums up the copies since the line before: C{<line>
    (repeated 37 times in 1.0s, logged as one line)}.  The rule is the
    update log's, applied to every line, so that no repeated cause
    (signals, refused connections) can flood the log.

    The access log's lines all pass: each is one request, which a summary
    would lose.

    Call it on the reactor thread, as C{twistd}'s logging does.
    """

    def __init__(
        self, observer: Callable[[LogEvent], object], clock: IReactorTime
    ) -> None:
        self._observer = observer
        self._clock = clock
        self._lines: dict[tuple[object, object, str], _Repeats] = {}

    def __call__(self, event: LogEvent) -> None:
        if event.get("log_namespace") == ACCESS_NAMESPACE:
            self._observer(event)
            return
        line = _line_of(event)
        now = self._clock.seconds()
        repeats = self._lines.pop(line, None)
        if repeats is None:
            allowance = Allowance(now, REPEAT_BURST, REPEAT_INTERVAL)
            repeats = _Repeats(allowance)
            self._forget_unused()
        # Most recently used last: the first ones are forgotten first.
        self._lines[line] = repeats
        if repeats.pending is not None:
            repeats.held += 1
            repeats.last = event
            return
        if repeats.allowance.take(now):
            self._observer(event)
            return
        repeats.held, repeats.held_since, repeats.last = 1, now, event
        wait = repeats.allowance.wait()
        repeats.pending = self._clock.callLater(wait, self._flush, line)

    def flush(self) -> None:
        """
        Write the lines held back, if any, now.
        """
        for line in list(self._lines):
            self._flush(line)

    def _forget_unused(self) -> None:
        while len(self._lines) >= REPEAT_KEYS:
            for line, repeats in self._lines.items():
                if repeats.pending is None:
                    del self._lines[line]
                    break
            else:
                # Every line is held back; any may go once it is written.
                return

    def _flush(self, line: tuple[object, object, str]) -> None:
        repeats = self._lines.get(line)
        if repeats is None or repeats.pending is None:
            return
        pending, repeats.pending = repeats.pending, None
        if pending.active():
            pending.cancel()
        now = self._clock.seconds()
        repeats.allowance.take(now)
        last, count = repeats.last, repeats.held
        repeats.last, repeats.held = None, 0
        assert last is not None
        if count == 1:
            self._observer(last)
            return
        text = line[2].replace("{", "{{").replace("}", "}}")
        summary = {key: value for key, value in last.items() if key != "log_failure"}
        summary.update(
            log_format=text + _REPEATED,
            log_time=now,
            repeated=count,
            repeated_seconds=round(now - repeats.held_since, 3),
        )
        self._observer(summary)


def logs_to_stdout(twistd_options: Mapping[str, Any] | None) -> bool:
    """
    Whether C{twistd}, run with C{twistd_options} (L{None}: not run by
    C{twistd}), logs to standard output: with C{-n}, and without
    C{--logfile} (other than C{-}), C{--syslog} or C{--logger}.
    """
    if twistd_options is None:
        return True
    return bool(
        twistd_options.get("nodaemon")
        and twistd_options.get("logfile") in (None, "", "-")
        and not twistd_options.get("syslog")
        and not twistd_options.get("logger")
    )


class LogOutput(Service):
    """
    The log on C{out} in C{log_format} (one of L{LOG_FORMATS}), repeated
    lines rationed by a L{RepeatLimiter}.  L{supply_to} makes C{twistd} log
    through it; stopping the service writes what is held back.

    @ivar observer: The observer that formats, rations and writes.
    """

    def __init__(self, log_format: str, clock: IReactorTime, out: IO[str]) -> None:
        if log_format == "json":
            writer = json_file_log_observer(out)
        else:
            writer = textFileLogObserver(out)
        self._limiter = RepeatLimiter(writer, clock)
        self.observer: ILogObserver = self._limiter

    @classmethod
    def for_options(
        cls,
        log_format: str,
        twistd_options: Mapping[str, Any] | None,
        clock: IReactorTime,
    ) -> LogOutput | None:
        """
        The log output of C{twistd configmapdemo --log-format log_format},
        or L{None} where C{twistd}'s own options send the log elsewhere than
        standard output (a log file, syslog, C{--logger}).
        """
        if not logs_to_stdout(twistd_options):
            return None
        return cls(log_format, clock, sys.stdout)

    def supply_to(self, application: object) -> None:
        """
        Make C{twistd} log through L{observer}: C{twistd} starts logging with
        the C{ILogObserver} component of its application, when it has one
        and no C{--logger} was given.  Anything else is left alone.
        """
        if isinstance(application, Componentized):
            application.setComponent(ILogObserver, self.observer)

    def stopService(self) -> None:
        super().stopService()
        self._limiter.flush()
