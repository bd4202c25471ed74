"""
A second app built with nothing but C{twisted_demo.live}'s public names: a
schema of its own (no C{message}), two files of one ConfigMap, subscribers
and C{when_loaded}, driven by the kubelet's writer on the real reactor,
with parsing in the parser process.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.task import deferLater

from tests.settings_schema import Settings, parse_settings, payload
from tests.support import until
from twisted_demo.live import Failed, LiveConfigService, Loaded, Outcome
from twisted_demo.testing import AtomicWriter

reactor: Any = _reactor

_ROOT = Path(__file__).resolve().parent.parent


@pytest_twisted.async_yield_fixture
async def settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[LiveConfigService[Settings], AtomicWriter]]:
    # The parser process imports parse_settings from this checkout's tests.
    monkeypatch.setenv("PYTHONPATH", str(_ROOT))
    writer = AtomicWriter(tmp_path / "settings")
    writer.write(payload(1))
    live = LiveConfigService(
        writer.target_dir,
        parse_settings,
        files=["features.yaml", "limits.yaml"],
        reactor=reactor,
        tick=0.05,
    )
    live.startService()
    try:
        yield live, writer
    finally:
        await live.stopService()


@pytest_twisted.ensureDeferred
async def test_second_app_follows_two_files_of_one_generation(
    settings: tuple[LiveConfigService[Settings], AtomicWriter],
) -> None:
    live, writer = settings
    swaps: list[tuple[int | None, int]] = []
    outcomes: list[Outcome[Settings]] = []

    def swapped(old: Loaded[Settings] | None, new: Loaded[Settings]) -> None:
        swaps.append((None if old is None else old.value.serial, new.value.serial))

    live.subscribe(swapped)
    live.observe(outcomes.append)

    first = await live.when_loaded()
    assert first is live.current
    assert (first.value.serial, first.value.rps) == (1, 100)
    assert first.value.features == {"search", "f1"}
    assert first.generation == os.readlink(writer.target_dir / "..data")
    assert first.path == str(writer.target_dir)
    # Parsed in the parser process, from the user's own module.
    assert first.value.parsed_by != os.getpid()
    await until(reactor, lambda: live.watching, "the watch")

    # Updates land one reactor turn apart, while reloads are under way:
    # every version served must be one whole update, never two halves.
    for serial in range(2, 12):
        writer.write(payload(serial))
        await deferLater(reactor, 0, lambda: None)
    await until(
        reactor,
        lambda: live.current is not None and live.current.value.serial == 11,
        "the last update to be served",
    )
    assert not [o for o in outcomes if isinstance(o, Failed)]
    serials = [new for _, new in swaps]
    assert serials == sorted(serials) and serials[-1] == 11
    # Each swap starts from the version the one before swapped in.
    assert all(old == new for (_, new), (old, _) in itertools.pairwise(swaps))
    assert live.generation == os.readlink(writer.target_dir / "..data")


@pytest_twisted.ensureDeferred
async def test_second_app_refuses_a_bad_update_and_keeps_the_last_good(
    settings: tuple[LiveConfigService[Settings], AtomicWriter],
) -> None:
    live, writer = settings
    good = await live.when_loaded()
    writer.write(payload(2, rps=0))
    outcome = await live.reload()
    assert isinstance(outcome, Failed)
    assert outcome.error == (
        f"{writer.target_dir}: limits.yaml: rps must be a whole number above 0, got 0"
    )
    assert live.current is good and live.last_error == outcome.error
    writer.write(payload(3))
    await until(
        reactor,
        lambda: live.current is not None and live.current.value.serial == 3,
        "the good update to be served",
    )
    assert live.last_error is None
