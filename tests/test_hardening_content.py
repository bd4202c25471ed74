"""
Bad config content: refused loudly, never served, never fatal once a good
config is live, and fatal with one clear line at start-up.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.logger import LogLevel

from bench.parsecost import HOSTILE
from tests.bad_configs import BAD_CONTENT, Bad, by_yaml, good
from tests.support import (
    FAILURES,
    LAST_SUCCESSFUL,
    RELOADS,
    InProcessService,
    TwistdServer,
    captured_log,
    result_of,
)
from twisted_demo.config import parse_message
from twisted_demo.live import ConfigError, Updated, parse_yaml
from twisted_demo.tap import Options, makeService
from twisted_demo.testing import write_by_rename, write_in_place


@pytest.fixture
def live(tmp_path: Path) -> InProcessService:
    """
    The service serving C{Hello World} from a plain file.
    """
    path = tmp_path / "config.yaml"
    path.write_bytes(good("Hello World"))
    service = InProcessService(path)
    assert isinstance(result_of(service.live.reload()), Updated)
    return service


@pytest.mark.parametrize("case", sorted(BAD_CONTENT))
def test_bad_update_is_refused_and_last_good_config_keeps_serving(
    live: InProcessService, case: str
) -> None:
    bad = BAD_CONTENT[case]
    path = str(live.path)
    failures = live.metric(FAILURES)
    sha256 = live.config()["sha256"]

    with captured_log() as log:
        write_by_rename(live.path, bad.content)
        refused = live.post_reload()
        # The same file again is the same failure: not counted, not logged.
        again = live.post_reload()

    assert (refused.status, again.status) == (422, 422)
    message = live.get("/")
    assert (message.status, message.text) == (200, "Hello World")
    assert live.get("/readyz").status == 200
    config = live.config()
    assert config["sha256"] == sha256
    assert config["last_error"].startswith(path)
    assert bad.matches(config["last_error"])
    assert "\n" not in config["last_error"]
    assert live.metric(FAILURES) == failures + 1
    assert live.metric(LAST_SUCCESSFUL) == 0
    assert len(log.messages(at_least=LogLevel.warn)) == 1
    assert config["last_error"] in log.messages(at_least=LogLevel.warn)[0]

    write_in_place(live.path, good("Hello again"))
    assert live.post_reload().status == 200
    assert live.get("/").text == "Hello again"
    assert live.config()["last_error"] is None
    assert live.config()["last_error_detail"] is None
    assert live.metric(LAST_SUCCESSFUL) == 1
    assert live.metric(RELOADS) == 1
    assert live.metric(FAILURES) == failures + 1


def test_each_distinct_failure_is_logged_once(live: InProcessService) -> None:
    first, second = BAD_CONTENT["duplicate_keys"], BAD_CONTENT["alias_bomb"]
    with captured_log() as log:
        for content in (first.content, first.content, second.content):
            write_by_rename(live.path, content)
            live.post_reload()
            live.post_reload()
    assert len(log.messages(at_least=LogLevel.warn)) == 2
    assert first.matches(log.messages(at_least=LogLevel.warn)[0])
    assert second.matches(log.messages(at_least=LogLevel.warn)[1])
    assert live.metric(FAILURES) == 2


@pytest.mark.parametrize(
    "tag",
    [
        "!!python/object/apply:os.system ['touch {pwned}']",
        "!!python/object/apply:builtins.open ['{pwned}', 'w']",
        "!!python/object/new:builtins.open ['{pwned}', 'w']",
        "!!python/object:pathlib.Path {{}}",
        "!!python/name:os.system",
        "!!python/module:os",
    ],
)
def test_python_tags_never_construct_anything(tmp_path: Path, tag: str) -> None:
    pwned = tmp_path / "pwned"
    raw = f"message: {tag.format(pwned=pwned)}\n".encode()
    with pytest.raises(ConfigError, match=r"^line 1, column 10: "):
        parse_message(raw)
    assert not pwned.exists()


def test_duplicate_keys_are_refused_even_when_nested(tmp_path: Path) -> None:
    raw = b"message: hi\nlimits:\n  cpu: 1\n  cpu: 2\n"
    with pytest.raises(ConfigError) as e:
        parse_message(raw)
    assert str(e.value) == "line 4, column 3: duplicate key (first on line 3)"


def test_merge_keys_may_override_what_they_merge(tmp_path: Path) -> None:
    raw = b"base: &base {a: 1, b: 2}\nchild:\n  <<: *base\n  b: 3\nmessage: hi\n"
    assert parse_yaml(raw)["child"] == {"a": 1, "b": 3}


# Parses one hostile document in a fresh interpreter, so that a crash in C
# (libyaml's composer segfaults on deep nesting) fails the test instead of
# killing pytest.  What each one costs is measured by B9 (bench/parsecost.py).
_REFUSE = """
import sys
from twisted_demo.config import parse_message
from twisted_demo.live import ConfigError
try:
    parse_message(sys.stdin.buffer.read())
