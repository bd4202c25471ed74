"""
Properties over random histories: whatever sequence of good configs, bad
bytes, deletions, ConfigMap updates and in-place writes a real
C{twistd configmapdemo} sees, it always answers with a good message and
ends up serving the last good one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.bad_configs import BAD_CONTENT, good
from tests.support import CONFIG_NAME, TwistdServer, wait_for
from twisted_demo.config import parse_message
from twisted_demo.live import ConfigError
from twisted_demo.testing import AtomicWriter, write_in_place


class World:
    """
    A running server over a ConfigMap volume, and a model of what the
    volume holds: C{content} is what reading the config path gives, or
    L{None} while the key's link is deleted.
    """

    def __init__(self, directory: Path) -> None:
        self.writer = AtomicWriter(directory)
        self.content: bytes | None = good("Hello World")
        self.writer.write({CONFIG_NAME: self.content})
        self.path = directory / CONFIG_NAME
        self.good_messages = {"Hello World"}
        self.last_good = "Hello World"
        self.server = TwistdServer(self.path, ["--tick", "0.02"])

    def apply(self, op: tuple[str, bytes]) -> None:
        kind, content = op
        if kind == "atomic":
            # The kubelet's update; it also brings back a deleted key link.
            self.writer.write({CONFIG_NAME: content})
            self.content = content
        elif kind == "in_place":
            if self.content is None or self.content == content:
                # Nothing at the path to write through; or the same bytes,
                # which would leave nothing to wait for, so that the next
                # write could land in the same file-system timestamp tick
                # with the same size: see docs/reliability.md.
                return
            write_in_place(self.path, content)
            self.content = content
        elif kind == "delete":
            if self.content is None:
                return
            os.unlink(self.path)
            self.content = None
        else:  # pragma: no cover - the strategy makes no other kind
            raise AssertionError(kind)

    def expected(self) -> tuple[str | None, str | None]:
        """
        The sha256 the server must settle on serving (L{None}: unchanged)
        and the C{last_error} it must settle on.
        """
        if self.content is None:
            return None, f"{self.path}: cannot read: No such file or directory"
        try:
            message = parse_message(self.content)
        except ConfigError as e:
            # The path first, then the reason: after a space when the
            # reason starts with its place in the file, else after a colon.
            located = re.match(r"line \d+, column \d+: ", str(e))
            return None, f"{self.path}{' ' if located else ': '}{e}"
        self.good_messages.add(message)
        self.last_good = message
        return hashlib.sha256(self.content).hexdigest(), None

    def settled(self, sha256: str | None, error: str | None) -> bool:
        """
        Ask the server once; every answer must be a good message.
        """
        message = self.server.get("/")
        assert message.status == 200
        assert message.text in self.good_messages
        config: dict[str, Any] = json.loads(self.server.get("/config").body)
        if config["last_error"] != error:
            return False
        return sha256 is None or config["sha256"] == sha256


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """
    One server for all the examples of a test: each example goes on from
    the state the one before it left, which the model tracks.
    """
    running = World(tmp_path / "config")
    try:
        running.server.wait_ready()
        yield running
    finally:
        running.server.close()


_messages = st.text("abcdefghijklmnopqrstuvwxyz ", min_size=1, max_size=12).map(
    str.strip
)
_contents = st.one_of(
    _messages.filter(bool).map(good),
    st.sampled_from(
        [
            BAD_CONTENT[name].content
            for name in (
                "invalid_yaml_syntax",
                "empty_file",
                "message_missing",
                "invalid_utf8",
                "nul_byte",
                "alias_bomb",
                "duplicate_keys",
                "deep_nesting",
            )
        ]
    ),
)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("atomic"), _contents),
        st.tuples(st.just("in_place"), _contents),
        st.tuples(st.just("delete"), st.just(b"")),
    ),
    min_size=1,
    max_size=6,
)


def _settle(world: World, what: str) -> None:
    sha256, error = world.expected()
    wait_for(
        lambda: world.settled(sha256, error),
        f"the server to settle after {what} (expecting error {error!r})",
    )


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=_ops)
def test_any_history_serves_only_good_messages_and_settles_on_the_last_good_one(
    world: World, ops: list[tuple[str, bytes]]
) -> None:
    for op in ops:
        world.apply(op)
        _settle(world, op[0])
    message = world.server.get("/")
    assert (message.status, message.text) == (200, world.last_good)
    assert "Traceback" not in world.server.output
