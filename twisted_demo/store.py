"""
The current config, the swap, and the subscribers told of each swap.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger

from twisted_demo.config import Config

#: Called as C{subscriber(old, new)} after each replacement.
Subscriber = Callable[[Config | None, Config], object]


class ConfigStore:
    """
    Holds the config being served.

    Readers take L{current} with one attribute read and keep that object for
    the rest of their work, so each sees one whole version.  L{replace} is
    only called on the reactor thread and swaps in the new version with one
    assignment, so no reader ever sees a mix of two versions.

    @ivar current: The config being served, or L{None} before the first one.
    """

    _log = Logger()

    def __init__(self, initial: Config | None = None) -> None:
        self.current = initial
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        """
        Call C{subscriber(old, new)} after every future replacement.
        """
        self._subscribers.append(subscriber)

    def replace(self, new: Config) -> Config | None:
        """
        Make C{new} the current config, tell the subscribers, and return the
        config it replaced.  A subscriber that raises is logged; the swap
        stands and the others are still told.
        """
        old, self.current = self.current, new
        for subscriber in list(self._subscribers):
            try:
                subscriber(old, new)
            except Exception:
                self._log.failure(
                    "Config subscriber {subscriber!r} failed", subscriber=subscriber
                )
        return old
