"""
Turning the bytes of a config file into the demo's message, or into an
error a person can read: L{parse_yaml} for any schema, L{parse_message} for
the demo's.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from twisted_demo.config import parse_message
from twisted_demo.live import ConfigError, parse_yaml


def test_good_document_gives_the_message() -> None:
    assert parse_message(b"message: Hello World\nreplicas: 2\n") == "Hello World"


def test_yaml_document_is_the_whole_mapping() -> None:
    document = parse_yaml(b"message: Hello World\nreplicas: 2\nnested: {a: [1]}\n")
    assert document == {"message": "Hello World", "replicas": 2, "nested": {"a": [1]}}


def test_syntax_error_says_line_and_column() -> None:
    with pytest.raises(ConfigError) as e:
        parse_yaml(b"message: ok\nother: [1, 2\n")
    assert str(e.value) == "line 3, column 1: did not find expected ',' or ']'"


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", "file is empty; expected a mapping"),
        (b"# off\n\n", "file is empty; expected a mapping"),
        (b"null\n", "top level must be a mapping, got null"),
        (b"---\n", "top level must be a mapping, got null"),
        (b"- a\n- b\n", "top level must be a mapping, got a list"),
        (b"just text\n", "top level must be a mapping, got a string"),
        (b"42\n", "top level must be a mapping, got a number"),
        (b"other: 1\n", "'message' is missing"),
        (b"message: 7\n", "'message' must be a string, got a number"),
        (b"message: true\n", "'message' must be a string, got a boolean"),
        (b"message:\n", "'message' must be a string, got null"),
        (b"message: [a]\n", "'message' must be a string, got a list"),
        (b"message: {a: 1}\n", "'message' must be a string, got a mapping"),
        (b"message: 2026-01-01\n", "'message' must be a string, got a date"),
        (b"message: \xff\n", "line 1, column 10: not valid UTF-8 at byte 9"),
    ],
)
def test_invalid_document_is_a_config_error_naming_the_reason(
    raw: bytes, error: str
) -> None:
    with pytest.raises(ConfigError) as e:
        parse_message(raw)
    assert str(e.value) == error
    # A refusal about the message says so in its key field.
    assert (e.value.key == "message") == error.startswith("'message'")


def test_python_tags_are_refused_not_constructed() -> None:
    with pytest.raises(ConfigError) as e:
        parse_yaml(b"message: !!python/object/apply:os.system ['true']\n")
    assert str(e.value).startswith("line 1, column 10: ")


def test_parse_module_imports_neither_twisted_nor_the_service() -> None:
    # The parser process imports the module of the parse function; that
    # must not bring Twisted, Klein or the metrics along.
    code = (
        "import sys, twisted_demo.config\n"
        "twisted_demo.config.parse_message(b'message: hi')\n"
        "print(sorted(m for m in sys.modules if m.partition('.')[0] in "
        "('twisted', 'klein', 'prometheus_client', 'twisted_demo')))\n"
    )
    imported = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert imported.split() == [
        "['twisted_demo',",
        "'twisted_demo.config',",
        "'twisted_demo.live',",
        "'twisted_demo.live._errors',",
        "'twisted_demo.live._yaml']",
    ]
