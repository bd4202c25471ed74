"""
The HTTP interface, through an in-memory HTTP stack.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock

from tests.certs import CA
from tests.support import InProcessService, result_of
from twisted_demo.config import parse_message
from twisted_demo.live import LiveConfigService, inline
from twisted_demo.tap import demo_resource
from twisted_demo.tls import CERT_FILE, KEY_FILE, tls_files


@pytest.fixture
def service(tmp_path: Path) -> InProcessService:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: Hello World\nsecret: hunter2\n")
    running = InProcessService(path)
    result_of(running.live.reload())
    return running


def test_root_serves_the_message_as_plain_text(service: InProcessService) -> None:
    reply = service.get("/")
    assert (reply.status, reply.body) == (200, b"Hello World")
    assert reply.header(b"content-type") == b"text/plain; charset=utf-8"


def test_non_ascii_message_is_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes("message: Grüße 🌍\n".encode())
    service = InProcessService(path)
    result_of(service.live.reload())
    assert service.get("/").body.decode("utf-8") == "Grüße 🌍"


def test_probes_answer_200_while_a_config_is_loaded(
    service: InProcessService,
) -> None:
    assert service.get("/healthz").status == 200
    assert service.get("/readyz").status == 200


def test_not_ready_without_a_config(tmp_path: Path) -> None:
    service = InProcessService(tmp_path / "config.yaml")
    assert service.get("/readyz").status == 503
    assert service.get("/healthz").status == 200
    assert service.get("/").status == 503


def test_config_describes_the_version_but_never_its_values(
    service: InProcessService,
) -> None:
    reply = service.get("/config")
    assert reply.status == 200
    assert reply.header(b"content-type") == b"application/json"
    config = service.live.current
    assert config is not None
    assert json.loads(reply.body) == {
        "sha256": config.sha256,
        "generation": None,
        "loaded_at": "1970-01-01T00:00:00+00:00",
        "source": str(service.path),
        "last_error": None,
        "never_updated": None,
        "last_error_detail": None,
    }
    assert b"hunter2" not in reply.body and b"Hello World" not in reply.body


def test_metrics_are_prometheus_text(service: InProcessService) -> None:
    reply = service.get("/metrics")
    assert reply.status == 200
    assert (reply.header(b"content-type") or b"").startswith(b"text/plain; version=")
    config = service.live.current
    assert config is not None
    for line in [
        "configmapdemo_config_reloads_total 0.0",
        "configmapdemo_config_reload_failures_total 0.0",
        "configmapdemo_config_last_reload_successful 1.0",
        "configmapdemo_config_last_reload_success_timestamp_seconds 0.0",
    ]:
        assert line in reply.text.splitlines()
    assert f'sha256="{config.sha256}"' in reply.text


def test_forced_reload_answers_with_its_outcome(service: InProcessService) -> None:
    reply = service.post_reload()
    assert (reply.status, json.loads(reply.body)["outcome"]) == (200, "unchanged")

    service.path.write_bytes(b"message: Reloaded\n")
    reply = service.post_reload()
    assert (reply.status, json.loads(reply.body)["outcome"]) == (200, "updated")
    assert service.get("/").body == b"Reloaded"

    service.path.write_bytes(b"nope: 1\n")
    reply = service.post_reload()
    answer = json.loads(reply.body)
    assert (reply.status, answer["outcome"]) == (422, "failed")
    assert answer["error"] == f"{service.path}: 'message' is missing"
    assert service.get("/").body == b"Reloaded"
    assert service.config()["last_error"] == answer["error"]


def test_refusal_is_shown_in_fields_and_never_with_the_value(
    service: InProcessService,
) -> None:
    service.path.write_bytes(b"message: Hello\npassword: !!int hunter2\n")

    reply = service.post_reload()
    config = service.get("/config")

    fields = {
        "problem": "not a valid integer",
        "file": str(service.path),
        "key": None,
        "line": 2,
        "column": 11,
    }
    sentence = f"{service.path} line 2, column 11: not a valid integer"
    answer = json.loads(reply.body)
    assert (reply.status, answer["error"], answer["error_detail"]) == (
        422,
        sentence,
        fields,
    )
    body = json.loads(config.body)
    assert (body["last_error"], body["last_error_detail"]) == (sentence, fields)
    assert b"hunter2" not in reply.body + config.body


def test_unknown_path_is_404_without_traceback(service: InProcessService) -> None:
    reply = service.get("/nope")
    assert reply.status == 404
    assert b"Traceback" not in reply.body


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/"), ("DELETE", "/config"), ("PUT", "/metrics"), ("GET", "/-/reload")],
)
def test_wrong_method_is_405(service: InProcessService, method: str, path: str) -> None:
    assert service.request(method, path).status == 405


def test_forced_reload_rereads_the_certificate_pair_too(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes(b"message: hi\n")
    secret = tmp_path / "tls"
    secret.mkdir()
    ca = CA.make()
    first, second = ca.issue("localhost"), ca.issue("localhost")
    for name, contents in first.files().items():
        (secret / name).write_bytes(contents)
    clock = Clock()
    live = LiveConfigService(config, parse_message, reactor=clock, runner=inline)
    files = tls_files(str(secret / CERT_FILE), str(secret / KEY_FILE))
    assert files is not None
    pair = LiveConfigService(
        files.directory, files.parse, files=files.names, reactor=clock, runner=inline
    )
    result_of(live.reload())
    result_of(pair.reload())
    client: Any = StubTreq(demo_resource(live, pair))
    for name, contents in second.files().items():
        (secret / name).write_bytes(contents)

    reply = result_of(client.post("http://config.example/-/reload"))
    assert reply.code == 200
    # The new certificate is served from now on, as after SIGHUP.
    assert pair.current is not None
    assert pair.current.value.sha256 == second.sha256
