"""
The HTTP interface, through an in-memory HTTP stack.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.internet.task import Clock

from twisted_demo.metrics import ReloadMetrics
from twisted_demo.reload import Reloader
from twisted_demo.source import ConfigFile
from twisted_demo.store import ConfigStore
from twisted_demo.web import ConfigApp


class Client:
    def __init__(self, path: Path, store: ConfigStore | None = None) -> None:
        self.path = path
        config_file = ConfigFile(path)
        self.store = ConfigStore(config_file.load(0)) if store is None else store
        metrics = ReloadMetrics()
        if self.store.current is not None:
            metrics.loaded(None, self.store.current)
        self.store.subscribe(metrics.loaded)
        reloader = Reloader(
            config_file, self.store, Clock(), observers=[metrics.observe]
        )
        self.treq: Any = StubTreq(ConfigApp(self.store, reloader, metrics).resource())

    async def request(
        self, method: str, path: str, **kwargs: Any
    ) -> tuple[int, dict[bytes, list[bytes]], bytes]:
        response = await self.treq.request(method, "http://example" + path, **kwargs)
        body = await response.content()
        headers = dict(response.headers.getAllRawHeaders())
        return response.code, headers, body


@pytest.fixture
def client(tmp_path: Path) -> Client:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: Hello World\nsecret: hunter2\n")
    return Client(path)


@pytest_twisted.ensureDeferred
async def test_root_serves_the_message_as_plain_text(client: Client) -> None:
    code, headers, body = await client.request("GET", "/")
    assert (code, body) == (200, b"Hello World")
    assert headers[b"Content-Type"] == [b"text/plain; charset=utf-8"]
    assert headers[b"X-Content-Type-Options"] == [b"nosniff"]


@pytest_twisted.ensureDeferred
async def test_non_ascii_message_is_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes("message: Grüße 🌍\n".encode())
    _, _, body = await Client(path).request("GET", "/")
    assert body.decode("utf-8") == "Grüße 🌍"


@pytest_twisted.ensureDeferred
async def test_probes_answer_200_while_a_config_is_loaded(client: Client) -> None:
    assert (await client.request("GET", "/healthz"))[0] == 200
    assert (await client.request("GET", "/readyz"))[0] == 200


@pytest_twisted.ensureDeferred
async def test_not_ready_without_a_config(tmp_path: Path) -> None:
    client = Client(tmp_path / "config.yaml", store=ConfigStore())
    assert (await client.request("GET", "/readyz"))[0] == 503
    assert (await client.request("GET", "/healthz"))[0] == 200
    assert (await client.request("GET", "/"))[0] == 503


@pytest_twisted.ensureDeferred
async def test_config_describes_the_version_but_never_its_values(
    client: Client,
) -> None:
    code, headers, body = await client.request("GET", "/config")
    assert code == 200
    assert headers[b"Content-Type"] == [b"application/json"]
    config = client.store.current
    assert config is not None
    assert json.loads(body) == {
        "sha256": config.sha256,
        "generation": None,
        "loaded_at": "1970-01-01T00:00:00+00:00",
        "source": str(client.path),
        "last_error": None,
    }
    assert b"hunter2" not in body and b"Hello World" not in body


@pytest_twisted.ensureDeferred
async def test_metrics_are_prometheus_text(client: Client) -> None:
    code, headers, body = await client.request("GET", "/metrics")
    assert code == 200
    assert headers[b"Content-Type"][0].startswith(b"text/plain; version=")
    text = body.decode()
    config = client.store.current
    assert config is not None
    for line in [
        "configmapdemo_config_reloads_total 0.0",
        "configmapdemo_config_reload_failures_total 0.0",
        "configmapdemo_config_last_reload_successful 1.0",
        "configmapdemo_config_last_reload_success_timestamp_seconds 0.0",
    ]:
        assert line in text.splitlines()
    assert f'sha256="{config.sha256}"' in text


@pytest_twisted.ensureDeferred
async def test_forced_reload_answers_with_its_outcome(client: Client) -> None:
    code, _, body = await client.request("POST", "/-/reload")
    assert (code, json.loads(body)["outcome"]) == (200, "unchanged")

    client.path.write_bytes(b"message: Reloaded\n")
    code, _, body = await client.request("POST", "/-/reload")
    assert (code, json.loads(body)["outcome"]) == (200, "updated")
    assert (await client.request("GET", "/"))[2] == b"Reloaded"

    client.path.write_bytes(b"nope: 1\n")
    code, _, body = await client.request("POST", "/-/reload")
    answer = json.loads(body)
    assert (code, answer["outcome"]) == (422, "failed")
    assert answer["error"] == f"{client.path}: 'message' is missing"
    assert (await client.request("GET", "/"))[2] == b"Reloaded"
    _, _, body = await client.request("GET", "/config")
    assert json.loads(body)["last_error"] == answer["error"]


@pytest_twisted.ensureDeferred
async def test_unknown_path_is_404_without_traceback(client: Client) -> None:
    code, headers, body = await client.request("GET", "/nope")
    assert code == 404
    assert b"Traceback" not in body
    assert headers[b"X-Content-Type-Options"] == [b"nosniff"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/"), ("DELETE", "/config"), ("PUT", "/metrics"), ("GET", "/-/reload")],
)
@pytest_twisted.ensureDeferred
async def test_wrong_method_is_405(client: Client, method: str, path: str) -> None:
    assert (await client.request(method, path))[0] == 405