except ConfigError as e:
    print(e)
else:
    print("accepted")
"""

#: Where each hostile shape must be refused: the location, whichever layer
#: refuses it (the service stops at 101 levels; libyaml 0.2.5 as bundled
#: with PyYAML 6.0.4 at 1,000, reading ahead of the service).
_REFUSED_AT = {
    "alias_bomb": BAD_CONTENT["alias_bomb"].reason,
    "deep_flow_lists": by_yaml(2),
    "deep_flow_mappings": by_yaml(2),
    "deep_block_mappings": by_yaml(),
}


@pytest.mark.parametrize("shape", sorted(_REFUSED_AT))
def test_hostile_document_is_refused_with_its_location(shape: str) -> None:
    raw = HOSTILE[shape]
    assert len(raw) <= 1024 * 1024
    done = subprocess.run(
        [sys.executable, "-c", _REFUSE],
        input=raw,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    bad = Bad(raw, _REFUSED_AT[shape], located=shape != "alias_bomb")
    assert bad.matches(done.stdout.decode())


@pytest.mark.parametrize("case", sorted(BAD_CONTENT))
def test_bad_config_at_start_up_is_refused_with_one_line(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = BAD_CONTENT[case]
    path = tmp_path / "config.yaml"
    path.write_bytes(bad.content)
    options = Options()
    options.parseOptions(["--config", str(path)])
    with pytest.raises(SystemExit) as exited:
        makeService(options)
    assert exited.value.code == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"configmapdemo: error: {path}")
    assert bad.matches(lines[0])


#: Cases run through a real C{twistd}, all at once to keep the cost down.
_START_UP = [
    "alias_bomb",
    "deep_nesting",
    "duplicate_keys",
    "invalid_timestamp_value",
    "nul_byte",
    "python_object_apply_tag",
    # Crashed with a traceback before the one line, and echoed the value.
    "tagged_bool_that_is_not",
    "tagged_int_that_is_not",
]


@pytest.fixture(scope="module")
def refused_start_ups(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, tuple[Path, int, str]]]:
    """
    Start C{twistd configmapdemo} on each bad file in L{_START_UP} (and on
    a file over a C{--max-bytes} of 64) concurrently, and report each one's
    path, exit status and output.
    """
    directory = tmp_path_factory.mktemp("start-up")
    servers: dict[str, TwistdServer] = {}
    try:
        for case in _START_UP:
            path = directory / f"{case}.yaml"
            path.write_bytes(BAD_CONTENT[case].content)
            servers[case] = TwistdServer(path)
        small = directory / "max_bytes.yaml"
        small.write_bytes(good("x" * 100))
        servers["max_bytes_option"] = TwistdServer(small, ["--max-bytes", "64"])
        yield {
            case: (server.config, server.process.wait(30), server.output)
            for case, server in servers.items()
        }
    finally:
        for server in servers.values():
            server.close()


def test_a_config_too_big_for_the_parser_is_refused_at_start_up(
    tmp_path: Path,
) -> None:
    # Under --max-bytes, but PyYAML needs about 150 MiB to build it: past
    # the parser process's 72 MiB, as on every reload.
    path = tmp_path / "config.yaml"
    path.write_bytes(b"message: hi\nk: [" + b"0," * 520_000 + b"0]\n")
    server = TwistdServer(path)
    try:
        # Before, the server parsed it itself, 231 MiB large, and served it.
        status = server.process.wait(30)
        output = server.output
    finally:
        server.close()
    assert status == 1
    assert output.splitlines() == [
        f"configmapdemo: error: {path}: parsing it needed more than 72 MiB of "
        "memory, the parser process's limit"
    ]


@pytest.mark.parametrize("case", [*_START_UP, "max_bytes_option"])
def test_twistd_refuses_to_start_on_bad_config_with_one_line_and_no_traceback(
    refused_start_ups: dict[str, tuple[Path, int, str]], case: str
) -> None:
    path, status, output = refused_start_ups[case]
    bad = (
        Bad(b"", "file is over the limit of 64 bytes")
        if case == "max_bytes_option"
        else BAD_CONTENT[case]
    )
    assert status == 1
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith(f"configmapdemo: error: {path}")
    assert bad.matches(lines[0])
    assert "Traceback" not in output
