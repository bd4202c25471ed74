"""
Deciding I{when} to reload: inotify on the config file's directory, a
debounce tick, and a per-tick check that catches whatever inotify missed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from twisted_demo.source import DATA_DIR_NAME, ConfigFile, Fingerprint

try:
    from twisted.internet import inotify
except ImportError:  # pragma: no cover - not Linux
    inotify = None  # type: ignore[assignment]

# The events that can mean the config file changed.  IN_MODIFY is left out
# on purpose: a writer is finished only at IN_CLOSE_WRITE.
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CLOSE_WRITE = 0x8
IN_ATTRIB = 0x4
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
WATCH_MASK = (
    IN_CREATE
    | IN_DELETE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CLOSE_WRITE
    | IN_ATTRIB
    | IN_DELETE_SELF
    | IN_MOVE_SELF
)

#: Seconds to wait before trying inotify again after it failed.
REARM_INTERVAL = 5.0


class WatchedDirectory(FilePath[bytes]):
    """
    The directory as given to L{inotify.INotify}, which makes a child path
    of it for every event.  The kernel names an entry of this directory in
    each event, never a path, so the checks C{FilePath.child} makes against
    escaping the directory are left out: they cost more than the rest of
    the event's handling, and a kubelet update brings six events.
    """

    def child(self, path: bytes) -> FilePath[bytes]:  # type: ignore[override]
        return FilePath(self.path + b"/" + path)


class Notifier(Protocol):
    """
    The part of L{twisted.internet.inotify.INotify} the watcher uses.
    """

    connected: int

    def watch(
        self,
        path: FilePath[bytes],
        mask: int = ...,
        autoAdd: bool = ...,
        callbacks: list[Callable[[object, FilePath[bytes], int], object]] | None = ...,
        recursive: bool = ...,
    ) -> int: ...

    def loseConnection(self) -> None: ...


def default_notifier_factory(reactor: object) -> Callable[[], Notifier] | None:
    """
    Make inotify notifiers on C{reactor}, or L{None} where there is no
    inotify (then the watcher polls).
    """
    if inotify is None:
        return None

    def make() -> Notifier:
        notifier = inotify.INotify(reactor)
        # INotify reads its descriptor only once told to; without this no
        # event is ever delivered and only the tick's fingerprint check acts.
        notifier.startReading()
        return notifier

    return make


class ConfigWatcher(Service):
    """
    Calls C{reload} soon after the config file changes.

    The I{directory} is watched, not the file: in a ConfigMap volume the
    file is a symlink that never changes, while the kubelet swaps C{..data}
    beside it.  Watching the file (or the timestamped directory it resolves
    to) would see only C{IN_DELETE_SELF}, on which Twisted's C{INotify}
    closes the whole notifier.

    Events only mark the watcher dirty, and each tick turns a burst of them
    into one reload, with one exception: C{..data} being renamed into place
    is the kubelet's commit point, so that reloads at once.

    Each tick also compares a cheap fingerprint of the file (C{..data}
    target and C{stat}) with the one seen last: inotify drops events on
    queue overflow without telling Twisted, and edits made through the
    symlink land in a directory that is not watched.  A changed fingerprint
    is acted on once it has held still for a tick, so a writer caught
    half-way is not read.  The same check is all there is when inotify is
    unavailable.
    """

    _log = Logger()

    def __init__(
        self,
        config_file: ConfigFile,
        reload: Callable[[], object],
        clock: IReactorTime,
        tick: float,
        notifier_factory: Callable[[], Notifier] | None,
    ) -> None:
        self._file = config_file
        self._reload = reload
        self._clock = clock
        self._tick = tick
        self._notifier_factory = notifier_factory
        self._notifier: Notifier | None = None
        self._loop: LoopingCall | None = None
        self._dirty = False
        self._seen: Fingerprint | None = None
        self._candidate: Fingerprint | None = None
        self._rearm_at = 0.0
        self._inotify_error: str | None = None
        self._directory_missing = False

    @property
    def watching(self) -> bool:
        """
        Whether inotify is currently watching the directory.
        """
        return self._notifier is not None and bool(self._notifier.connected)

    def startService(self) -> None:
        super().startService()
        # The first tick re-reads the file: it may have changed between the
        # initial load and now.
        self._dirty = True
        self._seen = self._file.fingerprint()
        if self._notifier_factory is None:
            self._log.warn(
                "inotify is not available here; checking {path} every {tick}s",
                path=str(self._file.path),
                tick=self._tick,
            )
        else:
            self._arm()
        self._loop = LoopingCall(self._on_tick)
        self._loop.clock = self._clock
        self._loop.start(self._tick, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self._disarm()

    def _arm(self) -> None:
        """
        Start watching the directory with a fresh notifier.
        """
        assert self._notifier_factory is not None
        directory = self._file.directory
        if not directory.is_dir():
            if not self._directory_missing:
                self._directory_missing = True
                self._log.warn(
                    "Config directory {directory} is gone; serving the last "
                    "good config until it is back",
                    directory=str(directory),
                )
            return
        notifier: Notifier | None = None
        try:
            notifier = self._notifier_factory()
            notifier.watch(
                WatchedDirectory(os.fsencode(directory)),
                mask=WATCH_MASK,
                callbacks=[self._on_event],
            )
        except Exception as e:
            if notifier is not None:
                notifier.loseConnection()
            self._rearm_at = self._clock.seconds() + REARM_INTERVAL
            error = str(e) or type(e).__name__
            if error != self._inotify_error:
                self._inotify_error = error
                self._log.warn(
                    "Cannot watch {directory} with inotify ({error}); checking "
                    "{path} every {tick}s instead",
                    directory=str(directory),
                    error=error,
                    path=str(self._file.path),
                    tick=self._tick,
                )
            return
        self._notifier = notifier
        if self._inotify_error is not None or self._directory_missing:
            self._log.info(
                "Watching {directory} with inotify again", directory=str(directory)
            )
        else:
            self._log.info(
                "Watching {directory} for changes to {name} (tick {tick}s)",
                directory=str(directory),
                name=self._file.path.name,
                tick=self._tick,
            )
        self._inotify_error = None
        self._directory_missing = False
        self._dirty = True

    def _disarm(self) -> None:
        notifier, self._notifier = self._notifier, None
        if notifier is not None and notifier.connected:
            notifier.loseConnection()

    def _on_event(self, ignored: object, path: FilePath[bytes], mask: int) -> None:
        if mask & (IN_DELETE_SELF | IN_MOVE_SELF):
            # The watched directory itself went away (Twisted has already
            # closed the notifier for a delete); re-armed on a later tick.
            self._disarm()
            self._dirty = True
            return
        name = path.basename().decode("utf-8", "surrogateescape")
        if name == DATA_DIR_NAME and mask & IN_MOVED_TO:
            self._dirty = False
            self._seen = self._file.fingerprint()
            self._reload()
        elif name in (DATA_DIR_NAME, self._file.path.name):
            self._dirty = True

    def _on_tick(self) -> None:
        if self._notifier_factory is not None and not self.watching:
            self._notifier = None
            if self._clock.seconds() >= self._rearm_at:
                self._arm()
        fingerprint = self._file.fingerprint()
        if self._dirty:
            self._dirty = False
            self._seen = self._candidate = fingerprint
            self._reload()
        elif fingerprint != self._seen:
            if fingerprint == self._candidate:
                self._seen = fingerprint
                self._reload()
            else:
                self._candidate = fingerprint
