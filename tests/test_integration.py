"""
The live config service and the web app together, on the real reactor with
real inotify and the parser process, updated the ways the kubelet and
editors update files.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest_twisted
import treq
from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import IListeningPort

from tests.support import CONFIG_NAME, DEADLINE, captured_log, until
from twisted_demo.config import parse_message
from twisted_demo.live import LiveConfigService, Outcome, Updated
from twisted_demo.server import make_site
from twisted_demo.tap import demo_resource
from twisted_demo.testing import AtomicWriter, write_by_rename, write_in_place

TICK = 0.05
reactor: Any = _reactor


class Running:
    """
    The service's parts running on the test reactor.
    """

    def __init__(self, path: Path, tick: float = TICK) -> None:
        self.path = path
        # Parsing in the parser process, as the service does by default.
        self.live = LiveConfigService(path, parse_message, reactor=reactor, tick=tick)
        site = make_site(demo_resource(self.live))
        self.outcomes: list[Outcome[str]] = []
        self.live.observe(self.outcomes.append)
        self.port: IListeningPort = reactor.listenTCP(0, site, interface="127.0.0.1")
        address = cast(IPv4Address, self.port.getHost())
        self.url = f"http://127.0.0.1:{address.port}/"
        self.live.startService()

    @classmethod
    async def started(cls, path: Path, tick: float = TICK) -> Running:
        """
        Start the parts on C{path} and wait until the first config is loaded
        and inotify watches it.
        """
        running = cls(path, tick)
        await running.live.when_loaded()
        await until(reactor, lambda: running.live.watching, "the watch")
        return running

    @property
    def updates(self) -> int:
        return sum(
            isinstance(outcome, Updated) and outcome.old is not None
            for outcome in self.outcomes
        )

    async def served(self) -> str:
        response = await treq.get(self.url, persistent=False)
        text: str = await response.text("utf-8")
        return text

    async def wait_served(self, message: str) -> None:
        """
        Make requests until one is answered with C{message}.
        """
        deadline = time.monotonic() + DEADLINE
        while (served := await self.served()) != message:
            if time.monotonic() > deadline:
                raise AssertionError(f"still serving {served!r}, not {message!r}")

    async def settle(self) -> None:
        """
        Wait until the watcher is idle: one more reload, queued behind any
        that events already asked for, has finished.
        """
        await until(reactor, lambda: self.live.watching, "the watcher to be armed")
        await self.live.reload()

    async def stop(self) -> None:
        await maybeDeferred(self.port.stopListening)
        await maybeDeferred(self.live.stopService)


@pytest_twisted.async_yield_fixture
async def configmap_service(configmap: AtomicWriter) -> AsyncIterator[Running]:
    running = await Running.started(configmap.target_dir / CONFIG_NAME)
    yield running
    await running.stop()


@pytest_twisted.async_yield_fixture
async def plain_service(tmp_path: Path) -> AsyncIterator[Running]:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: Hello World\n")
    running = await Running.started(path)
    yield running
    await running.stop()


@pytest_twisted.ensureDeferred
async def test_served_message_follows_kubelet_updates_one_reload_each(
    configmap_service: Running, configmap: AtomicWriter
) -> None:
    assert await configmap_service.served() == "Hello World"
    versions = [
        # A key added beside the config, then removed again.
        {CONFIG_NAME: b"message: two\n", "extra.yaml": b"x: 1\n"},
        {CONFIG_NAME: b"message: three\n"},
        {CONFIG_NAME: b"message: four\n", "extra.yaml": b"x: 2\n"},
    ]
    with captured_log() as log:
        for number, payload in enumerate(versions, start=1):
            configmap.write(payload)
            message = payload[CONFIG_NAME].decode().split(": ")[1].strip()
            await configmap_service.wait_served(message)
            await configmap_service.settle()
            assert configmap_service.updates == number
    updated = [m for m in log.messages() if m.startswith("Config file updated")]
    assert len(updated) == len(versions)
    assert sorted(os.listdir(configmap.target_dir))[-2:] == [CONFIG_NAME, "extra.yaml"]


@pytest_twisted.ensureDeferred
async def test_config_key_removed_then_restored_by_the_kubelet(
    configmap_service: Running, configmap: AtomicWriter
) -> None:
    configmap.write({"other.yaml": b"x: 1\n"})
    await configmap_service.settle()
    assert await configmap_service.served() == "Hello World"
    assert configmap_service.live.last_error is not None
    configmap.write({CONFIG_NAME: b"message: restored\n"})
    await configmap_service.wait_served("restored")
    assert configmap_service.live.last_error is None


@pytest_twisted.ensureDeferred
async def test_in_place_write_is_served(plain_service: Running) -> None:
    write_in_place(plain_service.path, b"message: written in place\n")
    await plain_service.wait_served("written in place")
    await plain_service.settle()
    assert plain_service.updates == 1


@pytest_twisted.ensureDeferred
async def test_rename_save_is_served(plain_service: Running) -> None:
    write_by_rename(plain_service.path, b"message: saved by an editor\n")
    await plain_service.wait_served("saved by an editor")
    await plain_service.settle()
    assert plain_service.updates == 1


@pytest_twisted.ensureDeferred
async def test_edit_through_the_configmap_symlink_is_served(
    configmap_service: Running,
) -> None:
    write_in_place(configmap_service.path, b"message: edited through the link\n")
    await configmap_service.wait_served("edited through the link")
    await configmap_service.settle()
    assert configmap_service.updates == 1


@pytest_twisted.ensureDeferred
async def test_broken_update_keeps_serving_the_last_good_config(
    configmap_service: Running, configmap: AtomicWriter
) -> None:
    configmap.write({CONFIG_NAME: b"message: [broken\n"})
    await until(
        reactor,
        lambda: configmap_service.live.last_error is not None,
        "the broken update to be refused",
    )
    assert await configmap_service.served() == "Hello World"
    configmap.write({CONFIG_NAME: b"message: fixed\n"})
    await configmap_service.wait_served("fixed")


@pytest_twisted.ensureDeferred
async def test_kubelet_update_is_served_from_the_inotify_event_alone(
    configmap: AtomicWriter,
) -> None:
    # A tick longer than any test: only the inotify event of the ..data
    # rename can make the new message appear.
    running = await Running.started(configmap.target_dir / CONFIG_NAME, tick=3600)
    try:
        configmap.write({CONFIG_NAME: b"message: from inotify\n"})
        await running.wait_served("from inotify")
        assert running.updates == 1
    finally:
        await running.stop()
