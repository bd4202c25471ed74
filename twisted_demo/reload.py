"""
One reload: read the file, skip it if its bytes are already known, parse,
validate, swap; and report the outcome to the log, the metrics and callers.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from attrs import evolve, frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_demo.config import Config
from twisted_demo.source import ConfigFile, Reading
from twisted_demo.store import ConfigStore
from twisted_demo.worker import WorkerDied

_T = TypeVar("_T")

#: Runs C{f()} somewhere and fires with its result: L{inline}, or in a
#: child process with L{twisted_demo.worker.ParserProcess}.
Runner = Callable[[Callable[[], _T]], "Deferred[_T]"]


def inline(f: Callable[[], _T]) -> Deferred[_T]:
    """
    A runner that calls functions at once: deterministic, for tests.
    """
    return succeed(f())


class Outcome(enum.Enum):
    """
    What a reload did.
    """

    UPDATED = "updated"
    UNCHANGED = "unchanged"
    FAILED = "failed"


@frozen
class ReloadResult:
    """
    The outcome of one reload.

    @ivar config: The config being served afterwards (L{None} only if none
        was ever loaded).
    @ivar error: For L{Outcome.FAILED}, why; else L{None}.
    @ivar repeated: For L{Outcome.FAILED}, whether this is the failure
        already reported last time (same bytes or same read error).
    @ivar recovered: For L{Outcome.UNCHANGED}, whether this clears a failure
        reported before.
    """

    outcome: Outcome
    config: Config | None
    error: str | None = None
    repeated: bool = False
    recovered: bool = False


#: Told of every L{ReloadResult}, on the reactor thread.
Observer = Callable[[ReloadResult], object]


def _short(sha256: str | None) -> str:
    return "none" if sha256 is None else sha256[:12]


#: Updates logged one line each as they come, before lines are rationed.
LOG_BURST = 10

#: Seconds per line once the burst is spent: each line then sums up the
#: updates since the last one.
LOG_INTERVAL = 1.0


_UPDATED = (
    "Config file updated: sha256 {old} -> {new} ({path}, generation {generation})"
)
_UPDATED_TIMES = (
    "Config file updated {count} times in {seconds:.1f}s, logged as one line: "
    "sha256 {old} -> {new} ({path}, generation {generation})"
)


class UpdateLog(Service):
    """
    Logs config updates: one line each, but at most L{LOG_BURST} lines at
    once and then one line every L{LOG_INTERVAL} seconds, which sums up the
    updates since the line before.  A storm of updates cannot flood the
    log (or take the server's CPU to write it), and the last line always
    names the config being served: a line held back is written when its
    time comes, or when the service stops.
    """

    _log = Logger(namespace="twisted_demo.reload.Reloader")

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._allowance = float(LOG_BURST)
        self._counted_at = clock.seconds()
        self._pending: IDelayedCall | None = None
        self._held = 0
        self._held_since = 0.0
        self._held_from: Config | None = None
        self._held_to: Config | None = None
        self._stopped = False

    def stopService(self) -> None:
        super().stopService()
        self._stopped = True
        self.flush()

    def updated(self, old: Config | None, new: Config) -> None:
        """
        Log that C{new} replaced C{old}, now or with the next line.
        """
        if self._pending is not None:
            self._held += 1
            self._held_to = new
            return
        if self._stopped or self._take():
            self._line(old, new)
            return
        self._held, self._held_since = 1, self._clock.seconds()
        self._held_from, self._held_to = old, new
        wait = (1 - self._allowance) * LOG_INTERVAL
        self._pending = self._clock.callLater(wait, self.flush)

    def flush(self) -> None:
        """
        Log the updates held back, if any, now.
        """
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if pending.active():
            pending.cancel()
        self._take()
        assert self._held_to is not None
        self._line(self._held_from, self._held_to, self._held)

    def _take(self) -> bool:
        """
        Spend one line of the allowance, if there is one.
        """
        now = self._clock.seconds()
        earned = (now - self._counted_at) / LOG_INTERVAL
        self._allowance = min(float(LOG_BURST), self._allowance + earned)
        self._counted_at = now
        if self._allowance < 1:
            return False
        self._allowance -= 1
        return True

    def _line(self, old: Config | None, new: Config, count: int = 1) -> None:
        """
        Log that C{new} replaced C{old}, in C{count} updates since the line
        before.
        """
        # One update has no count or time span: its fields would mislead
        # a reader of the structured log (seconds since 1970).
        summed: dict[str, float] = {}
        if count > 1:
            summed.update(count=count, seconds=self._clock.seconds() - self._held_since)
        self._log.info(
            _UPDATED if count == 1 else _UPDATED_TIMES,
            **summed,
            old=_short(None if old is None else old.sha256),
            new=_short(new.sha256),
            path=new.source,
            generation=new.generation,
        )


class Reloader:
    """
    Reloads C{config_file} into C{store}, one reload at a time.

    A call to L{reload} while one is running is folded, with any other such
    calls, into a single reload that starts when the running one ends, so
    a burst of requests costs at most two reads.

    @ivar last_error: Why the last reload failed, or L{None} if it did not.
    @ivar update_log: Logs the updates; a service, so that a line held
        back is not lost when the server stops.
    """

    _log = Logger()

    def __init__(
        self,
        config_file: ConfigFile,
        store: ConfigStore,
        clock: IReactorTime,
        run: Runner[Any] = inline,
        observers: list[Observer] | None = None,
    ) -> None:
        self._file = config_file
        self._store = store
        self._clock = clock
        self._run = run
        self._observers: list[Observer] = list(observers or [])
        self._busy = False
        self._waiting: list[Deferred[ReloadResult]] = []
        self._failed_sha256: str | None = None
        self.last_error: str | None = None
        self.update_log = UpdateLog(clock)

    def observe(self, observer: Observer) -> None:
        """
        Tell C{observer} of every future reload's result.
        """
        self._observers.append(observer)

    def reload(self) -> Deferred[ReloadResult]:
        """
        Reload the file from disk now, or right after the reload under way.

        @return: Fires with the L{ReloadResult}; never fails.
        """
        d: Deferred[ReloadResult] = Deferred()
        if self._busy:
            self._waiting.append(d)
        else:
            self._start([d])
        return d

    def _start(self, waiters: list[Deferred[ReloadResult]]) -> None:
        self._busy = True
        current = self._store.current
        known = (
            None if current is None else current.sha256,
            self._failed_sha256,
        )
        now = self._clock.seconds()
        # A plain function rather than a bound method: Twisted registers a
        # pickler for methods that would make a parser process import it.
        work = partial(ConfigFile.read_unless_known, self._file, known, now)
        ran: Deferred[Reading] = maybeDeferred(self._run, work)
        ran.addCallbacks(self._finish, self._crashed).addCallback(self._done, waiters)

    def _crashed(self, failure: Failure) -> ReloadResult:
        if failure.check(WorkerDied):
            # The parser process died, most likely on this file's content,
            # or could not be started.
            return self._fail(
                None, f"{self._file.path}: cannot parse: {failure.getErrorMessage()}"
            )
        self._log.failure("Config reload crashed", failure)
        return self._fail(None, f"{self._file.path}: internal error while reloading")

    def _finish(self, read: Reading) -> ReloadResult:
        """
        On the reactor thread: swap, or record the failure.
        """
        if read.config is not None:
            return self._swap(read.config)
        if read.error is not None:
            return self._fail(read.sha256, read.error)
        current = self._store.current
        if current is not None and read.sha256 == current.sha256:
            if read.generation != current.generation:
                # Same bytes in a new ConfigMap generation (another key
                # changed): nothing to announce, but /config should say
                # which generation is being served.
                self._store.replace(evolve(current, generation=read.generation))
            recovered = self.last_error is not None
            if recovered:
                self._log.info(
                    "Config file {path} is back to the version being served "
                    "(sha256 {sha256}); last error cleared",
                    path=str(self._file.path),
                    sha256=_short(current.sha256),
                )
            self.last_error = None
            self._failed_sha256 = None
            return ReloadResult(
                Outcome.UNCHANGED, self._store.current, recovered=recovered
            )
        # The same bytes that failed last time.
        assert self.last_error is not None
        return ReloadResult(
            Outcome.FAILED, current, error=self.last_error, repeated=True
        )

    def _swap(self, new: Config) -> ReloadResult:
        old = self._store.replace(new)
        self.last_error = None
        self._failed_sha256 = None
        self.update_log.updated(old, new)
        return ReloadResult(Outcome.UPDATED, new)

    def _fail(self, sha256: str | None, error: str) -> ReloadResult:
        repeated = error == self.last_error and sha256 == self._failed_sha256
        if not repeated:
            self._log.error(
                "Config reload failed, still serving the last good config: {error}",
                error=error,
            )
        self.last_error = error
        self._failed_sha256 = sha256
        return ReloadResult(
            Outcome.FAILED, self._store.current, error=error, repeated=repeated
        )

    def _done(
        self, result: ReloadResult, waiters: list[Deferred[ReloadResult]]
    ) -> None:
        for observer in self._observers:
            try:
                observer(result)
            except Exception:
                self._log.failure("Reload observer {o!r} failed", o=observer)
        for d in waiters:
            d.callback(result)
        waiting, self._waiting = self._waiting, []
        self._busy = False
        if waiting:
            self._start(waiting)
