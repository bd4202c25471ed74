"""
Where a parse function runs: the C{Runner} seam of the live service, and
L{inline}, the runner that calls it at once in this process.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_demo.live._errors import ConfigError, ParseCrashed, describe_crash

__all__ = ["In", "Runner", "default_runner", "inline"]

T = TypeVar("T")

#: What a parse function is given: one file's bytes, or several by name.
In = bytes | Mapping[str, bytes]

#: Calls C{parse(data)} somewhere, C{data} being an L{In}, and fires with
#: its value, or fails with L{ConfigError} when parse refused the input,
#: with C{ParseCrashed} when parse crashed on it, or with another exception
#: when it could not run.  (C{data} is
#: typed C{Any}: a parse function takes C{bytes} or a mapping, never both.)
Runner = Callable[[Callable[[Any], T], Any], "Deferred[T]"]

_log = Logger(namespace="twisted_demo.live")


def inline(parse: Callable[[Any], T], data: Any) -> Deferred[T]:
    """
    A runner that calls C{parse(data)} at once, in this process and on the
    reactor: deterministic, for tests and for parse functions cheap enough
    to hold the reactor for (a small file of a trusted format).  A parse
    that raises anything but L{ConfigError} is logged with its traceback
    and fails as C{ParseCrashed}, as it does in the parser process.
    """

    def crashed(failure: Failure) -> Failure:
        if failure.check(ConfigError, ParseCrashed):
            return failure
        _log.failure("Parse function {parse!r} crashed", failure, parse=parse)
        error = failure.value
        reason = "it crashed" if error is None else describe_crash(error)
        return Failure(ParseCrashed(reason))

    return maybeDeferred(parse, data).addErrback(crashed)


def default_runner(
    reactor: Any,
    parse: Callable[[Any], Any],
    *,
    deadline: float,
    memory: int | None = None,
    preload: Sequence[str] = (),
    niceness: int | None = None,
) -> Any:
    """
    The runner a service gets unless it names one: a parser process of its
    own, an C{IService} to be started and stopped with the service, which
    imports C{parse}'s module and the modules C{preload} names as it starts,
    before the first reload needs them.

    @param deadline: Seconds a parse may take, renewed while it uses CPU
        (see C{ParserProcess}).
    @param memory: The parser process's address space limit in bytes, or
        L{None} for C{PARSER_MEMORY}.
    @param niceness: How much nicer than the server it runs, or L{None} for
        C{NICENESS}.
    """
    from twisted_demo.live._child import NICENESS
    from twisted_demo.live._process import Limits, ParserProcess

    limits = Limits() if memory is None else Limits(address_space=memory)
    return ParserProcess(
        reactor,
        deadline=deadline,
        niceness=NICENESS if niceness is None else niceness,
        limits=limits,
        preload=[parse.__module__, *preload],
    )
