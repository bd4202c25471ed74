"""
When the watcher reloads: driven by a L{task.Clock} and a fake notifier
that delivers exactly the events a test gives it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.logger import LogLevel
from twisted.python.filepath import FilePath

from tests.support import captured_log
from twisted_demo.live._reader import Reader
from twisted_demo.live._watcher import (
    IN_ATTRIB,
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_MODIFY,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    REARM_INTERVAL,
    SETTLE,
    WATCH_MASK,
    Watch,
    Watcher,
)
from twisted_demo.testing import AtomicWriter

TICK = 0.1
#: Ticks after which a change has held still for the settle time, and one
#: more for floating point.
SETTLE_TICKS = round(SETTLE / TICK) + 1
IN_ISDIR = 0x40000000
Callback = Callable[[object, FilePath[bytes], int], object]


class FakeNotifier:
    """
    Stands in for C{INotify}: records the watch and delivers given events.
    """

    def __init__(self) -> None:
        self.connected = True
        self.watched: list[tuple[str, int]] = []
        self._callbacks: list[Callback] = []
        self._path: FilePath[bytes] | None = None

    def watch(
        self,
        path: FilePath[bytes],
        mask: int = 0,
        autoAdd: bool = False,
        callbacks: list[Callback] | None = None,
        recursive: bool = False,
    ) -> int:
        self._path = path
        self.watched.append((os.fsdecode(path.path), mask))
        self._callbacks = list(callbacks or [])
        return 1

    def event(self, name: str | None, mask: int) -> None:
        assert self._path is not None
        path = self._path if name is None else self._path.child(os.fsencode(name))
        for callback in self._callbacks:
            callback(None, path, mask)

    def loseConnection(self) -> None:
        self.connected = False


class Harness:
    def __init__(self, directory: Path, name: str = "config.yaml") -> None:
        self.directory = directory
        self.file = Reader(directory / name)
        self.clock = Clock()
        self.reloads = 0
        self.read: list[bytes] = []
        self.notifiers: list[FakeNotifier] = []
        self.fail_with: Exception | None = None
        self.watcher = Watcher(
            self.file, self._reload, self.clock, TICK, self._make_notifier
        )

    def _reload(self) -> None:
        self.reloads += 1
        # What a reload would read now, when there is a file to read.
        path = self.file.path
        if path.is_file():
            self.read.append(path.read_bytes())

    def _make_notifier(self) -> FakeNotifier:
        if self.fail_with is not None:
            raise self.fail_with
        notifier = FakeNotifier()
        self.notifiers.append(notifier)
        return notifier

    @property
    def notifier(self) -> FakeNotifier:
        return self.notifiers[-1]

    def tick(self, count: int = 1) -> None:
        for _ in range(count):
            self.clock.advance(TICK)

    def start(self) -> None:
        """
        Start, and let the first tick do its check of the file.
        """
        self.watcher.startService()
        self.tick()
        self.reloads = 0
        self.read.clear()


@pytest.fixture
def plain(tmp_path: Path) -> Harness:
    (tmp_path / "config.yaml").write_bytes(b"message: one\n")
    harness = Harness(tmp_path)
    harness.start()
    return harness


@pytest.fixture
def configmap(tmp_path: Path) -> tuple[Harness, AtomicWriter]:
    writer = AtomicWriter(tmp_path)
    writer.write({"config.yaml": b"message: one\n"})
    harness = Harness(tmp_path)
    harness.start()
    return harness, writer


def test_watches_the_directory_not_the_file(plain: Harness) -> None:
    assert plain.notifier.watched == [(str(plain.directory), WATCH_MASK)]


def test_first_tick_rereads_the_file_once(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_bytes(b"message: one\n")
    harness = Harness(tmp_path)
    harness.watcher.startService()
    harness.tick(5)
    assert harness.reloads == 1


def test_burst_of_ten_events_in_one_tick_gives_one_reload(plain: Harness) -> None:
    for _ in range(10):
        plain.notifier.event("config.yaml", IN_CLOSE_WRITE)
    assert plain.reloads == 0
    plain.tick(3)
    assert plain.reloads == 1


def test_events_across_two_ticks_give_at_most_two_reloads(plain: Harness) -> None:
    plain.notifier.event("config.yaml", IN_CLOSE_WRITE)
    plain.clock.advance(TICK * 0.9)
    plain.notifier.event("config.yaml", IN_CLOSE_WRITE)
    plain.clock.advance(TICK * 0.2)
    plain.notifier.event("config.yaml", IN_ATTRIB)
    plain.tick(3)
    assert 1 <= plain.reloads <= 2


def test_unchanged_file_gives_no_reload(plain: Harness) -> None:
    plain.tick(50)
    assert plain.reloads == 0


def test_events_for_other_files_are_ignored(plain: Harness) -> None:
    plain.notifier.event(".config.yaml.swp", IN_CREATE)
    plain.notifier.event("other.yaml", IN_CLOSE_WRITE)
    plain.tick(3)
    assert plain.reloads == 0


def test_kubelet_commit_point_reloads_before_the_tick(
    configmap: tuple[Harness, AtomicWriter],
) -> None:
    harness, writer = configmap
    writer.write({"config.yaml": b"message: two\n"})
    for name, mask in [
        ("..2026_11_22_10_00_01.1", IN_CREATE | IN_ISDIR),
        ("..2026_11_22_10_00_01.1", IN_ATTRIB | IN_ISDIR),
        ("..data_tmp", IN_CREATE),
        ("..data_tmp", IN_MOVED_FROM),
    ]:
        harness.notifier.event(name, mask)
    assert harness.reloads == 0
    harness.notifier.event("..data", IN_MOVED_TO)
    assert harness.reloads == 1
    harness.notifier.event("..2026_11_22_10_00_00.1", IN_DELETE | IN_ISDIR)
    harness.tick(3)
    assert harness.reloads == 1


def test_key_added_after_the_swap_is_picked_up_on_the_tick(
    configmap: tuple[Harness, AtomicWriter],
) -> None:
    harness, _ = configmap
    harness.notifier.event("..data", IN_MOVED_TO)
    harness.notifier.event("config.yaml", IN_CREATE)
    harness.tick()
    assert harness.reloads == 2


def test_change_without_any_event_is_found_by_the_tick_check(
    configmap: tuple[Harness, AtomicWriter],
) -> None:
    harness, writer = configmap
    # As after an inotify queue overflow: the update happens, no event comes.
    writer.write({"config.yaml": b"message: two\n"})
    harness.tick()
    assert harness.reloads == 0, "a change is read only once it holds still"
    harness.tick()
    assert harness.reloads == 1
    harness.tick(10)
    assert harness.reloads == 1


def test_edit_through_the_symlink_is_found_by_the_tick_check(
    configmap: tuple[Harness, AtomicWriter],
) -> None:
    harness, _ = configmap
    (harness.directory / "config.yaml").write_bytes(b"message: edited in place\n")
    harness.tick(2)
    assert harness.reloads == 0, "no event says the writer is done"
    harness.tick(SETTLE_TICKS)
    assert harness.reloads == 1


def test_deleted_directory_is_watched_again_when_it_returns(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "config"
    writer = AtomicWriter(directory)
    writer.write({"config.yaml": b"message: one\n"})
    harness = Harness(directory)
    harness.start()
    with captured_log() as log:
        shutil.rmtree(directory)
        harness.notifier.event(None, IN_DELETE_SELF)
        assert not harness.notifier.connected
        harness.tick(5)
        assert harness.watcher.state is Watch.GONE
        assert not harness.watcher.watching
        assert len(harness.notifiers) == 1
        writer.write({"config.yaml": b"message: back\n"})
        harness.tick()
    assert harness.watcher.watching
    assert len(harness.notifiers) == 2
    assert harness.reloads >= 1
    assert [m for m in log.messages(LogLevel.warn) if "is gone" in m] == [
        f"Config directory {directory} is gone; serving the last good config "
        "until it is back"
    ]
    assert f"Watching {directory} with inotify again" in log.messages(LogLevel.info)


def test_inotify_failure_falls_back_to_checking_every_tick(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_bytes(b"message: one\n")
    harness = Harness(tmp_path)
    harness.fail_with = OSError(28, "No space left on device")
    with captured_log() as log:
        harness.start()
        harness.tick(3)
    assert harness.watcher.state is Watch.RETRYING
    assert log.messages(LogLevel.warn) == [
        f"Cannot watch {tmp_path} with inotify ([Errno 28] No space left on "
        f"device); checking {tmp_path / 'config.yaml'} every {TICK}s instead"
    ]
    (tmp_path / "config.yaml").write_bytes(b"message: two, longer\n")
    harness.tick(1 + SETTLE_TICKS)
    assert harness.reloads == 1

    harness.fail_with = None
    harness.clock.advance(REARM_INTERVAL)
    assert harness.watcher.watching


def test_platform_without_inotify_polls(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_bytes(b"message: one\n")
    harness = Harness(tmp_path)
    harness.watcher = Watcher(harness.file, harness._reload, harness.clock, TICK, None)
    with captured_log() as log:
        harness.start()
    assert harness.watcher.state is Watch.POLLING
    assert log.messages(LogLevel.warn) == [
        f"inotify is not available here; checking {tmp_path / 'config.yaml'} "
        f"every {TICK}s"
    ]
    os.rename(tmp_path / "config.yaml", tmp_path / "old.yaml")
    (tmp_path / "config.yaml").write_bytes(b"message: two\n")
    harness.tick(1 + SETTLE_TICKS)
    assert harness.reloads == 1


def test_stopping_stops_the_tick_and_closes_the_notifier(plain: Harness) -> None:
    states = [plain.watcher.state]
    plain.watcher.stopService()
    states.append(plain.watcher.state)
    assert states == [Watch.WATCHING, Watch.STOPPED]
    assert not plain.notifier.connected
    assert plain.clock.getDelayedCalls() == []


def test_events_for_any_of_several_watched_files_mark_it_dirty(
    tmp_path: Path,
) -> None:
    writer = AtomicWriter(tmp_path)
    writer.write({"tls.crt": b"c", "tls.key": b"k"})
    reloads: list[None] = []
    clock = Clock()
    notifier = FakeNotifier()
    watcher = Watcher(
        Reader(tmp_path, files=["tls.crt", "tls.key"]),
        lambda: reloads.append(None),
        clock,
        TICK,
        lambda: notifier,
    )
    watcher.startService()
    clock.advance(TICK)
    reloads.clear()
    notifier.event("other", IN_CLOSE_WRITE)
    clock.advance(TICK)
    assert reloads == []
    notifier.event("tls.key", IN_ATTRIB)
    clock.advance(TICK)
    assert len(reloads) == 1
    watcher.stopService()


def test_file_still_open_for_writing_is_not_read_until_closed(
    plain: Harness,
) -> None:
    path = plain.directory / "config.yaml"
    with path.open("wb") as f:
        f.write(b"message: new value that is lon")
        f.flush()
        plain.notifier.event("config.yaml", IN_MODIFY)
        # The writer pauses for most of the settle time; other events on
        # the file do not make it whole.
        plain.notifier.event("config.yaml", IN_ATTRIB)
        plain.tick(SETTLE_TICKS - 2)
        assert plain.reloads == 0
        f.write(b"ger than one write\n")
        plain.notifier.event("config.yaml", IN_MODIFY)
    plain.notifier.event("config.yaml", IN_CLOSE_WRITE)
    plain.tick()
    assert plain.read == [b"message: new value that is longer than one write\n"]


def test_writer_that_never_closes_is_read_once_still_for_the_settle_time(
    plain: Harness,
) -> None:
    path = plain.directory / "config.yaml"
    with path.open("wb") as f:
        f.write(b"message: two\n")
        f.flush()
        plain.notifier.event("config.yaml", IN_MODIFY)
        plain.tick(SETTLE_TICKS - 2)
        assert plain.reloads == 0
        plain.tick(2)
        assert plain.read == [b"message: two\n"]


def test_writer_pausing_through_the_configmap_link_is_not_read_half_way(
    configmap: tuple[Harness, AtomicWriter],
) -> None:
    harness, _ = configmap
    # The write lands in the ..data target directory, which is not
    # watched: no event comes, only the tick's stat check sees it.
    with (harness.directory / "config.yaml").open("r+b") as f:
        f.truncate()
        f.write(b"message: new value that is lon")
        f.flush()
        harness.tick(SETTLE_TICKS - 2)
        assert harness.reloads == 0
        f.write(b"ger than one write\n")
    harness.tick(SETTLE_TICKS - 2)
    assert harness.reloads == 0
    harness.tick(2)
    assert harness.read == [b"message: new value that is longer than one write\n"]


def test_kubelet_swap_is_read_at_once_even_while_a_file_is_written(
    configmap: tuple[Harness, AtomicWriter],
) -> None:
    harness, writer = configmap
    harness.notifier.event("config.yaml", IN_MODIFY)
    writer.write({"config.yaml": b"message: two\n"})
    harness.notifier.event("..data", IN_MOVED_TO)
    assert harness.read == [b"message: two\n"]


def test_writer_caught_half_way_at_start_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: one\n")
    reader = Reader(path)
    served = reader.fingerprint()
    read: list[bytes] = []
    clock = Clock()
    notifier = FakeNotifier()
    watcher = Watcher(
        reader,
        lambda: read.append(path.read_bytes()),
        clock,
        TICK,
        lambda: notifier,
        served=lambda: served,
    )
    with path.open("wb") as f:
        f.write(b"message: new value that is lon")
        f.flush()
        # The writer began before the watch: no event will say so.
        watcher.startService()
        for _ in range(SETTLE_TICKS - 2):
            clock.advance(TICK)
        assert read == []
        f.write(b"ger than one write\n")
    for _ in range(SETTLE_TICKS):
        clock.advance(TICK)
    assert read == [b"message: new value that is longer than one write\n"]
    watcher.stopService()


def test_unchanged_file_is_not_read_again_at_start_when_its_version_is_known(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: one\n")
    reader = Reader(path)
    served = reader.fingerprint()
    reloads: list[None] = []
    clock = Clock()
    watcher = Watcher(
        reader,
        lambda: reloads.append(None),
        clock,
        TICK,
        FakeNotifier,
        served=lambda: served,
    )
    watcher.startService()
    for _ in range(50):
        clock.advance(TICK)
    assert reloads == []
    watcher.stopService()


def test_write_begun_after_the_close_event_waits_for_its_own_events(
    plain: Harness,
) -> None:
    path = plain.directory / "config.yaml"
    path.write_bytes(b"message: two\n")
    plain.notifier.event("config.yaml", IN_CLOSE_WRITE)
    # The next writer is at work before its events are handled.
    with path.open("wb") as f:
        f.write(b"message: new value that is lon")
        f.flush()
        plain.tick()
        assert plain.reloads == 0
        plain.notifier.event("config.yaml", IN_MODIFY)
        plain.tick(3)
        assert plain.reloads == 0
        f.write(b"ger than one write\n")
        plain.notifier.event("config.yaml", IN_MODIFY)
    plain.notifier.event("config.yaml", IN_CLOSE_WRITE)
    plain.tick()
    assert plain.read == [b"message: new value that is longer than one write\n"]
