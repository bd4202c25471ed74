"""
File-system faults: the last good config keeps serving, each fault is
logged, and the service recovers by itself when the fault clears.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.logger import LogLevel
from twisted.python.filepath import FilePath

from tests.bad_configs import good
from tests.support import (
    CONFIG_NAME,
    FAILURES,
    LAST_SUCCESSFUL,
    InProcessService,
    TwistdServer,
    captured_log,
    http,
    result_of,
    until,
    wait_for,
)
from twisted_demo.config import parse_message
from twisted_demo.live import LiveConfigService, Outcome, Updated, inline
from twisted_demo.live._reader import DATA_DIR_NAME
from twisted_demo.live._watcher import (
    REARM_INTERVAL,
    SETTLE,
    Notifier,
)
from twisted_demo.tap import Options, makeService
from twisted_demo.testing import AtomicWriter, write_in_place

TICK = 0.02

#: pytest-twisted's decorator, typed: run an async test on the reactor.
on_reactor: Callable[[Callable[..., Coroutine[Any, Any, None]]], Callable[..., Any]] = (
    pytest_twisted.ensureDeferred
)

Start = Callable[[Path], InProcessService]


@pytest.fixture
def watched() -> Iterator[Start]:
    """
    Start the service on a path on the test reactor, watched with inotify
    as in production; every service started is stopped after the test.
    """
    started: list[InProcessService] = []

    def start(path: Path) -> InProcessService:
        service = InProcessService(path, clock=reactor, tick=TICK)
        result_of(service.live.reload())
        assert service.live.current is not None
        started.append(service)
        service.live.startService()
        assert service.live.watching
        return service

    try:
        yield start
    finally:
        for service in started:
            service.live.stopService()


def _serves(service: InProcessService, message: str) -> bool:
    reply = service.get("/")
    return reply.status == 200 and reply.text == message


def _still_serving_hello_world(service: InProcessService) -> None:
    assert _serves(service, "Hello World")
    assert service.get("/readyz").status == 200


def _failure_lines(logged: list[str]) -> list[str]:
    return [line for line in logged if line.startswith("Config reload failed")]


async def _fails_with(service: InProcessService, error: str) -> None:
    await until(
        reactor,
        lambda: service.live.last_error == error,
        f"last_error to become {error!r} (it is {service.live.last_error!r})",
    )


@on_reactor
async def test_deleted_file_keeps_last_good_config_until_it_returns(
    configmap: AtomicWriter, watched: Start
) -> None:
    path = configmap.target_dir / CONFIG_NAME
    service = watched(path)
    error = f"{path}: cannot read: No such file or directory"
    with captured_log() as log:
        path.unlink()
        await _fails_with(service, error)
        _still_serving_hello_world(service)
        assert service.config()["last_error"] == error
        assert service.metric(LAST_SUCCESSFUL) == 0

        configmap.write({CONFIG_NAME: b"message: Back again\n"})
        await until(reactor, lambda: _serves(service, "Back again"), "the new file")
    assert _failure_lines(log.messages(at_least=LogLevel.warn)) == [
        f"Config reload failed, still serving the last good config: {error}"
    ]
    assert service.config()["last_error"] is None
    assert service.metric(LAST_SUCCESSFUL) == 1


@on_reactor
async def test_deleted_directory_keeps_last_good_config_and_is_watched_again_when_recreated(  # noqa: E501
    configmap: AtomicWriter, watched: Start
) -> None:
    path = configmap.target_dir / CONFIG_NAME
    service = watched(path)
    with captured_log() as log:
        shutil.rmtree(configmap.target_dir)
        await until(
            reactor,
            lambda: any("is gone" in line for line in log.messages()),
            "the watcher to notice the directory is gone",
        )
        await _fails_with(service, f"{path}: cannot read: No such file or directory")
        _still_serving_hello_world(service)

        AtomicWriter(configmap.target_dir).write({CONFIG_NAME: b"message: Returned\n"})
        await until(reactor, lambda: _serves(service, "Returned"), "the new directory")
        await until(
            reactor,
            lambda: any("with inotify again" in line for line in log.messages()),
            "the watcher to watch the new directory",
        )
    assert (
        f"Config directory {configmap.target_dir} is gone; serving the last good "
        "config until it is back"
    ) in log.messages()
    assert service.config()["last_error"] is None

    # The new directory is really watched: the next update arrives too.
    configmap.write({CONFIG_NAME: b"message: And again\n"})
    await until(reactor, lambda: _serves(service, "And again"), "a later update")


@on_reactor
async def test_config_path_that_is_a_directory_is_refused_until_it_is_a_file(
    tmp_path: Path, watched: Start
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: Hello World\n")
    service = watched(path)
    error = f"{path}: cannot read: not a regular file (a directory)"
    with captured_log() as log:
        path.unlink()
        path.mkdir()
        await _fails_with(service, error)
        _still_serving_hello_world(service)
        path.rmdir()
        write_in_place(path, b"message: A file again\n")
        await until(reactor, lambda: _serves(service, "A file again"), "the file")
    [failure] = _failure_lines(log.messages(at_least=LogLevel.warn))
    assert error in failure


@on_reactor
async def test_symlink_loop_is_refused_until_the_link_is_fixed(
    tmp_path: Path, watched: Start
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: Hello World\n")
    service = watched(path)
    error = f"{path}: cannot read: Too many levels of symbolic links"
    with captured_log() as log:
        path.unlink()
        os.symlink("loop.yaml", path)
        os.symlink("config.yaml", tmp_path / "loop.yaml")
        await _fails_with(service, error)
        _still_serving_hello_world(service)
        path.unlink()
        write_in_place(path, b"message: Unlooped\n")
        await until(reactor, lambda: _serves(service, "Unlooped"), "the fixed link")
    [failure] = _failure_lines(log.messages(at_least=LogLevel.warn))
    assert error in failure


@on_reactor
async def test_data_link_to_a_missing_directory_is_refused_until_it_points_back(
    configmap: AtomicWriter, watched: Start
) -> None:
    path = configmap.target_dir / CONFIG_NAME
    service = watched(path)
    data = configmap.target_dir / DATA_DIR_NAME
    generation = os.readlink(data)
    error = f"{path}: cannot read: No such file or directory"

    def point_data_at(target: str) -> None:
        # As the kubelet does: a new link renamed over ..data.
        tmp = configmap.target_dir / "..data_tmp"
        os.symlink(target, tmp)
        os.rename(tmp, data)

    with captured_log() as log:
        point_data_at("..2026_01_01_00_00_00.000000000")
        await _fails_with(service, error)
        _still_serving_hello_world(service)
        failures = service.metric(FAILURES)
        point_data_at(generation)
        await until(
            reactor,
            lambda: service.live.last_error is None,
            "the error to clear when ..data points back",
        )
    assert _failure_lines(log.messages()) == [
        f"Config reload failed, still serving the last good config: {error}"
    ]
    assert any(line.endswith("last error cleared") for line in log.messages())
    assert service.metric(LAST_SUCCESSFUL) == 1
    assert service.metric(FAILURES) == failures
    configmap.write({CONFIG_NAME: b"message: Updated\n"})
    await until(reactor, lambda: _serves(service, "Updated"), "the next update")


class _FakeNotifier:
    """
    A notifier that can fail to watch, or watch and never report an event,
    as inotify does when its queue overflows.
    """

    def __init__(self, watch_error: Exception | None = None) -> None:
        self.connected = 1
        self.watch_error = watch_error
        self.watched: list[FilePath[bytes]] = []

    def watch(self, path: FilePath[bytes], *args: Any, **kwargs: Any) -> int:
        if self.watch_error is not None:
            raise self.watch_error
        self.watched.append(path)
        return 1

    def loseConnection(self) -> None:
        self.connected = 0


def _clocked(
    tmp_path: Path,
    message: str,
    notifier_factory: Callable[[], Notifier] | None = None,
) -> tuple[Path, Clock, InProcessService]:
    """
    The service on a L{Clock}, whose watcher's notifiers C{notifier_factory}
    makes (by default none: a L{Clock} has no inotify), with C{message}
    loaded.
    """
    path = tmp_path / "config.yaml"
    path.write_bytes(good(message))
    clock = Clock()
    service = InProcessService(
        path, clock=clock, tick=TICK, notifier_factory=notifier_factory
    )
    result_of(service.live.reload())
    return path, clock, service


def _ticks(clock: Clock, count: int) -> None:
    for _ in range(count):
        clock.advance(TICK)


class _InitError(Exception):
    """
    What Twisted's C{INotify()} raises when C{inotify_init} fails.
    """


_INOTIFY_FAULTS: dict[str, tuple[Callable[[], Notifier], str]] = {
    # inotify_add_watch fails with ENOSPC once fs.inotify.max_user_watches
    # is reached.
    "watch_limit_reached": (
        lambda: _FakeNotifier(OSError(errno.ENOSPC, "No space left on device")),
        "[Errno 28] No space left on device",
    ),
    # inotify_init fails once fs.inotify.max_user_instances is reached.
    "instance_limit_reached": (
        lambda: (_ for _ in ()).throw(_InitError("INotify initialization error.")),
        "INotify initialization error.",
    ),
}


@pytest.mark.parametrize("fault", sorted(_INOTIFY_FAULTS))
def test_inotify_failure_falls_back_to_polling_and_rearms_when_it_clears(
    tmp_path: Path, fault: str
) -> None:
    failing, error = _INOTIFY_FAULTS[fault]
    working = _FakeNotifier()
    factory: list[Callable[[], Notifier]] = [failing]
    path, clock, service = _clocked(tmp_path, "one", lambda: factory[0]())
    with captured_log() as log:
        service.live.startService()
        try:
            assert not service.live.watching
            write_in_place(path, good("polled change"))
            # No event says the writer is done: read once still for SETTLE.
            _ticks(clock, round(SETTLE / TICK) + 2)
            assert _serves(service, "polled change")

            factory[0] = lambda: working
            clock.advance(REARM_INTERVAL)
            assert service.live.watching
        finally:
            service.live.stopService()
    assert (
        f"Cannot watch {tmp_path} with inotify ({error}); checking {path} "
        f"every {TICK}s instead"
    ) in log.messages()
    assert f"Watching {tmp_path} with inotify again" in log.messages(
        at_least=LogLevel.info
    )
    assert working.watched == [FilePath(os.fsencode(tmp_path))]


def test_no_inotify_at_all_polls_and_says_so(tmp_path: Path) -> None:
    path, clock, service = _clocked(tmp_path, "one")
    with captured_log() as log:
        service.live.startService()
        try:
            write_in_place(path, good("polled change"))
            # No event says the writer is done: read once still for SETTLE.
            _ticks(clock, round(SETTLE / TICK) + 2)
            assert _serves(service, "polled change")
        finally:
            service.live.stopService()
    assert log.messages(at_least=LogLevel.warn) == [
        f"inotify is not available here; checking {path} every {TICK}s"
    ]


def test_events_lost_to_queue_overflow_are_caught_by_the_tick(tmp_path: Path) -> None:
    # Twisted drops IN_Q_OVERFLOW without telling anyone; a notifier that
    # reports nothing at all is the worst case of it.
    deaf = _FakeNotifier()
    path, clock, service = _clocked(tmp_path, "one", lambda: deaf)
    service.live.startService()
    try:
        _ticks(clock, 1)
        assert service.live.watching
        reloads = service.metric("configmapdemo_config_reloads_total")
        write_in_place(path, good("changed while events were dropped"))
        # No event says the writer is done: read once still for SETTLE.
        _ticks(clock, 2)
        assert not _serves(service, "changed while events were dropped")
        _ticks(clock, round(SETTLE / TICK))
        assert _serves(service, "changed while events were dropped")
        assert service.metric("configmapdemo_config_reloads_total") == reloads + 1
        assert service.live.watching
    finally:
        service.live.stopService()


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    """
    A directory an unprivileged user can read: pytest's own are private.
    """
    directory = Path(tempfile.mkdtemp(prefix="configmapdemo-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


def test_permission_denied_keeps_last_good_config_until_access_returns(
    world_readable_dir: Path,
) -> None:
    # As root nothing is denied, so twistd runs as nobody.
    path = world_readable_dir / "config.yaml"
    path.write_bytes(b"message: Hello World\n")
    path.chmod(0o644)
    server = TwistdServer(
        path,
        ["--tick", "0.05"],
        wrapper=["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"],
    )
    try:
        server.wait_ready()
        error = f"{path}: cannot read: Permission denied"
        path.chmod(0o000)
        wait_for(
            lambda: server.get("/config").text.count(error) == 1,
            "the reload to be denied",
        )
        assert server.get("/").body == b"Hello World"
        assert server.get("/readyz").status == 200
        path.chmod(0o644)
        wait_for(
            lambda: '"last_error": null' in server.get("/config").text,
            "the error to clear",
        )
        assert http(server.url + "/").body == b"Hello World"
        assert server.output.count(f"still serving the last good config: {error}") == 1
        assert "Traceback" not in server.output
    finally:
        server.close()


@on_reactor
async def test_configmap_update_arrives_through_inotify_not_only_the_tick(
    configmap: AtomicWriter,
) -> None:
    # With a tick far longer than the test, only an inotify event can
    # trigger the reload: the kubelet's rename of ..data reloads at once.
    path = configmap.target_dir / CONFIG_NAME
    service = InProcessService(path, clock=reactor, tick=3600)
    result_of(service.live.reload())
    service.live.startService()
    try:
        configmap.write({CONFIG_NAME: b"message: Via inotify\n"})
        await until(reactor, lambda: _serves(service, "Via inotify"), "the event")
    finally:
        service.live.stopService()


@contextmanager
def _unblocked_after_a_while(fifo: Path) -> Iterator[None]:
    """
    Should a read of C{fifo} block (as it did before the service refused
    FIFOs), open its other end after a while and feed it a config, so that
    the test fails on what is served rather than hanging.  A safety net,
    never what the test waits for.
    """

    def unblock() -> None:
        try:
            # O_RDWR never blocks on a FIFO, and counts as its writer.
            fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        except OSError:
            return
        try:
            os.write(fd, good("read from a FIFO"))
        finally:
            os.close(fd)

    timer = threading.Timer(10.0, unblock)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _make_special(path: Path, kind: str) -> None:
    """
    Put a file of C{kind} at C{path}.
    """
    if kind == "FIFO":
        os.mkfifo(path)
    elif kind == "socket":
        listening = socket.socket(socket.AF_UNIX)
        listening.bind(str(path))
        listening.close()
    else:
        path.symlink_to("/dev/zero")


@pytest.mark.parametrize(
    ("kind", "called"),
    [("FIFO", "a FIFO"), ("socket", "a socket"), ("device", "a character device")],
)
@on_reactor
async def test_special_file_at_the_config_path_is_refused_without_blocking(
    tmp_path: Path, watched: Start, kind: str, called: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(good("Hello World"))
    service = watched(path)
    error = f"{path}: cannot read: not a regular file ({called})"
    with _unblocked_after_a_while(path), captured_log():
        path.unlink()
        _make_special(path, kind)
        await _fails_with(service, error)
        _still_serving_hello_world(service)
        assert service.metric(LAST_SUCCESSFUL) == 0
        path.unlink()
        write_in_place(path, good("A file again"))
        await until(reactor, lambda: _serves(service, "A file again"), "the file")


@on_reactor
async def test_configmap_generation_whose_file_is_a_fifo_is_refused_without_blocking(
    configmap: AtomicWriter, watched: Start
) -> None:
    path = configmap.target_dir / CONFIG_NAME
    service = watched(path)
    generation = configmap.target_dir / "..2026_12_01_00_00_00.000000001"
    generation.mkdir()
    fifo = generation / CONFIG_NAME
    os.mkfifo(fifo)
    with _unblocked_after_a_while(fifo), captured_log():
        link = configmap.target_dir / "..data_tmp"
        link.symlink_to(generation.name)
        os.rename(link, configmap.target_dir / DATA_DIR_NAME)
        await _fails_with(service, f"{path}: cannot read: not a regular file (a FIFO)")
        _still_serving_hello_world(service)
    configmap.write({CONFIG_NAME: good("after the FIFO")})
    await until(reactor, lambda: _serves(service, "after the FIFO"), "the update")


def test_fifo_as_config_at_start_up_is_refused_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    os.mkfifo(path)
    options = Options()
    options.parseOptions(["--config", str(path)])
    with _unblocked_after_a_while(path), pytest.raises(SystemExit) as exited:
        makeService(options)
    assert exited.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        f"configmapdemo: error: {path}: cannot read: not a regular file (a FIFO)"
    ]


@on_reactor
async def test_writer_that_pauses_half_way_is_not_served_until_it_closes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(good("Hello World"))
    # A settle time of an hour: only the writer's close may make it read.
    live = LiveConfigService(
        path, parse_message, reactor=reactor, runner=inline, tick=TICK, settle=3600
    )
    live.load_blocking()
    outcomes: list[Outcome[str]] = []
    live.observe(outcomes.append)
    with captured_log():
        live.startService()
    try:
        assert live.watching
        with path.open("wb") as writer:
            writer.write(b"message: new value that is lon")
            writer.flush()
            # Once the ticks have seen the half-written file for a while,
            # its events have been handled too.
            await until(reactor, lambda: live.drift >= 5 * TICK, "ticks to see it")
            assert outcomes == []
            assert live.current is not None
            assert live.current.value == "Hello World"
            writer.write(b"ger than one write\n")
        await until(reactor, lambda: bool(outcomes), "the file to be read")
        assert [o.new.value for o in outcomes if isinstance(o, Updated)] == [
            "new value that is longer than one write"
        ]
        assert live.drift == 0
    finally:
        await live.stopService()


def test_metrics_stay_valid_when_the_config_path_is_not_utf8(tmp_path: Path) -> None:
    # A directory name in Latin-1, as an old system may hold: not UTF-8.
    directory = tmp_path / os.fsdecode(b"caf\xe9")
    directory.mkdir()
    path = directory / CONFIG_NAME
    path.write_bytes(good("Hello"))
    server = TwistdServer(path)
    try:
        server.wait_ready()
        scrapes = [server.get("/metrics") for _ in range(2)]
        config = server.get("/config")
        server.stop()
        output = server.output
    finally:
        server.close()
    for scrape in scrapes:
        assert scrape.status == 200
        assert (
            scrape.text.splitlines().count(
                "configmapdemo_config_last_reload_successful 1.0"
            )
            == 1
        )
        [info] = [
            line
            for line in scrape.text.splitlines()
            if line.startswith("configmapdemo_config_info{")
        ]
        # The byte that is not UTF-8 is shown escaped, never dropped.
        assert "caf\\\\xe9" in info
    assert config.status == 200
    # The same in /config: no lone surrogate, which strict JSON parsers
    # refuse, but the byte as the metrics show it.
    assert "\\ud" not in config.text
    assert json.loads(config.text)["source"] == f"{tmp_path}/caf\\xe9/{CONFIG_NAME}"
    assert "Traceback" not in output
