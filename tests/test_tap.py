"""
The C{twistd configmapdemo} command line, the plugin, and the wiring.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IServiceMaker, MultiService
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError

from twisted_demo.config import DEFAULT_MAX_BYTES
from twisted_demo.live import LiveConfigService
from twisted_demo.options import DEFAULT_LISTEN, Options
from twisted_demo.tap import makeService


def _parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def test_defaults() -> None:
    options = _parse("--config", "c.yaml")
    assert options["config"] == "c.yaml"
    assert options["listen"] == DEFAULT_LISTEN == "tcp:8080"
    assert options["tick"] == 0.1
    assert options["max-bytes"] == DEFAULT_MAX_BYTES == 1024 * 1024
    assert not options["access-log"]


def test_all_options_are_parsed() -> None:
    options = _parse(
        "-c", "c.yaml", "-l", "unix:/tmp/s", "-t", "0.5", "--max-bytes", "10",
        "--access-log",
    )  # fmt: skip
    assert (options["listen"], options["tick"], options["max-bytes"]) == (
        "unix:/tmp/s",
        0.5,
        10,
    )
    assert options["access-log"]


def test_missing_config_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--config PATH is required"):
        _parse()


@pytest.mark.parametrize("tick", ["0", "-1", "abc", "nan", "inf", ""])
def test_tick_must_be_a_positive_number(tick: str) -> None:
    with pytest.raises(UsageError, match="expected a number of seconds"):
        _parse("--config", "c.yaml", "--tick", tick)


@pytest.mark.parametrize("size", ["0", "-5", "1.5", "lots"])
def test_max_bytes_must_be_a_positive_whole_number(size: str) -> None:
    with pytest.raises(UsageError, match="expected a"):
        _parse("--config", "c.yaml", "--max-bytes", size)


def test_unknown_option_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no-such-option"):
        _parse("--config", "c.yaml", "--no-such-option")


def test_help_documents_every_option() -> None:
    text = str(Options())
    for option in ["--config", "--listen", "--tick", "--max-bytes", "--access-log"]:
        assert option in text


def test_twistd_finds_the_plugin() -> None:
    makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
    assert "configmapdemo" in makers
    assert makers["configmapdemo"].options is Options


def test_service_holds_the_web_server_and_the_live_config(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes(b"message: hi\n")
    service = makeService(_parse("--config", str(config), "--listen", "tcp:0"))
    assert isinstance(service, MultiService)
    kinds = [type(child) for child in service]
    assert any(issubclass(kind, StreamServerEndpointService) for kind in kinds)
    assert LiveConfigService in kinds


def test_invalid_listen_endpoint_exits_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes(b"message: hi\n")
    with pytest.raises(SystemExit) as e:
        makeService(_parse("--config", str(config), "--listen", "carrier-pigeon:1"))
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("configmapdemo: error: --listen 'carrier-pigeon:1' is not")
    assert err.count("\n") == 1


def test_invalid_config_exits_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes(b"- not a mapping\n")
    with pytest.raises(SystemExit) as e:
        makeService(_parse("--config", str(config)))
    assert e.value.code == 1
    assert capsys.readouterr().err == (
        f"configmapdemo: error: {config}: top level must be a mapping, got a list\n"
    )
