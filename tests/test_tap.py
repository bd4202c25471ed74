"""
The C{twistd configmapdemo} command line, the plugin, and the wiring.
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IServiceMaker, MultiService
from twisted.plugin import getPlugins

from tests.certs import CA
from twisted_demo.live import DEFAULT_MAX_BYTES, LiveConfigService
from twisted_demo.options import DEFAULT_LISTEN, Options
from twisted_demo.tap import makeService
from twisted_demo.tls import CERT_FILE, KEY_FILE


def _parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def test_defaults() -> None:
    options = _parse("--config", "c.yaml")
    assert options["config"] == "c.yaml"
    assert options["listen"] == [DEFAULT_LISTEN] == ["tcp:8080"]
    assert options["tick"] == 0.1
    assert options["max-bytes"] == DEFAULT_MAX_BYTES == 1024 * 1024
    assert not options["access-log"]


def test_all_options_are_parsed() -> None:
    options = _parse(
        "-c", "c.yaml", "-l", "unix:/tmp/s", "-t", "0.5", "--max-bytes", "10",
        "--access-log",
    )  # fmt: skip
    assert (options["listen"], options["tick"], options["max-bytes"]) == (
        ["unix:/tmp/s"],
        0.5,
        10,
    )
    assert options["access-log"]


def _refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """
    The one line naming the problem with the command line C{args}, after
    checking that parsing exits with status 1 and a pointer to C{--help}.
    """
    with pytest.raises(SystemExit) as e:
        _parse(*args)
    assert e.value.code == 1
    error, hint = capsys.readouterr().err.splitlines()
    assert hint == "Try 'twistd configmapdemo --help'"
    return error


def test_missing_config_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _refused(capsys) == (
        "configmapdemo: error: --config PATH is required: the YAML file to serve"
    )


@pytest.mark.parametrize("tick", ["0", "-1", "abc", "nan", "inf", ""])
def test_tick_must_be_a_positive_number(
    tick: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _refused(capsys, "--config", "c.yaml", "--tick", tick) == (
        f"configmapdemo: error: --tick must be a number of seconds above 0, "
        f"got {tick!r}"
    )


@pytest.mark.parametrize("size", ["0", "-5", "1.5", "lots"])
def test_max_bytes_must_be_a_positive_whole_number(
    size: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _refused(capsys, "--config", "c.yaml", "--max-bytes", size) == (
        f"configmapdemo: error: --max-bytes must be a whole number of bytes "
        f"above 0, got {size!r}"
    )


def test_unknown_option_is_refused_naming_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    error = _refused(capsys, "--config", "c.yaml", "--no-such-option")
    assert error.startswith("configmapdemo: error: ")
    assert "--no-such-option" in error


def test_log_format_is_text_or_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert _parse("--config", "c.yaml")["log-format"] == "text"
    assert _parse("--config", "c.yaml", "--log-format", "json")["log-format"] == "json"
    assert _refused(capsys, "--config", "c.yaml", "--log-format", "xml") == (
        "configmapdemo: error: --log-format must be text or json, got 'xml'"
    )


def test_help_documents_every_option() -> None:
    text = str(Options())
    for option in [
        *["--config", "--listen", "--tick", "--max-bytes", "--access-log"],
        "--log-format",
    ]:
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
    [configs] = [child for child in service if isinstance(child, MultiService)]
    assert [type(child) for child in configs] == [LiveConfigService]


def test_config_and_certificate_pair_stop_together(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes(b"message: hi\n")
    for name, contents in CA.make().issue("localhost").files().items():
        (tmp_path / name).write_bytes(contents)
    cert, key = (str(tmp_path / name) for name in (CERT_FILE, KEY_FILE))
    service = makeService(
        _parse(
            *("--config", str(config), "--listen", "tcp:0"),
            *("--tls-cert", cert, "--tls-key", key),
        )
    )
    # One parent stops both at once: their parser processes' stop
    # timeouts overlap rather than add up.
    [configs] = [child for child in service if isinstance(child, MultiService)]
    assert [type(child) for child in configs] == [LiveConfigService] * 2


def test_invalid_listen_endpoint_exits_with_a_line_and_a_pointer_to_help(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes(b"message: hi\n")
    with pytest.raises(SystemExit) as e:
        makeService(_parse("--config", str(config), "--listen", "carrier-pigeon:1"))
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("configmapdemo: error: --listen 'carrier-pigeon:1' is not")
    assert err.splitlines()[1:] == ["Try 'twistd configmapdemo --help'"]


def test_what_start_up_loaded_is_frozen_out_of_the_collector_s_reach(
    tmp_path: Path,
) -> None:
    # CHANGELOG: a full collection used to come while the service was built.
    config = tmp_path / "config.yaml"
    config.write_bytes(b"message: hi\n")
    gc.unfreeze()
    makeService(_parse("--config", str(config)))
    assert gc.get_freeze_count() > 0


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


def test_ssl_listen_with_tls_cert_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """
    Issue 17, item 6: TLS twice failed every handshake.
    """
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    with pytest.raises(SystemExit) as exited:
        _parse(
            "--config", "c.yaml", "--listen", "ssl:8443:privateKey=k.pem",
            "--tls-cert", str(cert), "--tls-key", str(key),
        )  # fmt: skip
    assert exited.value.code == 1
    error = capsys.readouterr().err.splitlines()[0]
    assert error.startswith(
        "configmapdemo: error: --listen 'ssl:8443:privateKey=k.pem'"
    )
    assert "--tls-cert" in error
