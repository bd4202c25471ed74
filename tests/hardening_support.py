"""
Helpers for the hardening tests: the service assembled in-process around an
in-memory HTTP client, the catalogue of bad config files, and log capture.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from attrs import frozen
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.logger import (
    ILogObserver,
    LogEvent,
    LogLevel,
    formatEvent,
    globalLogPublisher,
)

from twisted_demo.config import DEFAULT_MAX_BYTES
from twisted_demo.metrics import ReloadMetrics
from twisted_demo.reload import Reloader, inline
from twisted_demo.source import ConfigFile
from twisted_demo.store import ConfigStore
from twisted_demo.watcher import ConfigWatcher, Notifier
from twisted_demo.web import ConfigApp

FAILURES = "configmapdemo_config_reload_failures_total"
LAST_SUCCESSFUL = "configmapdemo_config_last_reload_successful"
RELOADS = "configmapdemo_config_reloads_total"


def good(message: str) -> bytes:
    """
    A valid config serving C{message}.
    """
    return f"message: {message!r}\nother: 1\n".encode()


def _alias_bomb() -> bytes:
    lol = b",".join([b'"lol"'] * 9)
    lines = [b"message: boom", b"a: &a [%s]" % (lol,)]
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        refs = b",".join([b"*" + previous.encode()] * 9)
        lines.append(b"%s: &%s [%s]" % (name.encode(), name.encode(), refs))
    return b"\n".join(lines) + b"\n"


@frozen
class Bad:
    """
    A config file that must be refused, and what the refusal must say.
    """

    content: bytes
    reason: str


#: Every kind of bad content the service must refuse, by a name that says it.
BAD_CONTENT: dict[str, Bad] = {
    "invalid_yaml_syntax": Bad(
        b"message: [unclosed\n", "line 2, column 1: did not find expected ',' or ']'"
    ),
    "empty_file": Bad(b"", "file is empty; expected a mapping"),
    "top_level_list": Bad(b"- a\n- b\n", "top level must be a mapping, got a list"),
    "top_level_string": Bad(b"hello\n", "top level must be a mapping, got a string"),
    "top_level_number": Bad(b"42\n", "top level must be a mapping, got a number"),
    "top_level_null": Bad(b"null\n", "file is empty; expected a mapping"),
    "message_missing": Bad(b"other: 1\n", "'message' is missing"),
    "message_null": Bad(b"message:\n", "'message' must be a string, got null"),
    "message_number": Bad(b"message: 3\n", "'message' must be a string, got a number"),
    "message_list": Bad(b"message: [a]\n", "'message' must be a string, got a list"),
    "message_mapping": Bad(
        b"message: {a: 1}\n", "'message' must be a string, got a mapping"
    ),
    "invalid_utf8": Bad(b"message: caf\xe9\n", "not valid UTF-8 at byte 12"),
    "binary_garbage": Bad(bytes(range(256)) * 4, "not valid UTF-8 at byte 128"),
    "nul_byte": Bad(
        b"message: a\x00b\n",
        "line 1, column 11: unacceptable character #x0000: "
        "control characters are not allowed",
    ),
    "over_size_limit": Bad(
        b"message: " + b"x" * DEFAULT_MAX_BYTES + b"\n",
        f"file is over the limit of {DEFAULT_MAX_BYTES} bytes",
    ),
    "alias_bomb": Bad(
        _alias_bomb(), "aliases expand the document to more than 1000000 nodes"
    ),
    "recursive_alias": Bad(
        b"message: a\nx: &a [1, *a]\n",
        "line 2, column 11: alias *a refers to a node that contains it",
    ),
    "deep_nesting": Bad(
        b"message: a\nx: " + b"[" * 5000 + b"]" * 5000 + b"\n",
        "line 2, column 103: nested deeper than 100 levels",
    ),
    "python_object_apply_tag": Bad(
        b"message: !!python/object/apply:os.system ['touch PWNED']\n",
        "could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.system'",
    ),
    "python_name_tag": Bad(
        b"message: a\nf: !!python/name:os.system\n",
        "could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/name:os.system'",
    ),
    "multi_document_stream": Bad(
        b"---\nmessage: a\n---\nmessage: b\n",
        "line 3, column 1: a second YAML document starts here",
    ),
    "duplicate_keys": Bad(
        b"message: a\nmessage: b\n",
        "line 2, column 1: duplicate key 'message' (first on line 1)",
    ),
    "invalid_timestamp_value": Bad(
        b"message: a\nwhen: 2026-13-01\n",
        "line 2, column 7: invalid timestamp value: month must be in 1..12",
    ),
}


@contextmanager
def captured_log(level: LogLevel = LogLevel.info) -> Iterator[list[str]]:
    """
    Collect the text of every log event at C{level} or above while the
    block runs.
    """
    lines: list[str] = []

    def observe(event: LogEvent) -> None:
        if event.get("log_level", LogLevel.info) >= level:
            lines.append(formatEvent(event))

    observer = cast(ILogObserver, observe)
    globalLogPublisher.addObserver(observer)
    try:
        yield lines
    finally:
        globalLogPublisher.removeObserver(observer)


def result_of(d: Deferred[Any]) -> Any:
    """
    The result a Deferred has already fired with; fail if it has not.
    """
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, f"{d!r} has not fired"
    return results[0]


@frozen
class Reply:
    """
    A finished HTTP response from the in-memory client.
    """

    status: int
    headers: dict[bytes, list[bytes]]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def header(self, name: bytes) -> bytes | None:
        values = self.headers.get(name.lower())
        return None if not values else values[0]


class InProcessService:
    """
    The service's parts wired as C{makeService} wires them, reloading
    C{inline} and answering over an in-memory HTTP connection, so every
    step is synchronous and deterministic.
    """

    def __init__(
        self,
        path: Path,
        clock: IReactorTime | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.clock = Clock() if clock is None else clock
        self.file = ConfigFile(path, max_bytes)
        self.metrics = ReloadMetrics()
        self.store = ConfigStore()
        self.store.subscribe(self.metrics.loaded)
        self.reloader = Reloader(
            self.file,
            self.store,
            clock=self.clock,
            run=inline,
            observers=[self.metrics.observe],
        )
        self.app = ConfigApp(self.store, self.reloader, self.metrics)
        # StubTreq makes its methods at run time, so mypy cannot see them.
        self._client: Any = StubTreq(self.app.resource())

    def watcher(
        self, tick: float, notifier_factory: Callable[[], Notifier] | None
    ) -> ConfigWatcher:
        """
        A watcher that reloads this service.
        """
        return ConfigWatcher(
            self.file,
            self.reloader.reload,
            clock=self.clock,
            tick=tick,
            notifier_factory=notifier_factory,
        )

    def request(
        self,
        method: str,
        path: str,
        data: bytes | None = None,
        headers: dict[bytes, list[bytes]] | None = None,
    ) -> Reply:
        d = self._client.request(
            method, "http://config.example" + path, data=data, headers=headers
        )
        self._client.flush()
        response = result_of(d)
        if isinstance(response, BaseException) or hasattr(response, "raiseException"):
            response.raiseException()
        body = self._client.content(response)
        self._client.flush()
        return Reply(
            response.code,
            {k.lower(): v for k, v in response.headers.getAllRawHeaders()},
            result_of(body),
        )

    def get(self, path: str = "/") -> Reply:
        return self.request("GET", path)

    def post_reload(self) -> Reply:
        return self.request("POST", "/-/reload")

    def metric(self, name: str) -> float:
        text = self.get("/metrics").text
        match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        assert match is not None, f"{name} not in /metrics:\n{text}"
        return float(match.group(1))

    def config(self) -> dict[str, Any]:
        """
        What C{GET /config} says.
        """
        body: dict[str, Any] = json.loads(self.get("/config").body)
        return body
