"""
The store: one-step replacement and subscribers.
"""

from __future__ import annotations

from twisted.logger import LogLevel

from tests.support import captured_log
from twisted_demo.config import Config, parse_config
from twisted_demo.store import ConfigStore


def _config(message: str) -> Config:
    return parse_config(
        f"message: {message}\n".encode(), source="c.yaml", loaded_at=0.0
    )


def test_replace_swaps_and_returns_the_old_config() -> None:
    old, new = _config("old"), _config("new")
    store = ConfigStore(old)
    assert store.replace(new) is old
    assert store.current is new


def test_subscribers_are_told_old_and_new_after_the_swap() -> None:
    store = ConfigStore(_config("old"))
    seen: list[tuple[Config | None, Config, Config | None]] = []
    store.subscribe(lambda old, new: seen.append((old, new, store.current)))
    old, new = store.current, _config("new")
    store.replace(new)
    assert seen == [(old, new, new)]


def test_failing_subscriber_is_logged_and_others_still_run() -> None:
    store = ConfigStore(_config("old"))
    told: list[str] = []

    def broken(old: Config | None, new: Config) -> None:
        raise RuntimeError("subscriber bug")

    store.subscribe(broken)
    store.subscribe(lambda old, new: told.append(new.message))
    with captured_log() as log:
        store.replace(_config("new"))
    assert store.current is not None and store.current.message == "new"
    assert told == ["new"]
    [failure] = log.messages(LogLevel.critical)
    assert "subscriber bug" in failure
