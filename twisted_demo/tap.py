"""
The C{twistd configmapdemo} command: its options, and the one place where
the parts are wired into a service.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, cast

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IReactorCore,
    IReactorProcess,
    IReactorThreads,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from twisted_demo.config import DEFAULT_MAX_BYTES, ConfigError
from twisted_demo.metrics import ReloadMetrics
from twisted_demo.reload import Reloader
from twisted_demo.source import ConfigFile
from twisted_demo.store import ConfigStore
from twisted_demo.watcher import ConfigWatcher, default_notifier_factory
from twisted_demo.web import DRAIN_TIMEOUT, ConfigApp, ConfigSite, make_site
from twisted_demo.worker import ParserProcess

DEFAULT_LISTEN = "tcp:8080"
DEFAULT_TICK = 0.1

_log = Logger(namespace="configmapdemo")


class _Reactor(IReactorCore, IReactorProcess, IReactorThreads, IReactorTime):
    """
    The reactor interfaces C{makeService} uses.
    """


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
    ]
    compData = usage.Completions(optActions={"config": usage.CompleteFiles()})

    def postOptions(self) -> None:
        if self["config"] is None:
            raise usage.UsageError("--config PATH is required")


def _exit_with(message: str) -> NoReturn:
    """
    Refuse to start with one readable line and a non-zero exit status.
    """
    print(f"configmapdemo: error: {message}", file=sys.stderr)
    raise SystemExit(1)


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


class _WebService(StreamServerEndpointService):
    """
    Serves the site, and stops C{twistd} with one clear line, rather than a
    traceback, when the endpoint cannot listen (port in use, no permission).

    On stopping it refuses new connections at once and lets the responses
    under way finish, for at most L{DRAIN_TIMEOUT} seconds.
    """

    def __init__(
        self,
        description: str,
        endpoint: object,
        site: ConfigSite,
        clock: IReactorTime,
    ) -> None:
        super().__init__(endpoint, site)
        self._description = description
        self._site = site
        self._clock = clock
        # Raise from startService, at start-up, instead of logging later.
        self._raiseSynchronously = True

    def _listen(self, start: Callable[[], object]) -> None:
        try:
            start()
        except Exception as e:
            _log.critical(
                "configmapdemo: error: cannot listen on {listen}: {error}",
                listen=self._description,
                error=e,
            )
            raise SystemExit(1) from None

    def privilegedStartService(self) -> None:
        # twistd binds here, before dropping privileges.
        self._listen(super().privilegedStartService)

    def startService(self) -> None:
        self._listen(super().startService)

    def stopService(self) -> Deferred[None]:
        stopped: Deferred[object] = maybeDeferred(super().stopService)
        return stopped.addCallback(
            lambda _: self._site.drain(self._clock, DRAIN_TIMEOUT)
        )


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
        _exit_with(str(e))
    try:
        endpoint = serverFromString(reactor, options["listen"])
    except (ValueError, KeyError, TypeError) as e:
        _exit_with(f"--listen {options['listen']!r} is not a server endpoint: {e}")

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
        ConfigApp(store, reloader, metrics).resource(), options["access-log"]
    )
    _WebService(options["listen"], endpoint, site, reactor).setServiceParent(service)
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
