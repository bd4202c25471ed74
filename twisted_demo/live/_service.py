"""
L{LiveConfigService}: the one owner of a live config's state.  It reads a
version when the watcher says so, has it parsed by its runner, swaps it in
on the reactor thread, and tells its observers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from attrs import evolve
from twisted.application.internet import backoffPolicy
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_demo.live._drift import Drift
from twisted_demo.live._errors import ConfigError, ParseCrashed
from twisted_demo.live._log import UpdateLog
from twisted_demo.live._mounts import never_updated
from twisted_demo.live._reader import (
    DEFAULT_MAX_BYTES,
    Fingerprint,
    Reader,
    ReadFailed,
    Snapshot,
)
from twisted_demo.live._runner import Runner, default_runner, inline
from twisted_demo.live._types import Failed, Loaded, Outcome, Unchanged, Updated
from twisted_demo.live._watcher import (
    SETTLE,
    Notifier,
    Watcher,
    default_notifier_factory,
)

__all__ = ["DEADLINE", "RETRY_POLICY", "LiveConfigService"]

#: Seconds a runner has to answer before the reload fails without it.  The
#: default runner, the parser process, gets it as its own deadline, which
#: it renews while the parse uses CPU; any other runner is given up on
#: after it.
DEADLINE = 30.0

#: Seconds to wait before trying again a reload that failed for the
#: service's own reasons, given how many have failed in a row (as
#: C{ClientService} calls its C{retryPolicy}): 0.5 s after the first, then
#: twice as long each time, up to 30 s.  No jitter: each pod's parser is
#: its own, so the retries of several pods do not pile up anywhere.
RETRY_POLICY = backoffPolicy(
    initialDelay=0.25, maxDelay=30.0, factor=2.0, jitter=lambda: 0.0
)


class RunnerTimeout(Exception):
    """
    The runner did not answer within the service's deadline.
    """


#: Events are logged as C{twisted_demo.live}, whichever class logs them.
_log = Logger(namespace="twisted_demo.live")

T = TypeVar("T")

#: Told of every outcome, on the reactor thread.
Observer = Callable[[Outcome[T]], object]

#: Told C{(old, new)} after every swap.
Subscriber = Callable[[Loaded[T] | None, Loaded[T]], object]


class LiveConfigService(MultiService, Generic[T]):
    """
    Follows a config file (or several files of one ConfigMap or Secret
    volume) and keeps the latest valid version of it in L{current}.

    C{parse} turns the file's bytes into the value to serve, or raises
    L{ConfigError} to refuse them; it must be a module-level function, since
    by default it runs in a parser process of lower priority, found there by
    its import path (C{runner} chooses otherwise, e.g.
    C{twisted_demo.live.inline}).  Given C{files}, C{path} is the directory
    and C{parse} gets a mapping of each name to its bytes, all read from
    one C{..data} generation.

    Everything happens on the reactor thread, and a new version replaces
    the old one with one assignment: a reader of L{current} sees one whole
    version or the other.  Bytes already served or already refused are not
    parsed again.  The service never stops the process: a file invalid from
    the start leaves L{current} L{None} and L{when_loaded} waiting.

    @ivar current: The version being served, or L{None} before the first.
    @ivar last_error_detail: Why the last reload was refused, or L{None}
        if it was not: a L{ConfigError}, whose fields
        (C{problem}, C{file}, C{key}, C{line}, C{column}) say what and
        where, never a value from the file.
    @ivar never_updated: Why the files will never be seen to change (one
        is a mount point of its own, as a C{subPath} mount is), with the
        fix; L{None} if they can be.  Found, and logged once, when the
        service starts.

    A reload that failed for the service's own reasons (the runner failed
    with anything but L{ConfigError} or C{ParseCrashed}: the parser died,
    timed out or could not start; or the read failed for want of
    descriptors or memory) is tried again by itself, after
    C{retry_policy(n)} seconds for the n-th such failure in a row
    (L{RETRY_POLICY}: 0.5 s, then doubling up to 30 s), until it succeeds
    or the file is refused.  A refused file, or one that C{parse} crashed
    on, waits for its next change.

    @param deadline: Seconds the runner has to answer.  The default runner
        (a parser process) kills a parse that passes it having used no CPU
        meanwhile, and gives one that used CPU (slowed, at its low
        priority, by a busy node) another C{deadline}; any other runner's
        answer after it is dropped.
    @param parser_memory: The default runner's address space limit in
        bytes, which bounds its resident memory too: what the program's
        memory budget leaves for parsing.  L{None}: 72 MiB, enough for any
        ordinary 1 MiB YAML config.
    @param preload: Modules the default runner's parser process imports as
        it starts, besides C{parse}'s own: those C{parse} imports only when
        called, so that a reload does not wait for them (a program whose
        server hands C{parse} on without parsing need not import them).
        C{module:name} also looks C{name} up in the module, for a package
        that loads its parts on first use (C{twisted_demo.live:parse_yaml}).
    @param notifier_factory: Makes the inotify notifiers of the watcher
        (each with C{watch} and C{loseConnection}, as
        L{twisted.internet.inotify.INotify}); L{None}: inotify on
        C{reactor}, where it has one.
    @param retry_policy: Seconds to wait before the n-th retry in a row.

    The service logs its outcomes (updates, refusals, recoveries) unless
    C{log_outcomes} is false: then an observer of the program's own logs
    them in its words.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        parse: Callable[[Any], T],
        *,
        files: Sequence[str] | None = None,
        reactor: Any = None,
        tick: float = 0.1,
        max_bytes: int = DEFAULT_MAX_BYTES,
        runner: Runner[T] | None = None,
        settle: float = SETTLE,
        deadline: float = DEADLINE,
        parser_memory: int | None = None,
        preload: Sequence[str] = (),
        notifier_factory: Callable[[], Notifier] | None = None,
        retry_policy: Callable[[int], float] = RETRY_POLICY,
        log_outcomes: bool = True,
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        if notifier_factory is None:
            notifier_factory = default_notifier_factory(reactor)
        self._notifier_factory = notifier_factory
        self._retry_policy = retry_policy
        self._parse = parse
        self._reader = Reader(Path(os.path.abspath(path)), files, max_bytes)
        self._source = str(self._reader.path)
        self._files = files
        self._tick = tick
        self._settle = settle
        #: The service's own deadline, for a runner that has none of ours.
        self._deadline: float | None = deadline
        if runner is None:
            runner = default_runner(
                reactor,
                parse,
                deadline=deadline,
                memory=parser_memory,
                preload=preload,
            )
            self._deadline = None
        self._runner: Runner[T] = runner
        if IService.providedBy(runner):
            runner.setServiceParent(self)
        self._observers: list[Observer[T]] = []
        if log_outcomes:
            update_log = UpdateLog(reactor)
            update_log.setServiceParent(self)
            self._observers.append(update_log)
        self._waiting_first: list[Deferred[Loaded[T]]] = []
        self._busy = False
        self._queued: list[Deferred[Outcome[T]]] = []
        self._failed_sha256: str | None = None
        self._watcher: Watcher | None = None
        self._drift = Drift(reactor, self._source)
        #: Reloads failed for our own reasons in a row, as ClientService
        #: counts its failed connection attempts.
        self._failed_attempts = 0
        self._retry: IDelayedCall | None = None
        self.current: Loaded[T] | None = None
        self.never_updated: str | None = None
        self.last_error_detail: ConfigError | None = None

    @property
    def last_error(self) -> str | None:
        """
        C{last_error_detail} as one line, or L{None}.
        """
        detail = self.last_error_detail
        return None if detail is None else str(detail)

    @property
    def generation(self) -> str | None:
        """
        The C{..data} generation of the version being served, if any.
        """
        return None if self.current is None else self.current.generation

    @property
    def watching(self) -> bool:
        """
        Whether inotify watches the files now.  While it does not (no
        inotify here, or it failed), each tick still checks them.
        """
        return self._watcher is not None and self._watcher.watching

    @property
    def drift(self) -> float:
        """
        Seconds for which the file on disk has differed from the version
        being served (a refused file differs), as the watcher's tick last
        saw it; 0 while they match.
        """
        return self._drift.seconds

    def startService(self) -> None:
        # Watching starts with the service rather than in __init__, so that
        # the reactor's inotify is only touched by a running service.
        if self._watcher is None:
            self._watcher = Watcher(
                self._reader,
                self.reload,
                self._reactor,
                self._tick,
                self._notifier_factory,
                settle=self._settle,
                on_fingerprint=self._drift.check,
                served=lambda: self._drift.fingerprint,
            )
            self._watcher.setServiceParent(self)
            self._check_mounts()
        super().startService()
        if self.current is None:
            self.reload()

    def _check_mounts(self) -> None:
        reader = self._reader
        paths = [os.path.join(reader.directory, name) for name in reader.names]
        self.never_updated = never_updated(paths)
        if self.never_updated is not None:
            _log.warn("{reason}", reason=self.never_updated, paths=paths)

    def stopService(self) -> Deferred[Any]:
        self._cancel_retry()
        stopped: Deferred[Any] = super().stopService()
        return stopped

    def _cancel_retry(self) -> None:
        retry, self._retry = self._retry, None
        if retry is not None and retry.active():
            retry.cancel()

    def observe(self, observer: Observer[T]) -> Callable[[], None]:
        """
        Call C{observer(outcome)} after every reload from now on, with an
        L{Updated}, L{Unchanged} or L{Failed}.  An observer that raises is
        logged; the others are still told.

        @return: A function that stops the calls.
        """
        self._observers.append(observer)
        return lambda: self._observers.remove(observer)

    def subscribe(self, subscriber: Subscriber[T]) -> Callable[[], None]:
        """
        Call C{subscriber(old, new)} after each swap from now on, with the
        L{Loaded} versions before and after (C{old} is L{None} the first
        time).

        @return: A function that stops the calls.
        """

        def on_update(outcome: Outcome[T]) -> None:
            if isinstance(outcome, Updated):
                try:
                    subscriber(outcome.old, outcome.new)
                except Exception:
                    _log.failure(
                        "Config subscriber {subscriber!r} failed",
                        subscriber=subscriber,
                    )

        return self.observe(on_update)

    def when_loaded(self) -> Deferred[Loaded[T]]:
        """
        Fire with the first valid version: now if there is one, else once
        a reload swaps one in.  Never fails.
        """
        if self.current is not None:
            return succeed(self.current)
        d: Deferred[Loaded[T]] = Deferred()
        self._waiting_first.append(d)
        return d

    def reload(self) -> Deferred[Outcome[T]]:
        """
        Read the file now (or right after the reload under way: calls made
        meanwhile are folded into one) and swap it in if it is new and
        valid.

        @return: Fires with the L{Updated}, L{Unchanged} or L{Failed}
            outcome; never fails.
        """
        d: Deferred[Outcome[T]] = Deferred()
        self._queued.append(d)
        if not self._busy:
            self._next()
        return d

    def load_blocking(self) -> Loaded[T]:
        """
        Read and parse the file now, blocking: for a program's start-up,
        before the reactor runs, to refuse to start without a valid
        config.  With the default runner the parse runs in a parser
        process started for it, with the same limits as every reload's, so
        that a file a reload would refuse for its memory or CPU is refused
        at start-up too; with another runner, in this process.  On success
        the version is swapped in as a reload would.

        @raise ConfigError: Why the file was refused, naming it.
        """
        from twisted_demo.live._process import ParserProcess

        runner: Runner[T] = inline
        if isinstance(self._runner, ParserProcess):
            parser = self._runner

            def runner(parse: Callable[[Any], T], data: Any) -> Deferred[T]:
                return maybeDeferred(parser.parse_now, parse, data)

        outcome: Outcome[T] | None = None

        def done(result: Outcome[T]) -> None:
            nonlocal outcome
            outcome = result

        self._run(runner).addCallback(done)
        match outcome:
            case Updated(new=loaded) | Unchanged(current=loaded):
                return loaded
            case Failed(detail=ConfigError() as detail):
                raise detail
        raise RuntimeError("a reload is under way")  # pragma: no cover

    def _next(self) -> None:
        waiters, self._queued = self._queued, []
        self._busy = True
        self._cancel_retry()

        def finished(outcome: Outcome[T]) -> None:
            self._busy = False
            if isinstance(outcome, Failed) and outcome.retry_in is not None:
                self._retry = self._reactor.callLater(outcome.retry_in, self.reload)
            for d in waiters:
                d.callback(outcome)
            if self._queued:
                self._next()

        self._run(self._runner).addCallback(finished)

    def _run(self, runner: Runner[T]) -> Deferred[Outcome[T]]:
        """
        One reload through C{runner}; fires with its outcome once the state
        is updated and the observers are told.
        """
        now = self._reactor.seconds()
        # Taken before the read: should the files change during it, the
        # next tick sees them differ from what is served.
        fingerprint = self._reader.fingerprint()
        try:
            snapshot = self._reader.read()
        except ConfigError as e:
            return succeed(self._tell(self._failed(None, self._in_source(e))))
        except ReadFailed as e:
            return succeed(self._tell(self._failed(None, e.error, ours=True)))
        current = self.current
        if current is not None and snapshot.sha256 == current.sha256:
            self._drift.served(fingerprint)
            return succeed(self._tell(self._unchanged(current, snapshot)))
        if snapshot.sha256 == self._failed_sha256 and self.last_error is not None:
            return succeed(
                self._tell(
                    Failed(
                        self.last_error,
                        current,
                        repeated=True,
                        detail=self.last_error_detail,
                    )
                )
            )
        parsed = self._within_deadline(
            maybeDeferred(runner, self._parse, snapshot.data)
        )
        outcome: Deferred[Outcome[T]] = parsed.addCallbacks(
            lambda value: self._swapped(value, snapshot, now, fingerprint),
            lambda failure: self._refused(failure, snapshot),
        )
        return outcome.addCallback(self._tell)

    def _within_deadline(self, parsed: Deferred[T]) -> Deferred[T]:
        """
        C{parsed}, or a failure with L{RunnerTimeout} if it has not fired
        within the service's own deadline, if it has one; its late result is
        then dropped.  (Not C{Deferred.addTimeout}: that cancels C{parsed},
        which a runner may not expect.)
        """
        deadline = self._deadline
        if parsed.called or deadline is None:
            return parsed
        result: Deferred[T] = Deferred()

        def late() -> None:
            result.errback(RunnerTimeout(f"no answer from the parser in {deadline:g}s"))

        timer = self._reactor.callLater(deadline, late)

        def answered(value: T | Failure) -> None:
            if not timer.active():
                return
            timer.cancel()
            if isinstance(value, Failure):
                result.errback(value)
            else:
                result.callback(value)

        parsed.addBoth(answered)
        return result

    def _unchanged(self, current: Loaded[T], snapshot: Snapshot) -> Unchanged[T]:
        if snapshot.generation != current.generation:
            # Same bytes in a new ConfigMap generation (another key
            # changed): nothing to announce, but the generation served is
            # the new one.
            current = self.current = evolve(current, generation=snapshot.generation)
        recovered = self.last_error_detail is not None
        self.last_error_detail = None
        self._failed_sha256 = None
        return Unchanged(current, recovered)

    def _swapped(
        self, value: T, snapshot: Snapshot, now: float, fingerprint: Fingerprint
    ) -> Updated[T]:
        new = Loaded(value, snapshot.sha256, snapshot.generation, now, self._source)
        old, self.current = self.current, new
        self.last_error_detail = None
        self._failed_sha256 = None
        self._drift.served(fingerprint)
        return Updated(old, new)

    def _in_source(self, error: ConfigError) -> ConfigError:
        """
        C{error} as concerning this service's file; for a config of several
        files, a file it names is one in the directory.
        """
        if self._files is None:
            return error.in_file(self._source)
        return error.within(self._source)

    def _refused(self, failure: Failure, snapshot: Snapshot) -> Failed[T]:
        if isinstance(failure.value, ConfigError):
            return self._failed(snapshot.sha256, self._in_source(failure.value))
        reason = failure.getErrorMessage().strip().replace("\n", " ")
        if not reason:
            reason = type(failure.value).__name__
        error = ConfigError(f"cannot parse: {reason}", file=self._source)
        if failure.check(ParseCrashed):
            # parse crashed on these bytes: it would again, so they wait
            # for their next change, as refused bytes do.
            return self._failed(snapshot.sha256, error)
        # The parser died, timed out or could not run: not these bytes'
        # fault for sure, so the same bytes are tried again.
        return self._failed(None, error, ours=True)

    def _failed(
        self, sha256: str | None, detail: ConfigError, ours: bool = False
    ) -> Failed[T]:
        """
        The outcome of a failed reload; C{ours} when the service, not the
        file, is at fault, so that it is tried again after a while.
        """
        error = str(detail)
        repeated = error == self.last_error and sha256 == self._failed_sha256
        self.last_error_detail = detail
        self._failed_sha256 = sha256
        retry_in: float | None = None
        if ours and self.running:
            retry_in = self._retry_policy(self._failed_attempts + 1)
        return Failed(error, self.current, repeated, retry_in, detail)

    def _tell(self, outcome: Outcome[T]) -> Outcome[T]:
        if isinstance(outcome, Failed) and outcome.retry_in is not None:
            self._failed_attempts += 1
        else:
            self._failed_attempts = 0
        for observer in list(self._observers):
            try:
                observer(outcome)
            except Exception:
                _log.failure("Reload observer {o!r} failed", o=observer)
        if isinstance(outcome, Updated) and self._waiting_first:
            waiting, self._waiting_first = self._waiting_first, []
            for d in waiting:
                d.callback(outcome.new)
        return outcome
