"""
The live service's log: one line per update, rationed under a storm, one
line per distinct failure, one when an error clears.  An observer of the
service's outcomes, like the metrics.
"""

from __future__ import annotations

from typing import Any

from attrs import define, field
from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from twisted_demo.live._types import Failed, Loaded, Outcome, Unchanged, Updated

__all__ = ["LOG_BURST", "LOG_INTERVAL", "Allowance", "UpdateLog"]

#: Events are logged as C{twisted_demo.live}, whichever class logs them.
_log = Logger(namespace="twisted_demo.live")

#: Updates logged one line each as they come, before lines are rationed.
LOG_BURST = 10

#: Seconds per line once the burst is spent: each line then sums up the
#: updates since the last one.
LOG_INTERVAL = 1.0


@define
class Allowance:
    """
    Lines that may be written now: C{burst} at first, then one more every
    C{interval} seconds, up to C{burst} again.  The one rationing rule, of
    the update log and of any log that sums up a storm of lines.
    """

    counted_at: float
    burst: int = LOG_BURST
    interval: float = LOG_INTERVAL
    left: float = field()

    @left.default
    def _full(self) -> float:
        return float(self.burst)

    def take(self, now: float) -> bool:
        """
        Spend one line, if there is one by C{now}.
        """
        earned = (now - self.counted_at) / self.interval
        self.left = min(float(self.burst), self.left + earned)
        self.counted_at = now
        if self.left < 1:
            return False
        self.left -= 1
        return True

    def wait(self) -> float:
        """
        Seconds from the last L{take} until the next line may be written.
        """
        return max(0.0, (1 - self.left) * self.interval)


_UPDATED = "Config file updated: sha256 {old} -> {new} ({path}%s)"
_UPDATED_TIMES = (
    "Config file updated {count} times in {seconds:.1f}s, logged as one line: "
    "sha256 {old} -> {new} ({path}%s)"
)


def _short(loaded: Loaded[Any] | None) -> str:
    return "none" if loaded is None else loaded.sha256[:12]


def _at(loaded: Loaded[Any]) -> str:
    """
    The format naming C{loaded}'s C{..data} generation, after its path;
    none for a plain file, which has no generation (its field is null).
    """
    return "" if loaded.generation is None else ", generation {generation}"


class UpdateLog(Service):
    """
    Logs the outcomes of reloads.  Updates are logged one line each, but at
    most L{LOG_BURST} lines at once and then one line every L{LOG_INTERVAL}
    seconds, which sums up the updates since the line before: a storm of
    updates cannot flood the log (or take the server's CPU to write it),
    and the last line always names the config being served, since a line
    held back is written when its time comes or when the service stops.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._allowance = Allowance(clock.seconds())
        self._pending: IDelayedCall | None = None
        self._held = 0
        self._held_since = 0.0
        self._held_from: Loaded[Any] | None = None
        self._held_to: Loaded[Any] | None = None
        self._stopped = False

    def stopService(self) -> None:
        super().stopService()
        # Once stopped nothing is held back: no later line may be lost.
        self._stopped = True
        self.flush()

    def __call__(self, outcome: Outcome[Any]) -> None:
        """
        Log C{outcome}, now or with the next line.
        """
        match outcome:
            case Updated(old, new):
                self._updated(old, new)
            case Failed(error, current, repeated=False, retry_in=retry_in):
                detail = outcome.detail
                _log.error(
                    (
                        "Config reload failed, still serving the last good config: "
                        "{error}"
                        if current is not None
                        else "Config reload failed, no config loaded yet: {error}"
                    )
                    + ("" if retry_in is None else " (trying again in {retry_in:g}s)"),
                    error=error,
                    retry_in=retry_in,
                    # The same in fields, for a structured log to index.
                    error_detail=None if detail is None else detail.as_dict(),
                )
            case Unchanged(current, recovered=True):
                _log.info(
                    "Config file {path} is back to the version being served "
                    "(sha256 {sha256}); last error cleared",
                    path=current.path,
                    sha256=_short(current),
                )

    def _updated(self, old: Loaded[Any] | None, new: Loaded[Any]) -> None:
        if old is None:
            _log.info(
                "Loaded {path}: sha256 {new}" + _at(new),
                path=new.path,
                new=_short(new),
                sha256=new.sha256,
                generation=new.generation,
            )
            return
        if self._pending is not None:
            self._held += 1
            self._held_to = new
            return
        if self._stopped or self._take():
            self._line(old, new)
            return
        self._held, self._held_since = 1, self._clock.seconds()
        self._held_from, self._held_to = old, new
        self._pending = self._clock.callLater(self._allowance.wait(), self.flush)

    def flush(self) -> None:
        """
        Log the updates held back, if any, now.
        """
        pending, self._pending = self._pending, None
        if pending is None or self._held_to is None:
            return
        if pending.active():
            pending.cancel()
        self._take()
        self._line(self._held_from, self._held_to, self._held)

    def _take(self) -> bool:
        """
        Spend one line of the allowance, if there is one.
        """
        return self._allowance.take(self._clock.seconds())

    def _line(self, old: Loaded[Any] | None, new: Loaded[Any], count: int = 1) -> None:
        # One update has no count or time span: its fields would mislead
        # a reader of the structured log (seconds since 1970).
        summed: dict[str, float] = {}
        if count > 1:
            summed.update(count=count, seconds=self._clock.seconds() - self._held_since)
        _log.info(
            (_UPDATED if count == 1 else _UPDATED_TIMES) % _at(new),
            **summed,
            old=_short(old),
            new=_short(new),
            sha256=new.sha256,
            path=new.path,
            generation=new.generation,
        )
