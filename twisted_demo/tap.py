"""
The C{twistd configmapdemo} command: its options, and the one place where
the parts are wired into a service.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, cast

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import (
    IReactorCore,
    IReactorProcess,
    IReactorThreads,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_demo.config import ConfigError
from twisted_demo.metrics import ReloadMetrics
from twisted_demo.options import Options, exit_with
from twisted_demo.reload import Reloader
from twisted_demo.server import WebService, endpoint_for, make_site
from twisted_demo.source import ConfigFile
from twisted_demo.store import ConfigStore
from twisted_demo.watcher import ConfigWatcher, default_notifier_factory
from twisted_demo.web import ConfigApp
from twisted_demo.worker import ParserProcess

DEFAULT_LISTEN = "tcp:8080"
DEFAULT_TICK = 0.1

__all__ = ["Options", "makeService"]

_log = Logger(namespace="configmapdemo")


class _Reactor(IReactorCore, IReactorProcess, IReactorThreads, IReactorTime):
    """
    The reactor interfaces C{makeService} uses.
    """


class _ReloadOnSignal(Service):
    """
    Reloads the config when the process receives C{signum} (SIGHUP).
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


class _StopInOrder(MultiService):
    """
    The service's parts, stopped one after another, last added first: the
    web server finishes the responses under way, which may still reload
    through the parser process, before that process stops.

    While they stop, a repeated SIGTERM or SIGINT is logged rather than
    handed to the reactor, which raises when told to stop twice.
    """

    def __init__(
        self, call_from_thread: Callable[[Callable[[], object]], object]
    ) -> None:
        super().__init__()
        self._call_from_thread = call_from_thread

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


def makeService(options: Options) -> MultiService:
    """
    Load the config (refusing to start without a valid one) and build the
    web server, the watcher and the SIGHUP handler as one service.
    """
    from twisted.internet import reactor as _reactor

    reactor = cast(_Reactor, _reactor)
    config_file = ConfigFile(
        Path(os.path.abspath(options["config"])), options["max-bytes"]
    )
    try:
        config = config_file.load(reactor.seconds())
    except ConfigError as e:
        exit_with(str(e))
    try:
        endpoint = endpoint_for(reactor, options["listen"])
    except ValueError as e:
        exit_with(f"--listen {options['listen']!r} is not a server endpoint: {e}")

    store = ConfigStore(config)
    metrics = ReloadMetrics()
    metrics.loaded(None, config)
    store.subscribe(metrics.loaded)
    service = _StopInOrder(reactor.callFromThread)
    parser = ParserProcess(reactor, reactor)
    parser.setServiceParent(service)
    reloader = Reloader(
        config_file,
        store,
        clock=reactor,
        run=parser,
        observers=[metrics.observe],
    )
    # Stops after the web server has drained, and before the parser.
    reloader.update_log.setServiceParent(service)
    _log.info(
        "Loaded {path}: sha256 {sha256}, generation {generation}",
        path=config.source,
        sha256=config.sha256[:12],
        generation=config.generation,
    )

    site = make_site(
        ConfigApp(store, reloader, metrics).resource(),
        options["access-log"],
        idle_timeout=options["idle-timeout"],
        clock=reactor,
    )
    WebService(
        options["listen"],
        endpoint,
        site,
        reactor,
        max_connections=options["max-connections"],
        header_timeout=options["header-timeout"],
    ).setServiceParent(service)
    ConfigWatcher(
        config_file,
        reloader.reload,
        clock=reactor,
        tick=options["tick"],
        notifier_factory=default_notifier_factory(reactor),
    ).setServiceParent(service)
    _ReloadOnSignal(
        signal.SIGHUP, reloader.reload, reactor.callFromThread
    ).setServiceParent(service)
    return service
