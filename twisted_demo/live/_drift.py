"""
Drift: how long the file on disk has differed from the version being
served, whatever the cause (a reload that failed, a lost event, a wedged
watch), told from the fingerprints the watcher's tick already takes.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_demo.live._reader import Fingerprint

__all__ = ["DRIFT_WARNING", "Drift"]

#: Events are logged as C{twisted_demo.live}, whichever class logs them.
_log = Logger(namespace="twisted_demo.live")

#: Seconds of drift after which a line is logged, once per episode.
DRIFT_WARNING = 30.0


class Drift:
    """
    Compares each fingerprint the tick takes with the one taken when the
    version being served was read.  The disk differs from the moment a
    tick first sees another fingerprint until a reload serves what is
    there again (a refused file keeps differing).  Past L{DRIFT_WARNING}
    seconds a warning is logged, and when it ends, one more line.
    """

    def __init__(
        self, clock: IReactorTime, path: str, warning: float = DRIFT_WARNING
    ) -> None:
        self._clock = clock
        self._path = path
        self._warning = warning
        self._served: Fingerprint | None = None
        self._since: float | None = None
        self._warned = False

    @property
    def fingerprint(self) -> Fingerprint | None:
        """
        The files' fingerprint when the version served was read, if known.
        """
        return self._served

    @property
    def seconds(self) -> float:
        """
        How long the disk has differed from the version served, or 0.
        """
        if self._since is None:
            return 0.0
        return max(0.0, self._clock.seconds() - self._since)

    def served(self, fingerprint: Fingerprint) -> None:
        """
        The version being served was read when the files had C{fingerprint}.
        """
        self._served = fingerprint
        self._matches()

    def check(self, fingerprint: Fingerprint) -> None:
        """
        The files have C{fingerprint} now.
        """
        if fingerprint == self._served:
            self._matches()
            return
        now = self._clock.seconds()
        if self._since is None:
            self._since = now
        elif not self._warned and now - self._since >= self._warning:
            self._warned = True
            _log.warn(
                "Config file {path} has differed from the config being served "
                "for {seconds:.0f}s",
                path=self._path,
                seconds=now - self._since,
            )

    def _matches(self) -> None:
        if self._warned:
            _log.info(
                "Config file {path} matches the config being served again, "
                "after {seconds:.1f}s",
                path=self._path,
                seconds=self.seconds,
            )
        self._since = None
        self._warned = False
