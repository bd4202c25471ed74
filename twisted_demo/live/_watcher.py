"""
Deciding I{when} to reload: inotify on the config's directory, a debounce
tick, and a per-tick check that catches whatever inotify missed.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorFDSet, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from twisted_demo.live._reader import DATA_DIR_NAME, Fingerprint, Reader

__all__ = ["REARM_INTERVAL", "SETTLE", "WATCH_MASK", "Notifier", "Watch", "Watcher"]

#: Events are logged as C{twisted_demo.live}, whichever class logs them.
_log = Logger(namespace="twisted_demo.live")

# The events that can mean the config changed.  IN_MODIFY only says that a
# writer has begun: the file is read once it is closed (IN_CLOSE_WRITE) or
# has held still for the settle time.
IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
WATCH_MASK = (
    IN_MODIFY
    | IN_CREATE
    | IN_DELETE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CLOSE_WRITE
    | IN_ATTRIB
    | IN_DELETE_SELF
    | IN_MOVE_SELF
)

#: Events after which a file being written is whole: closed, or replaced.
_WRITE_ENDS = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE

#: Seconds to wait before trying inotify again after it failed.
REARM_INTERVAL = 5.0

#: Seconds a file written in place must hold still before it is read when
#: its writer has not closed it, or when no event says it was (an edit
#: through the ConfigMap symlink, a lost event, no inotify).
SETTLE = 1.0


class WatchedDirectory(FilePath[bytes]):
    """
    The directory as given to Twisted's C{INotify}, which makes a child
    path of it for every event.  The kernel names one entry of this
    directory in each event, never a path, so the checks C{FilePath.child}
    makes against escaping the directory (three normalisations, most of an
    event's cost, and a kubelet update brings six events before the one
    that reloads) are left out.

    That C{INotify} names events through C{child} of the watched path is
    not documented, and no Twisted ticket covers the cost;
    C{tests/test_footprint.py} fails if Twisted stops doing so, and the
    watcher then only loses the saving.
    """

    def child(self, path: bytes) -> FilePath[bytes]:  # type: ignore[override]
        return FilePath(self.path + b"/" + path)


class Notifier(Protocol):
    """
    The part of L{twisted.internet.inotify.INotify} the watcher uses.
    """

    def watch(
        self,
        path: FilePath[bytes],
        mask: int = ...,
        autoAdd: bool = ...,
        callbacks: list[Callable[[object, FilePath[bytes], int], object]] | None = ...,
        recursive: bool = ...,
    ) -> int: ...

    def loseConnection(self) -> None: ...


def default_notifier_factory(reactor: Any) -> Callable[[], Notifier] | None:
    """
    Make inotify notifiers on C{reactor}, or L{None} where there is no
    inotify, or a reactor that cannot watch its descriptor (then the
    watcher polls).
    """
    if not IReactorFDSet.providedBy(reactor):
        return None
    try:
        from twisted.internet import inotify
    except ImportError:  # pragma: no cover - not Linux
        return None

    def make() -> Notifier:
        notifier = inotify.INotify(reactor)
        # INotify reads its descriptor only once told to; without this no
        # event is ever delivered and only the tick's check acts.
        notifier.startReading()
        return notifier

    return make


class Watch(enum.Enum):
    """
    How the watcher learns of changes.
    """

    STOPPED = "stopped"
    #: inotify watches the directory; each tick also checks the fingerprint.
    WATCHING = "watching"
    #: This platform has no inotify: the tick's check is all there is.
    POLLING = "polling"
    #: inotify failed; the tick checks, and inotify is tried again every
    #: L{REARM_INTERVAL} seconds.
    RETRYING = "retrying"
    #: The watched directory was deleted or moved away; watched again at
    #: the next tick.
    LOST = "lost"
    #: The directory is missing; the tick tries to watch it again.
    GONE = "gone"


class Change(enum.Enum):
    """
    What the watcher knows of the file since the last reload it asked for.
    """

    #: Nothing: the fingerprint is the one last acted on.
    QUIET = "quiet"
    #: An event came: reload at the next tick, once for the whole burst.
    DIRTY = "dirty"
    #: A file was modified (C{IN_MODIFY}) and not closed since: reload once
    #: it is closed or replaced, or has held still for the settle time.
    WRITING = "writing"
    #: The fingerprint changed without an event; reload once it holds still
    #: (for a tick when C{..data} moved, the kubelet's commit; else for the
    #: settle time), so that a writer caught half-way is not read.
    SETTLING = "settling"


class Watcher(Service):
    """
    Calls C{reload} soon after the config changes.

    The I{directory} is watched, not the file: in a ConfigMap volume the
    file is a symlink that never changes, while the kubelet swaps C{..data}
    beside it.  A watch on the file would see only C{IN_DELETE_SELF}, on
    which Twisted drops the watch (twisted/twisted#7788, #9777): the watch
    is then re-armed here, on a fresh notifier, at the next tick.

    Events only mark the watcher L{Change.DIRTY}, and each tick turns a
    burst of them into one reload, with one exception: C{..data} being
    renamed into place is the kubelet's commit point, so that reloads at
    once.  Each tick also compares a cheap fingerprint of the files with
    the one seen last: Twisted drops inotify's C{IN_Q_OVERFLOW} without a
    word (twisted/twisted#6722), and edits made through the symlink land in
    a directory that is not watched.

    A file is never read half-written: after an C{IN_MODIFY} it waits for
    its C{IN_CLOSE_WRITE} (or for being replaced), and a change seen only
    by the fingerprint waits until the fingerprint has held still; either
    way, a file still for C{settle} seconds is read, closed or not.

    @ivar state: How changes are being watched for, a L{Watch}.
    """

    def __init__(
        self,
        reader: Reader,
        reload: Callable[[], object],
        clock: IReactorTime,
        tick: float,
        notifier_factory: Callable[[], Notifier] | None,
        settle: float = SETTLE,
        on_fingerprint: Callable[[Fingerprint], object] | None = None,
        served: Callable[[], Fingerprint | None] | None = None,
    ) -> None:
        self._reader = reader
        self._reload = reload
        self._clock = clock
        self._tick = tick
        self._notifier_factory = notifier_factory
        self._settle = settle
        self._on_fingerprint = on_fingerprint
        self._served = served
        self._notifier: Notifier | None = None
        self._loop: LoopingCall | None = None
        self.state = Watch.STOPPED
        self._change = Change.QUIET
        self._seen: Fingerprint | None = None
        self._candidate: Fingerprint | None = None
        self._dirty_at: Fingerprint | None = None
        self._still_since = 0.0
        self._rearm_at = 0.0
        self._inotify_error: str | None = None

    @property
    def watching(self) -> bool:
        """
        Whether inotify is watching the directory now.
        """
        return self.state is Watch.WATCHING

    @property
    def _what(self) -> str:
        return str(self._reader.path)

    def startService(self) -> None:
        super().startService()
        served = None if self._served is None else self._served()
        if served is None:
            # The first tick re-reads the file: it may have changed between
            # the first load and now.
            self._mark_dirty(None)
            self._seen = self._reader.fingerprint()
        else:
            # The first tick compares the files with the fingerprint of the
            # version served, and treats a difference as any change: a
            # writer caught half-way at start is not read either.
            self._change = Change.QUIET
            self._seen = served
        if self._notifier_factory is None:
            self.state = Watch.POLLING
            _log.warn(
                "inotify is not available here; checking {path} every {tick}s",
                path=self._what,
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
        self.state = Watch.STOPPED

    def _arm(self) -> None:
        """
        Watch the directory with a fresh notifier, or enter the state that
        says why not.
        """
        assert self._notifier_factory is not None
        directory = self._reader.directory
        was = self.state
        if not directory.is_dir():
            if was is not Watch.GONE:
                _log.warn(
                    "Config directory {directory} is gone; serving the last "
                    "good config until it is back",
                    directory=str(directory),
                )
            self.state = Watch.GONE
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
                _log.warn(
                    "Cannot watch {directory} with inotify ({error}); checking "
                    "{path} every {tick}s instead",
                    directory=str(directory),
                    error=error,
                    path=self._what,
                    tick=self._tick,
                )
            self.state = Watch.RETRYING
            return
        self._notifier = notifier
        self.state = Watch.WATCHING
        self._inotify_error = None
        if was is not Watch.STOPPED:
            # Events may have been missed while nothing watched.
            self._mark_dirty(None)
        if was is Watch.STOPPED:
            _log.info(
                "Watching {directory} for changes to {name} (tick {tick}s)",
                directory=str(directory),
                name=", ".join(self._reader.names),
                tick=self._tick,
            )
        else:
            _log.info(
                "Watching {directory} with inotify again", directory=str(directory)
            )

    def _disarm(self) -> None:
        notifier, self._notifier = self._notifier, None
        if notifier is not None:
            notifier.loseConnection()

    def _on_event(self, ignored: object, path: FilePath[bytes], mask: int) -> None:
        if mask & (IN_DELETE_SELF | IN_MOVE_SELF):
            # The watched directory itself went away.
            self._disarm()
            self.state = Watch.LOST
            self._mark_dirty(None)
            return
        name = os.fsdecode(path.basename())
        if name == DATA_DIR_NAME and mask & IN_MOVED_TO:
            self._change = Change.QUIET
            self._seen = self._reader.fingerprint()
            self._reload()
        elif name in self._reader.names and mask & IN_MODIFY:
            # A writer has begun, or goes on: not whole before it closes.
            self._change = Change.WRITING
            self._candidate = None
            self._still_since = self._clock.seconds()
        elif name in self._reader.names and self._change is Change.WRITING:
            if mask & _WRITE_ENDS:
                self._mark_dirty(self._reader.fingerprint())
        elif name == DATA_DIR_NAME or name in self._reader.names:
            self._mark_dirty(self._reader.fingerprint())

    def _mark_dirty(self, fingerprint: Fingerprint | None) -> None:
        """
        Reload at the next tick; C{fingerprint}, if given, is the files'
        when the event that asks for it was handled.
        """
        self._change = Change.DIRTY
        self._dirty_at = fingerprint

    def _on_tick(self) -> None:
        if self.state in (Watch.LOST, Watch.GONE) or (
            self.state is Watch.RETRYING and self._clock.seconds() >= self._rearm_at
        ):
            self._arm()
        fingerprint = self._reader.fingerprint()
        if self._on_fingerprint is not None:
            self._on_fingerprint(fingerprint)
        now = self._clock.seconds()
        if self._change is Change.DIRTY and self._dirty_at not in (None, fingerprint):
            # Changed again since the event was handled: a writer is at work
            # whose events are still to come.  Read once it is done.
            self._change = Change.WRITING
            self._candidate, self._still_since = fingerprint, now
        elif self._change is Change.DIRTY:
            self._reload_at(fingerprint)
        elif self._change is Change.SETTLING and fingerprint == self._seen:
            # Changed back before it was read.
            self._change = Change.QUIET
        elif self._change in (Change.WRITING, Change.SETTLING):
            if fingerprint != self._candidate:
                self._candidate, self._still_since = fingerprint, now
            elif now - self._still_since >= self._settle_time(fingerprint):
                self._reload_at(fingerprint)
        elif fingerprint != self._seen:
            self._change = Change.SETTLING
            self._candidate, self._still_since = fingerprint, now

    def _settle_time(self, fingerprint: Fingerprint) -> float:
        """
        How long a change seen by C{fingerprint} must hold still: no time
        beyond the tick it was seen in when C{..data} was swapped (the
        kubelet's atomic commit) and no file is being written, else the
        settle time.
        """
        assert self._seen is not None
        if self._change is Change.SETTLING and fingerprint[0] != self._seen[0]:
            return 0.0
        return self._settle

    def _reload_at(self, fingerprint: Fingerprint) -> None:
        self._change = Change.QUIET
        self._seen = self._candidate = fingerprint
        self._reload()
