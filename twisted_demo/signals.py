"""
The process's signals: C{SIGHUP} reloads the config, C{SIGUSR1} and
C{SIGUSR2} are logged and ignored rather than ending the process, and a
second C{SIGTERM} or C{SIGINT} while the service stops is logged rather
than handed to the reactor, which raises when told to stop twice.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_demo.logs import LogOutput

__all__ = ["IgnoreSignals", "ReloadOnSignal", "StopInOrder"]

_log = Logger(namespace="configmapdemo")


class ReloadOnSignal(Service):
    """
    Forces a reload when the process receives C{signum} (SIGHUP): C{reload}
    asks for it, and logs its outcome (L{twisted_demo.reloads}).
    """

    def __init__(
        self,
        signum: int,
        reload: Callable[[], object],
        call_from_thread: Callable[[Callable[[], object]], object],
    ) -> None:
        self._signum = signum
        self._reload = reload
        self._call_from_thread = call_from_thread
        self._previous: Any = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # callFromThread is the one reactor call that is safe from a signal
        # handler: it only queues the call and wakes the reactor.
        self._call_from_thread(self._on_signal)

    def _on_signal(self) -> None:
        _log.info("Received SIGHUP: reloading the config")
        self._reload()

    def startService(self) -> None:
        super().startService()
        self._previous = signal.signal(self._signum, self._handle)

    def stopService(self) -> None:
        super().stopService()
        signal.signal(self._signum, self._previous)


class IgnoreSignals(Service):
    """
    Logs each of C{signums} the process receives, and otherwise ignores it:
    their default action would end the process without a line.
    """

    def __init__(
        self,
        signums: list[int],
        call_from_thread: Callable[[Callable[[], object]], object],
    ) -> None:
        self._signums = signums
        self._call_from_thread = call_from_thread
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        self._call_from_thread(
            lambda: _log.info("Received {signal}: ignored, it has no use", signal=name)
        )

    def startService(self) -> None:
        super().startService()
        self._previous = {s: signal.signal(s, self._handle) for s in self._signums}

    def stopService(self) -> None:
        super().stopService()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class StopInOrder(MultiService):
    """
    The service's parts, stopped one after another, last added first: the
    web server finishes the responses under way, which may still reload
    through the parser process, before that process stops.

    While they stop, a repeated SIGTERM or SIGINT is logged rather than
    handed to the reactor, which raises when told to stop twice.
    """

    def __init__(
        self,
        call_from_thread: Callable[[Callable[[], object]], object],
        log_output: LogOutput | None = None,
    ) -> None:
        super().__init__()
        self._call_from_thread = call_from_thread
        self._log_output = log_output
        if log_output is not None:
            # First in, so last to stop: it writes the lines held back.
            log_output.setServiceParent(self)

    def setServiceParent(self, parent: Any) -> None:
        super().setServiceParent(parent)
        if self._log_output is not None:
            self._log_output.supply_to(parent)

    def _repeated(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        self._call_from_thread(
            lambda: _log.info("Received {signal} again: already stopping", signal=name)
        )

    @staticmethod
    def _stop_one(_: object, service: IService) -> Deferred[object]:
        def failed(failure: Failure) -> None:
            _log.failure("Error stopping {service!r}", failure, service=service)

        stopped: Deferred[object] = maybeDeferred(service.stopService)
        return stopped.addErrback(failed)

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        signums = [signal.SIGTERM, signal.SIGINT]
        previous = {signum: signal.signal(signum, self._repeated) for signum in signums}
        stopped: Deferred[object] = succeed(None)
        for service in reversed(list(self)):
            stopped.addCallback(self._stop_one, service)

        def restore(_: object) -> None:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

        return stopped.addCallback(restore)
